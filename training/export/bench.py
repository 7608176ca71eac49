"""In-process ONNX Runtime throughput of a published version: seq/s per precision and batch size.

What is timed is what serving runs: the version's own graph, or for a frozen version the shared base encoder
(`_bases/<key>/<folder>/encoder.onnx`) and its numpy head, as serving.engine's shared-base pass does.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_repository import BaseEncoderRef, Manifest, ModelRepository, NumpyHead, layout

from ..errors import DataError, ExportError
from .parity import ort_session, session_input_names
from .precisions import RECIPES

BATCH_SIZES = (1, 8, 32)

# (graph, intra-op threads) -> an ONNX Runtime InferenceSession on the CPU provider. training never imports
# serving (pyproject's import contracts): the CLI passes serving's builder, so that the sessions timed are
# built as a replica builds them (its session options, and on CPU the graph it loads).
SessionFactory = Callable[[Path, int], Any]


@dataclass(frozen=True)
class _Timed:
    """One precision's graph as serving runs it, the head applied to its output (frozen), and its name."""

    precision: str
    graph: Path
    head: NumpyHead | None
    what: str


def _texts(path: Path, rows: int) -> list[str]:
    """The first `rows` non-empty texts of a CSV's text column; a file that cannot be read is a DataError
    (exit 2) naming it, not a traceback."""
    if Path(path).suffix.lower() != ".csv":  # a JSON lines file read as CSV named '[1]' as its column
        raise DataError(f"--data {path}: export-bench reads a CSV (.csv) with a 'text' column")
    try:
        # utf-8-sig: a byte order mark (Excel's "CSV UTF-8") is not part of the first column's name, as
        # training's loader and file scoring read it
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None:  # said "(columns: None)"
                raise DataError(f"--data {path} is empty: expected a CSV whose header names a 'text' column")
            if "text" not in reader.fieldnames:  # bad input (exit 2), as a file not UTF-8 is
                raise DataError(f"--data {path}: missing column 'text' (columns: {reader.fieldnames})")
            texts = [r["text"] for r in reader if r["text"]]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"--data {path} could not be read as a UTF-8 CSV: {exc}") from exc
    if not texts:  # timed nothing: a table of 0.0 seq/s, exit 0
        raise DataError(f"--data {path} has no non-empty text in its 'text' column: nothing to measure")
    return texts[:rows]


def _encode(
    tokenizer_json: Path, texts: list[str], batch: int, max_length: int
) -> list[dict[str, np.ndarray]]:
    """What serving does: tokenizers' fast tokenizer, truncation, padding to the longest row per batch."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.enable_truncation(max_length)
    pad_id = (
        tok.token_to_id("<pad>") if tok.token_to_id("<pad>") is not None else tok.token_to_id("[PAD]") or 0
    )
    tok.enable_padding(pad_id=pad_id)
    out = []
    for start in range(0, len(texts), batch):
        enc = tok.encode_batch(texts[start : start + batch])
        out.append(
            {
                "input_ids": np.asarray([e.ids for e in enc], dtype=np.int64),
                "attention_mask": np.asarray([e.attention_mask for e in enc], dtype=np.int64),
                "token_type_ids": np.asarray([e.type_ids for e in enc], dtype=np.int64),
            }
        )
    return out


def run_bench(
    repository: ModelRepository,
    scenario: str,
    version: str | int,
    data: Path,
    threads: int = 2,
    rows: int = 512,
    open_session: SessionFactory | None = None,
) -> dict[str, dict[int, float]]:
    """Print and return {precision: {batch: seq/s}}; tokenisation is done before timing.

    open_session builds each graph's session; default parity.ort_session (export's own session options,
    not serving's: `labelwise export-bench` passes serving's)."""
    from rich.console import Console
    from rich.table import Table

    texts = _texts(data, rows)  # a file that cannot be read is refused before the version is verified
    number = repository.resolve(scenario, version)
    _refuse_missing_bases(repository, repository.load_manifest(scenario, number))
    manifest = repository.verify(scenario, number)
    folder = repository.version_path(scenario, number)
    timed = _served_graphs(repository, manifest, folder)
    # a GPU graph (fp16) is not measured on the CPU provider
    cpu = [t for t in timed if not RECIPES[t.precision].gpu_graph]
    if not cpu:  # it printed an empty table, exit 0
        held = ", ".join(t.precision for t in timed) or "none"
        raise ExportError(
            f"{scenario} v{number} has no CPU ONNX graph to measure (its exports: {held}); run "
            f"`labelwise export --scenario {scenario} --version {number} -p fp32,int8`, and measure the "
            "version it publishes"
        )
    results: dict[str, dict[int, float]] = {}
    for target in cpu:
        session = (open_session or _export_session)(target.graph, threads)
        names = session_input_names(session)
        head = target.head or (lambda out: out)
        results[target.precision] = {}
        for batch in BATCH_SIZES:
            batches = _encode(folder / layout.TOKENIZER_FILE, texts, batch, manifest.max_length_tokens)
            for b in batches[:3]:  # warm-up: first runs allocate and pick kernels
                head(session.run(None, {n: b[n] for n in names})[0])
            start = time.perf_counter()
            for b in batches:
                head(session.run(None, {n: b[n] for n in names})[0])
            results[target.precision][batch] = len(texts) / (time.perf_counter() - start)
    table = Table("precision", *(f"batch {b} (seq/s)" for b in BATCH_SIZES), title=f"{scenario} v{number}")
    for precision, by_batch in results.items():
        table.add_row(precision, *(f"{by_batch[b]:.1f}" for b in BATCH_SIZES))
    Console().print(table)
    pool = f"{threads} intra-op threads" if threads else "ONNX Runtime's default intra-op threads (0)"
    Console().print(f"{len(texts)} sentences from {data}, {pool}, dynamic padding")
    for target in cpu:  # soft_wrap: a path cut across lines cannot be copied
        Console().print(f"{target.precision}: timed {target.what}", soft_wrap=True, markup=False)
    return results


def _export_session(graph: Path, threads: int) -> Any:
    return ort_session(graph, threads=threads)


def _frozen_base(manifest: Manifest) -> BaseEncoderRef | None:
    """The shared base encoder serving runs this version's head on (serving.engine.loader's rule): a frozen
    version's with a head; None for a version serving runs its own graph for."""
    if manifest.strategy == "frozen" and manifest.head is not None:
        return manifest.base_encoder
    return None


def _served_graphs(repository: ModelRepository, manifest: Manifest, folder: Path) -> list[_Timed]:
    """Per precision, what serving runs for this version: its shared base encoder and its head, or its own
    graph."""
    base, spec = _frozen_base(manifest), manifest.head
    if base is not None and spec is not None:
        with np.load(folder / spec.path) as npz:
            head = NumpyHead(spec.kind, dict(npz))
        out = []
        for precision in base.precisions:
            graph = f"{layout.BASES_DIR}/{base.key}/{base.folder(precision)}/{layout.ENCODER_FILE}"
            out.append(
                _Timed(
                    precision,
                    repository.base_path(base.key, base.folder(precision)) / layout.ENCODER_FILE,
                    head,
                    f"shared base encoder + head ({graph} + {spec.path}), as serving runs a frozen version",
                )
            )
        return out
    return [
        _Timed(r.precision, folder / r.path, None, f"the version's own graph ({r.path})")
        for r in manifest.exports
    ]


def _refuse_missing_bases(repository: ModelRepository, manifest: Manifest) -> None:
    """A frozen version whose shared base encoder is not published is refused naming it: serving cannot load
    the version, so there is nothing it runs to time (its own graph is not what serving would pay)."""
    base = _frozen_base(manifest)
    missing = [f for f in base.graph_folders() if not repository.has_base(base.key, f)] if base else []
    if base is not None and missing:
        where = ", ".join(f"{layout.BASES_DIR}/{base.key}/{f}" for f in missing)
        raise ExportError(
            f"{manifest.scenario} v{manifest.version} is frozen: serving runs its head on the shared base "
            f"encoder, and no shared base is published in {repository.root} at {where}; there is nothing "
            f"serving would run to time. `labelwise export --scenario {manifest.scenario} --version "
            f"{manifest.version}` exports the base again (in a new version)"
        )
