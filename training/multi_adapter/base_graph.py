"""Export the multi-adapter base graph once per base + rank + precision into the model repository.

Every precision of `MULTI_ADAPTER_PRECISIONS` (fp32, fp16 for GPU replicas, int8 for CPU ones) is
checked against the fp32 torch module, and the result is recorded in the graph's base.json.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_repository import (
    ADAPTER_INDEX_INPUT,
    FEATURES_OF_KIND,
    BaseModelRef,
    GraphSpec,
    ModelRepository,
    RepositoryError,
    base_key,
    layout,
)

from ..errors import MultiAdapterError, StrategyError, UnsupportedBaseError
from ..export import graphs
from ..export.parity import ort_session
from ..export.precisions import MULTI_ADAPTER_PRECISIONS, RECIPES, GraphBuilder
from ..model import lora_targets, resolve_base_model
from .graph import build_module, dummy_tokens, export_onnx, random_tables, run_torch

_LOG = logging.getLogger(__name__)
# fp16 and int8 have no |Δlogit| gate (RECIPES: their drift is expected); a graph whose argmax disagrees
# with torch on more than 2 of _check's 8 mixed rows has lost the base (as int8 does on outlier
# activations) and is not published. The floor tests/unit/multi_adapter holds int8 graphs to; the
# exporter's INT8_MIN_AGREEMENT (0.995) picks a quantisation on validation rows, and here one flip of 8
# random rows would fail it.
MIN_AGREEMENT = 0.75


def resolve_base(base_model: str | Path, head_kind: str | None = None) -> tuple[BaseModelRef, Path, str]:
    """(manifest ref, local folder, base key) exactly as training and export name this base (head_kind
    bert_pooler: the key of the base without its pooler, as the adapters' manifests name it)."""
    resolved = resolve_base_model(str(base_model))
    ref = BaseModelRef(
        id=resolved.id,
        revision=resolved.revision,
        content_hash=resolved.content_hash,
        architecture=resolved.architecture,
    )
    # roberta and linear bases keep the plain key (base_key); bert_pooler's is `<...>-pre-pooler`
    return ref, resolved.path, base_key(ref, resolved.path, FEATURES_OF_KIND.get(head_kind or ""))


def load_spec(repository: ModelRepository, key: str, rank: int, precision: str = "fp32") -> GraphSpec:
    """The spec of a published multi-adapter graph (verified against its checksums)."""
    folder = layout.multi_adapter_folder(rank, precision)
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
        "checked_on": session.get_providers()[0],
        "reference": "fp32 torch module, random adapters in mixed rows",
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
    head_kind: str | None = None,
) -> dict[str, Path]:
    """Export (or verify and reuse) the multi-adapter graph of a base; return precision -> graph path.

    head_kind: None, the architecture's (roberta, or linear on BERT's pooler); bert_pooler, a BERT graph
    whose adapters bring their own trained pooler (first token -> each row's dense + tanh -> out_proj),
    kept under the base key its adapters name (`<...>-pre-pooler`)."""
    unknown = [p for p in precisions if p not in MULTI_ADAPTER_PRECISIONS]
    if unknown:
        raise MultiAdapterError(
            f"unknown precisions {unknown} for the multi-adapter graph (known: {MULTI_ADAPTER_PRECISIONS})"
        )
    if rank < 1:
        raise MultiAdapterError(f"rank must be >= 1, got {rank}")
    ref, path, key = resolve_base(base_model, head_kind)
    try:
        targets = lora_targets(ref.architecture or "", list(targets) if targets else None)
    except StrategyError as exc:  # export_shared_graph only logs MultiAdapterError: the version keeps merged
        raise UnsupportedBaseError(f"multi-adapter graph of {ref.id}: {exc}") from exc
    out: dict[str, Path] = {}
    missing = []
    reused: list[str] = []  # the targets of a precision reused: one exported beside it adapts the same
    for precision in precisions:
        folder = layout.multi_adapter_folder(rank, precision)
        if repository.has_base(key, folder):
            spec = load_spec(repository, key, rank, precision)  # verifies checksums
            adapted = sorted({p.rsplit(".", 1)[-1] for p in spec.projections})
            if not set(targets) <= set(adapted):
                raise MultiAdapterError(
                    f"multi-adapter graph {key}/{folder} adapts {adapted}, not every one of {targets} "
                    "(it was exported when the default LoRA targets were attention query/value only); "
                    f"adapters on {targets} need one that does: remove _bases/{key}/{folder} and publish "
                    "a LoRA version (or call export_multi_adapter_base) to export it; the adapters on the "
                    "old targets keep working with the new graph"
                )
            say(f"multi-adapter graph {key}/{folder}: already exported, verified, reused")
            reused = reused or adapted
        else:
            missing.append(precision)
        out[precision] = repository.base_path(key, folder) / layout.MULTI_ADAPTER_FILE
    if not missing:
        return out
    # Every precision of a base's graph of one rank adapts the same projections: an int8 graph on fewer
    # than its fp32 one would refuse, on a CPU replica (int8 first), the adapters fp32 serves.
    targets = reused or targets

    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    module, spec = build_module(path, key, rank, list(targets), head_kind)
    with tempfile.TemporaryDirectory(prefix="labelwise-multi-") as tmp:
        work = Path(tmp)
        say(f"multi-adapter graph {key}: tracing {spec.num_layers} layers, targets {list(spec.projections)}")
        raw = export_onnx(module, spec, work / "raw" / layout.MULTI_ADAPTER_FILE, config.vocab_size, opset)
        builder = GraphBuilder(raw, config, work, layout.MULTI_ADAPTER_FILE)
        try:
            builder.build("fp32")
        except Exception as exc:  # the fusions are an optimisation; the raw graph is correct as it is
            say(
                f"multi-adapter graph {key}: ORT fusions failed ({type(exc).__name__}), keeping the raw graph"
            )
            builder = GraphBuilder(raw, config, work, layout.MULTI_ADAPTER_FILE, built={"fp32": raw})
        for precision in missing:
            graph = builder.build(precision)
            recipe = RECIPES[precision]
            # fp16 runs on CUDA where there is one, else on the CPU provider (slowly): measured either way.
            session = ort_session(graph, recipe.providers(), threads=threads)
            parity = _check(session, module, spec, config.vocab_size)
            if recipe.exceeds(parity["max_abs_logit_diff"]):
                raise MultiAdapterError(
                    f"multi-adapter graph {key} {precision}: max |Δlogit| {parity['max_abs_logit_diff']:.2e} "
                    f"> {recipe.max_abs_diff:g} against the torch module; nothing published"
                )
            if parity["agreement"] < MIN_AGREEMENT:
                raise MultiAdapterError(
                    f"multi-adapter graph {key} {precision}: argmax agreement {parity['agreement']:.3f} "
                    f"< {MIN_AGREEMENT} with the torch module over {parity['n_samples']} rows (max "
                    f"|Δlogit| {parity['max_abs_logit_diff']:.2e}); {precision} not published"
                )
            folder = layout.multi_adapter_folder(rank, precision)
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
                (draft.path / layout.MULTI_ADAPTER_FILE).write_bytes(graph.read_bytes())
            where = f"{repository.root}/{layout.BASES_DIR}/{key}/{folder}/{layout.MULTI_ADAPTER_FILE}"
            say(
                f"multi-adapter graph {precision}: "
                + (f"exported to {where}" if draft.published else f"{where} exported by another writer first")
                + f", max |Δlogit| vs torch {parity['max_abs_logit_diff']:.2e}"
                + ("" if draft.published else "; theirs kept")
            )
    return out
