"""In-process ONNX Runtime throughput of a published version: seq/s per precision and batch size."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

from model_repository import ModelRepository, layout

from ..errors import DataError, ExportError
from .parity import ort_session, session_input_names
from .precisions import RECIPES

BATCH_SIZES = (1, 8, 32)


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
) -> dict[str, dict[int, float]]:
    """Print and return {precision: {batch: seq/s}}; tokenisation is done before timing."""
    from rich.console import Console
    from rich.table import Table

    texts = _texts(data, rows)  # a file that cannot be read is refused before the version is verified
    number = repository.resolve(scenario, version)
    manifest = repository.verify(scenario, number)
    folder = repository.version_path(scenario, number)
    # a GPU graph (fp16) is not measured on the CPU provider
    records = [r for r in manifest.exports if not RECIPES[r.precision].gpu_graph]
    if not records:  # it printed an empty table, exit 0
        held = ", ".join(r.precision for r in manifest.exports) or "none"
        raise ExportError(
            f"{scenario} v{number} has no CPU ONNX graph to measure (its exports: {held}); run "
            f"`labelwise export --scenario {scenario} --version {number} -p fp32,int8`, and measure the "
            "version it publishes"
        )
    results: dict[str, dict[int, float]] = {}
    for record in records:
        session = ort_session(folder / record.path, threads=threads)
        names = session_input_names(session)
        results[record.precision] = {}
        for batch in BATCH_SIZES:
            batches = _encode(folder / layout.TOKENIZER_FILE, texts, batch, manifest.max_length_tokens)
            for b in batches[:3]:  # warm-up: first runs allocate and pick kernels
                session.run(None, {n: b[n] for n in names})
            start = time.perf_counter()
            for b in batches:
                session.run(None, {n: b[n] for n in names})
            results[record.precision][batch] = len(texts) / (time.perf_counter() - start)
    table = Table("precision", *(f"batch {b} (seq/s)" for b in BATCH_SIZES), title=f"{scenario} v{number}")
    for precision, by_batch in results.items():
        table.add_row(precision, *(f"{by_batch[b]:.1f}" for b in BATCH_SIZES))
    Console().print(table)
    pool = f"{threads} intra-op threads" if threads else "ONNX Runtime's default intra-op threads (0)"
    Console().print(f"{len(texts)} sentences from {data}, {pool}, dynamic padding")
    return results
