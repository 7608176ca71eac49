"""The shared base encoder: exported once per base model, revision and precision, reused by every scenario."""

from __future__ import annotations

import hashlib
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from model_repository import BaseModelRef, ModelRepository, RepositoryError

from ..errors import ExportError, ParityError
from . import graphs, heads, parity

ENCODER_FILE = "encoder.onnx"
FP32_MAX_ABS_DIFF = 1e-3
# Folder names that say nothing about the model; the key takes the folder above them.
_GENERIC_NAMES = {"model", "models", "weights", "snapshots", "main", "base", "encoder"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")


def content_hash(path: str | Path) -> str:
    """sha256 over a local model folder's weight, config and vocab files (names and bytes, sorted)."""
    folder = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    if not files:
        raise ExportError(f"{folder}: no weight or config files to hash")
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def base_key(ref: BaseModelRef, base_model_path: str | Path | None = None) -> str:
    """`<sanitised name>-<12 hex of revision or content hash>`, e.g. all-minilm-l6-v2-3f2a1b0c9d8e."""
    parts = [p for p in re.split(r"[\\/]", ref.id) if p]
    name = next(
        (p for p in reversed(parts) if p.lower() not in _GENERIC_NAMES), parts[-1] if parts else "base"
    )
    name = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    name = re.sub(r"^gt-", "", name)[:48] or "base"  # gt_ is the offline wheel's prefix, not the model
    digest = ref.revision or ref.content_hash
    if not digest:
        if base_model_path is None or not Path(base_model_path).is_dir():
            raise ExportError(
                f"base model {ref.id!r} has neither a revision nor a content_hash, "
                "and no local folder to hash"
            )
        digest = content_hash(base_model_path)
    digest = re.sub(r"[^a-z0-9]", "", digest.lower())
    if not digest:
        raise ExportError(f"base model {ref.id!r}: revision/content_hash {digest!r} has no usable characters")
    return f"{name}-{digest[:12]}"


def load_base_encoder(base_model_path: str | Path, kind: str, input_names: list[str]) -> Any:
    """The un-adapted base, wrapped to output `features` (what the head consumes)."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(base_model_path)
    kwargs: dict[str, Any] = {"attn_implementation": "eager"}
    if kind == "roberta":
        kwargs["add_pooling_layer"] = False  # the roberta head reads the first token, not the pooler
    encoder = AutoModel.from_pretrained(base_model_path, config=config, **kwargs).eval()
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
) -> dict[str, str]:
    """Export the base in each missing precision; verify those already there. Return precision -> path."""
    paths: dict[str, str] = {}
    missing = [p for p in precisions if not repository.has_base(key, p)]
    for precision in precisions:
        if precision not in missing:
            try:
                repository.verify_base(key, precision)
            except RepositoryError as exc:
                raise ExportError(f"shared base encoder {key} {precision} fails verification: {exc}") from exc
            say(f"base encoder {key} {precision}: already exported, verified, reused")
        paths[precision] = str(repository.base_path(key, precision) / ENCODER_FILE)
    if not missing:
        return paths

    wrapper, config = load_base_encoder(base_model_path, kind, input_names)
    reference = parity.torch_outputs(
        lambda **kw: wrapper(*(kw[n] for n in input_names)), batches, input_names
    )
    with tempfile.TemporaryDirectory(prefix="labelwise-base-") as tmp:
        work = Path(tmp)
        raw = graphs.export_feature_encoder(wrapper, input_names, work / "raw" / "encoder.onnx", opset)
        fp32 = graphs.optimize_graph(raw, config, work / "fp32" / ENCODER_FILE)
        for precision in missing:
            if precision == "fp32":
                graph = fp32
            elif precision == "int8":
                graph = graphs.quantize_int8(fp32, work / "int8" / ENCODER_FILE)
            else:
                graph = graphs.optimize_graph(raw, config, work / "fp16" / ENCODER_FILE, fp16=True)
            info: dict[str, Any] = {
                "base_model": base_model.model_dump(mode="json"),
                "head_kind": kind,
                "features_dim": int(reference.shape[1]),
                "opset": graphs.graph_opset(graph),
                "inputs": input_names,
                "max_length_tokens_checked": max_length_tokens,
            }
            info["parity"] = _base_parity(
                graph, precision, reference, batches, tokenizer, max_length_tokens, threads
            )
            if precision == "fp32" and info["parity"]["max_abs_feature_diff"] > FP32_MAX_ABS_DIFF:
                raise ParityError(
                    f"base encoder {key} fp32: max |Δfeatures| {info['parity']['max_abs_feature_diff']:.2e} "
                    f"> {FP32_MAX_ABS_DIFF:g}; nothing published"
                )
            with repository.new_base(key, precision, **info) as draft:
                target = draft.path / ENCODER_FILE
                target.write_bytes(graph.read_bytes())
            say(
                f"base encoder {key} {precision}: "
                + ("exported" if draft.published else "exported by another writer first; theirs kept")
                + f", max |Δfeatures| {info['parity']['max_abs_feature_diff']}"
            )
    return paths


def _base_parity(
    graph: Path,
    precision: str,
    reference: np.ndarray,
    batches: list[dict[str, np.ndarray]],
    tokenizer: Any,
    max_length_tokens: int,
    threads: int,
) -> dict[str, Any]:
    providers = _fp16_providers() if precision == "fp16" else None
    if precision == "fp16" and providers is None:
        return {"verified": False, "max_abs_feature_diff": None, "note": "no CUDA provider here: unverified"}
    session = parity.ort_session(graph, providers, threads)
    parity.load_check(session, tokenizer, max_length_tokens, reference.shape[1], f"base encoder {precision}")
    features = parity.ort_outputs(session, batches)
    return {
        "verified": True,
        "n_samples": int(reference.shape[0]),
        "max_abs_feature_diff": float(np.abs(features - reference).max()),
    }


def _fp16_providers() -> list[str] | None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return None
