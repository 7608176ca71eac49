"""Export the multi-adapter base graph once per base + rank + precision into the model repository."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_repository import BaseModelRef, ModelRepository, RepositoryError
from model_repository.multi_adapter import ADAPTER_INDEX_INPUT, GraphSpec

from ..errors import MultiAdapterError
from .graph import build_module, dummy_tokens, export_onnx, random_tables, run_torch

GRAPH_FILE = "multi_adapter.onnx"
FP32_MAX_ABS_DIFF = 1e-3
PRECISIONS = ("fp32", "int8")
_LOG = logging.getLogger(__name__)


def graph_folder_name(rank: int, precision: str) -> str:
    """The precision folder under _bases/<key>/: `multi-lora-r8-fp32` (beside the plain `fp32` encoder)."""
    return f"multi-lora-r{int(rank)}-{precision}"


def resolve_base(base_model: str | Path) -> tuple[BaseModelRef, Path, str]:
    """(manifest ref, local folder, base key) exactly as training and export name this base."""
    from training.export.base_encoder import base_key
    from training.model import resolve_base_model

    resolved = resolve_base_model(str(base_model))
    ref = BaseModelRef(
        id=resolved.id,
        revision=resolved.revision,
        content_hash=resolved.content_hash,
        architecture=resolved.architecture,
    )
    return ref, resolved.path, base_key(ref, resolved.path)


def load_spec(repository: ModelRepository, key: str, rank: int, precision: str = "fp32") -> GraphSpec:
    """The spec of a published multi-adapter graph (verified against its checksums)."""
    folder = graph_folder_name(rank, precision)
    try:
        info = repository.verify_base(key, folder)
    except RepositoryError as exc:
        raise MultiAdapterError(f"multi-adapter graph {key}/{folder}: {exc}") from exc
    return GraphSpec.from_json(info["info"]["spec"])


def _check(session: Any, module: Any, spec: GraphSpec, vocab_size: int) -> dict[str, Any]:
    """Random non-zero adapters, mixed rows, ragged padding: ONNX vs the traced torch module."""
    feed = {
        **dummy_tokens(spec, 8, 24, vocab_size, seed=7),
        **random_tables(spec, 3, [2, 5, 3], seed=7),
    }
    feed[ADAPTER_INDEX_INPUT] = np.asarray([0, 1, 2, 1, 0, 2, 2, 1], dtype=np.int64)
    reference = run_torch(module, spec, feed)
    wanted = [i.name for i in session.get_inputs()]
    out = np.asarray(session.run(None, {n: feed[n] for n in wanted})[0])
    finite = np.isfinite(reference)
    if not np.array_equal(finite, np.isfinite(out)):
        raise MultiAdapterError("the multi-adapter graph masks other label columns than the torch module")
    ref_masked = np.where(finite, reference, -np.inf)
    return {
        "n_samples": int(reference.shape[0]),
        "max_abs_logit_diff": float(np.abs(out[finite] - reference[finite]).max()),
        "agreement": float((out.argmax(-1) == ref_masked.argmax(-1)).mean()),
    }


def export_multi_adapter_base(
    repository: ModelRepository,
    base_model: str | Path,
    *,
    rank: int = 8,
    targets: Sequence[str] | None = None,
    precisions: Sequence[str] = ("fp32", "int8"),
    opset: int = 17,
    threads: int = 2,
    say: Callable[[str], None] = _LOG.info,
) -> dict[str, Path]:
    """Export (or verify and reuse) the multi-adapter graph of a base; return precision -> graph path."""
    from training.export import graphs
    from training.export.parity import ort_session
    from training.model import lora_targets

    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise MultiAdapterError(
            f"unknown precisions {unknown} for the multi-adapter graph (known: {PRECISIONS})"
        )
    if rank < 1:
        raise MultiAdapterError(f"rank must be >= 1, got {rank}")
    ref, path, key = resolve_base(base_model)
    targets = lora_targets(ref.architecture or "", list(targets) if targets else None)
    out: dict[str, Path] = {}
    missing = []
    for precision in precisions:
        folder = graph_folder_name(rank, precision)
        if repository.has_base(key, folder):
            load_spec(repository, key, rank, precision)  # verifies checksums
            say(f"multi-adapter graph {key}/{folder}: already exported, verified, reused")
        else:
            missing.append(precision)
        out[precision] = repository.base_path(key, folder) / GRAPH_FILE
    if not missing:
        return out

    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    module, spec = build_module(path, key, rank, list(targets))
    with tempfile.TemporaryDirectory(prefix="labelwise-multi-") as tmp:
        work = Path(tmp)
        say(f"multi-adapter graph {key}: tracing {spec.num_layers} layers, targets {list(spec.projections)}")
        raw = export_onnx(module, spec, work / "raw" / GRAPH_FILE, config.vocab_size, opset)
        try:
            fp32 = graphs.optimize_graph(raw, config, work / "fp32" / GRAPH_FILE)
        except Exception as exc:  # the fusions are an optimisation; the raw graph is correct as it is
            say(
                f"multi-adapter graph {key}: ORT fusions failed ({type(exc).__name__}), keeping the raw graph"
            )
            fp32 = raw
        for precision in missing:
            graph = fp32 if precision == "fp32" else graphs.quantize_int8(fp32, work / "int8" / GRAPH_FILE)
            parity = _check(ort_session(graph, threads=threads), module, spec, config.vocab_size)
            if precision == "fp32" and parity["max_abs_logit_diff"] > FP32_MAX_ABS_DIFF:
                raise MultiAdapterError(
                    f"multi-adapter graph {key} fp32: max |Δlogit| {parity['max_abs_logit_diff']:.2e} "
                    f"> {FP32_MAX_ABS_DIFF:g} against the torch module; nothing published"
                )
            folder = graph_folder_name(rank, precision)
            info = {
                "kind": "multi-lora",
                "graph_precision": precision,
                "base_model": ref.model_dump(mode="json"),
                "spec": spec.to_json(),
                "inputs": spec.input_names(),
                "opset": graphs.graph_opset(graph),
                "parity": parity,
            }
            with repository.new_base(key, folder, **info) as draft:
                (draft.path / GRAPH_FILE).write_bytes(graph.read_bytes())
            say(
                f"multi-adapter graph {key}/{folder}: "
                + ("exported" if draft.published else "exported by another writer first; theirs kept")
                + f", max |Δlogit| vs torch {parity['max_abs_logit_diff']:.2e}"
            )
    return out
