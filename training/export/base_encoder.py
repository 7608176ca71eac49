"""The shared base encoder: exported once per base model, revision and precision, reused by every scenario."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_repository import (
    BaseModelRef,
    ModelRepository,
    RepositoryError,
    apply_head,
    is_object_store,
    layout,
)

from ..errors import ExportError, ParityError
from . import graphs, heads, parity
from .precisions import RECIPES, GraphBuilder


def load_base_encoder(base_model_path: str | Path, kind: str, input_names: list[str]) -> Any:
    """The un-adapted base, wrapped to output `features` (what the head consumes)."""
    from transformers import AutoConfig, AutoModel
    from transformers import logging as hf_logging

    config = AutoConfig.from_pretrained(base_model_path)
    kwargs: dict[str, Any] = {"attn_implementation": "eager"}
    if kind in ("roberta", "mean_mlp", "bert_pooler"):
        kwargs["add_pooling_layer"] = False  # these heads read the first token or the mean, not the pooler
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "pooler weights not used" is expected without the pooler
    try:
        encoder = AutoModel.from_pretrained(base_model_path, config=config, **kwargs).eval()
    except TypeError:
        if kind != "mean_mlp":
            raise
        # An architecture without a pooler takes no add_pooling_layer; the mean needs none.
        kwargs.pop("add_pooling_layer")
        encoder = AutoModel.from_pretrained(base_model_path, config=config, **kwargs).eval()
    finally:
        hf_logging.set_verbosity(verbosity)
    return heads.FeatureEncoder.build(encoder, kind, input_names), config


def ensure_base(
    repository: ModelRepository,
    key: str,
    precisions: list[str],
    *,
    base_model: BaseModelRef,
    base_model_path: str | Path,
    kind: str,
    tokenizer: Any,
    input_names: list[str],
    batches: list[dict[str, np.ndarray]],
    max_length_tokens: int,
    opset: int,
    threads: int,
    say: Any,
    head: tuple[str, dict[str, np.ndarray], np.ndarray] | None = None,
    int8_guard: bool = True,
) -> dict[str, str]:
    """Export the base in each missing precision; verify those already there. Return folder -> path.

    head: (kind, arrays, torch logits) of the frozen version being exported, so that base.json also
    records each precision's logit parity and label agreement through a real head. int8_guard (the
    scenario's setting): True reads `int8/` (the sensitive nodes kept fp32), False `all-int8/` (every
    MatMul int8, the fastest graph), each exported the first time a version asks for it.
    """
    paths: dict[str, str] = {}
    variants = base_folders(precisions, int8_guard)
    folders = {p: variants.get(p, p) for p in precisions}
    missing = [p for p in precisions if not repository.has_base(key, folders[p])]
    for precision in precisions:
        folder = folders[precision]
        if precision not in missing:
            try:
                info = repository.verify_base(key, folder)
            except RepositoryError as exc:
                if is_object_store(repository.root):
                    fix = f"delete the objects under {repository.root}/{layout.BASES_DIR}/{key}/{folder}/"
                else:
                    fix = f"move {repository.base_path(key, folder)} away"
                raise ExportError(
                    f"shared base encoder {key} {folder} fails verification: {exc}; every version on it is "
                    f"refused until it is exported again: {fix} and publish or re-export a version on it"
                ) from exc
            say(f"base encoder {key} {folder}: already exported, verified, reused")
            if folder == "int8" and "quantization" not in info.get("info", {}):
                if is_object_store(repository.root):  # the store's keys, not the local cache's copy
                    bases = f"{repository.root}/{layout.BASES_DIR}/{key}"
                    where = (
                        f"delete the objects under {bases}/int8/ and the claim object "
                        f"{bases}/{layout.CLAIMS_DIR}/int8"
                    )
                else:
                    where = f"move {repository.base_path(key, 'int8')} away"
                say(
                    f"base encoder {key} int8 predates the shared-base recipe (every MatMul int8); "
                    f"it is kept, as published versions read it. To export it again with the attention "
                    f"blocks and feed-forward outputs fp32, {where} and re-export one frozen version on "
                    f"this base (`labelwise export`): until then, versions on this base do not load in int8"
                )
        paths[folder] = str(repository.base_path(key, folder) / layout.ENCODER_FILE)
    if not missing:
        return paths

    wrapper, config = load_base_encoder(base_model_path, kind, input_names)
    reference = parity.torch_outputs(
        lambda **kw: wrapper(*(kw[n] for n in input_names)), batches, input_names
    )
    with tempfile.TemporaryDirectory(prefix="labelwise-base-") as tmp:
        work = Path(tmp)
        raw = graphs.export_feature_encoder(wrapper, input_names, work / "raw" / layout.ENCODER_FILE, opset)
        builder = GraphBuilder(raw, config, work, layout.ENCODER_FILE)
        for precision in missing:
            folder = folders[precision]
            graph, quantization = _base_graph(builder, precision, work, guarded=int8_guard)
            info: dict[str, Any] = {
                "base_model": base_model.model_dump(mode="json"),
                "head_kind": kind,
                "features_dim": int(reference.shape[1]),
                "opset": graphs.graph_opset(graph),
                "inputs": input_names,
                "max_length_tokens_checked": max_length_tokens,
                **({"quantization": quantization} if quantization else {}),
                "parity": _base_parity(
                    graph, precision, reference, batches, tokenizer, max_length_tokens, threads, head
                ),
            }
            diff = info["parity"]["max_abs_feature_diff"]
            if RECIPES[precision].exceeds(diff):
                raise ParityError(
                    f"base encoder {key} {folder}: max |Δfeatures| {diff:.2e} "
                    f"> {RECIPES[precision].max_abs_diff:g}; nothing published"
                )
            with repository.new_base(key, folder, **info) as draft:
                (draft.path / layout.ENCODER_FILE).write_bytes(graph.read_bytes())
            where = f"{repository.root}/{layout.BASES_DIR}/{key}/{folder}/{layout.ENCODER_FILE}"
            say(
                f"base encoder {precision}: "
                + (f"exported to {where}" if draft.published else f"{where} exported by another writer first")
                + f", max |Δfeatures| {diff}"
                + ("" if draft.published else "; theirs kept")
            )
            if not draft.published or not Path(paths[folder]).is_file():
                # Another writer's copy is what the version reads (an object store's only in the store
                # until verified into this machine's cache), or ours was published but not cached here.
                by = "this export" if draft.published else "another writer while this export ran"
                _materialise(repository, key, folder, by)
    return paths


def _materialise(repository: ModelRepository, key: str, folder: str, by: str) -> None:
    """Verify the published base (key, folder), which brings an object store's copy into the local cache
    where the head checks open it; ExportError naming the base when it fails."""
    try:
        repository.verify_base(key, folder)
    except RepositoryError as exc:
        raise ExportError(
            f"shared base encoder {key} {folder}, published by {by}, fails verification here: {exc}; "
            "nothing published. Publish or re-export the version again"
        ) from exc


def base_folders(precisions: Sequence[str], int8_guard: bool = True) -> dict[str, str]:
    """The precisions that a version with this int8_guard setting reads from another folder than their own
    under _bases/<key>/ (`manifest.base_encoder.folders`): int8 from `all-int8` when the guard is off."""
    return {"int8": layout.ALL_INT8_FOLDER} if "int8" in precisions and not int8_guard else {}


def _base_graph(
    builder: GraphBuilder, precision: str, work: Path, guarded: bool = True
) -> tuple[Path, str | None]:
    """The base graph of one precision, and for int8 how it was quantised.

    A version's own int8 graph is guarded on its scenario's validation rows (exporter._guard_int8). The
    shared base serves every frozen scenario of its model, so no one scenario can judge it: its guarded
    int8 graph (`int8/`) always keeps the most sensitive nodes fp32. Measured on the six frozen MiniLM
    scenarios (1,000 training rows, test splits scored through the serving engine, docs/results.md):
    int8 minus fp32 test accuracy -1.11 to +0.94 points with every MatMul int8, -0.67 to +0.50 with
    these nodes fp32, for ~25 % more CPU time than the all-int8 graph (still ~20 % less than fp32).
    Versions that opt out of the guard (`int8_guard: false`) read `all-int8/`: every MatMul int8.
    """
    if precision != "int8":
        return builder.build(precision), None
    if not guarded:
        return builder.build("int8"), "every MatMul int8 (int8_guard false)"
    fp32 = builder.build("fp32")
    keep = graphs.int8_sensitive_nodes(fp32)
    if not keep:
        return builder.build("int8"), "every MatMul int8 (no attention or feed-forward output node found)"
    graph = graphs.quantize_int8(fp32, work / "int8-shared" / builder.filename, keep_fp32=keep)
    return graph, f"{len(keep)} attention / feed-forward output nodes kept fp32"


def _base_parity(
    graph: Path,
    precision: str,
    reference: np.ndarray,
    batches: list[dict[str, np.ndarray]],
    tokenizer: Any,
    max_length_tokens: int,
    threads: int,
    head: tuple[str, dict[str, np.ndarray], np.ndarray] | None = None,
) -> dict[str, Any]:
    """Features against the fp32 torch base on the validation rows (fp16: on CPU when there is no GPU)."""
    try:
        session = parity.ort_session(graph, RECIPES[precision].providers(), threads)
    except Exception as exc:  # onnxruntime raises its own untyped errors (NoSuchFile, InvalidProtobuf)
        raise ExportError(
            f"base encoder {precision} graph {graph} does not load in onnxruntime: "
            f"{type(exc).__name__}: {exc}; nothing published"
        ) from exc
    parity.load_check(session, tokenizer, max_length_tokens, reference.shape[1], f"base encoder {precision}")
    features = parity.ort_outputs(session, batches)
    out: dict[str, Any] = {
        "verified": True,
        "n_samples": int(reference.shape[0]),
        "max_abs_feature_diff": parity.max_abs_diff(
            reference, features, f"base encoder {precision} features"
        ),
        "checked_on": session.get_providers()[0],
        "reference": "fp32 torch base encoder",
    }
    if head is not None:
        kind, arrays, torch_logits = head
        what = f"base encoder {precision} through the version's head"
        cmp = parity.compare(torch_logits, apply_head(kind, arrays, features), None, what)
        out.update(max_abs_logit_diff=cmp.max_abs_diff, agreement=cmp.agreement)
    return out
