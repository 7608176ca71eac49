"""export_into: the hook training calls before publishing a version (docs/artifacts.md)."""

from __future__ import annotations

import copy
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_repository import (
    PRECISIONS,
    BaseEncoderRef,
    BaseModelRef,
    ExportRecord,
    HeadSpec,
    ModelRepository,
    Parity,
)

from ..errors import ExportError, ParityError, UnknownPrecisionError
from . import base_encoder, graphs, heads
from .parity import (
    compare,
    label_ids,
    load_check,
    ort_outputs,
    ort_session,
    sample_rows,
    session_input_names,
    tokenize_batches,
    torch_outputs,
)

FP32_MAX_ABS_LOGIT_DIFF = 1e-3
INT8_MAX_ACCURACY_DROP = 0.01
DEFAULT_PARITY_ROWS = 512
ONNX_DIR = "onnx"


def parse_precisions(precisions: str | Sequence[str]) -> list[str]:
    """'fp32,int8' or ['fp32', 'int8'] -> a de-duplicated list in a fixed order; unknown names raise."""
    items = precisions.split(",") if isinstance(precisions, str) else list(precisions)
    wanted = [p.strip().lower() for p in items if p and p.strip()]
    unknown = sorted(set(wanted) - set(PRECISIONS))
    if unknown or not wanted:
        raise UnknownPrecisionError(
            f"unknown precision {', '.join(unknown) or '(none given)'}: choose from {', '.join(PRECISIONS)}"
        )
    return [p for p in PRECISIONS if p in wanted]


def _say(message: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[cyan]\\[export][/cyan] {message}")


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def export_into(
    version_dir: str | Path,
    *,
    model: Any,
    tokenizer: Any,
    strategy: str,
    base_model: BaseModelRef,
    base_model_path: str | Path | None = None,
    precisions: str | Sequence[str] = ("fp32", "int8"),
    parity_texts: Sequence[str],
    parity_labels: Sequence[Any] | None = None,
    max_length_tokens: int = 128,
    repository: ModelRepository | None = None,
    opset: int = graphs.DEFAULT_OPSET,
    parity_rows: int = DEFAULT_PARITY_ROWS,
    threads: int = 2,
    say: Callable[[str], None] = _say,
) -> dict[str, Any]:
    """Export ONNX graphs (and head/base encoder for frozen/lora) into a draft; return manifest fields.

    Raises ExportError (nothing must be published) when fp32 parity fails, a precision is
    unknown, the architecture cannot be exported, or a graph does not load back.
    """
    wanted = parse_precisions(precisions)
    if strategy not in ("full", "frozen", "lora"):
        raise ExportError(f"unknown strategy {strategy!r}: choose full, frozen or lora")
    if not parity_texts:
        raise ExportError("parity_texts is empty: export needs validation rows to check parity")
    version_dir = Path(version_dir)
    texts, labels = sample_rows(parity_texts, parity_labels, parity_rows)
    label2id = {str(k): int(v) for k, v in (model.config.label2id or {}).items()}
    gold = label_ids(labels, label2id)
    batches = tokenize_batches(tokenizer, texts, max_length_tokens)

    was_training = model.training
    model.eval()
    try:
        merged = copy.deepcopy(model).merge_and_unload() if _is_peft(model) else model
        merged.eval()
        kind = heads.head_kind(merged) if strategy in ("frozen", "lora") else None
        # The reference is the caller's own model (unmerged for lora), so the merge is checked too.
        reference = torch_outputs(lambda **kw: model(**kw).logits, batches, list(batches[0]))
        exports = _export_graphs(
            version_dir,
            merged,
            wanted,
            reference,
            gold,
            batches,
            tokenizer,
            max_length_tokens,
            opset,
            threads,
            say,
        )
        fields: dict[str, Any] = {"exports": [e.model_dump(mode="json") for e in exports]}
        if kind is None:
            if strategy != "full":
                say(
                    f"{strategy}: architecture {merged.config.model_type!r} has no numpy head; "
                    "it is served by its own graph"
                )
            return fields

        arrays = heads.head_arrays(merged, kind)
        heads.save_npz(version_dir / heads.HEAD_FILE, arrays)
        fields["head"] = HeadSpec(kind=kind, path=heads.HEAD_FILE).model_dump(mode="json")
        if strategy == "lora":
            lora = heads.lora_arrays(model)
            if lora is not None:
                heads.save_npz(version_dir / heads.LORA_FILE, lora)
        if base_model_path is None or repository is None:
            raise ExportError(
                f"{strategy} versions need base_model_path and repository for the shared base encoder"
            )
        key = base_encoder.base_key(base_model, base_model_path)
        input_names = list(exports[0].inputs) if exports else list(batches[0])
        paths = base_encoder.ensure_base(
            repository,
            key,
            wanted,
            base_model=base_model,
            base_model_path=base_model_path,
            kind=kind,
            tokenizer=tokenizer,
            input_names=input_names,
            batches=batches,
            max_length_tokens=max_length_tokens,
            opset=opset,
            threads=threads,
            say=say,
        )
        if strategy == "frozen":
            _check_head_on_base(paths.get("fp32"), kind, arrays, reference, batches, threads, say)
        fields["base_encoder"] = BaseEncoderRef(key=key, precisions=wanted).model_dump(mode="json")
        return fields
    finally:
        model.train(was_training)


def _export_graphs(
    version_dir: Path,
    merged: Any,
    wanted: list[str],
    reference: np.ndarray,
    gold: np.ndarray | None,
    batches: list[dict[str, np.ndarray]],
    tokenizer: Any,
    max_length_tokens: int,
    opset: int,
    threads: int,
    say: Callable[[str], None],
) -> list[ExportRecord]:
    records = []
    num_labels = reference.shape[1]
    with tempfile.TemporaryDirectory(prefix="labelwise-export-") as tmp:
        work = Path(tmp)
        say(f"optimum export ({merged.config.model_type}, opset {opset})")
        raw = graphs.export_sequence_classifier(merged, work, opset)
        fp32 = graphs.optimize_graph(raw, merged.config, work / "final" / "model.fp32.onnx")
        # fp32 parity is checked even when fp32 is not kept: int8 is quantised from it.
        order = ["fp32"] + [p for p in wanted if p != "fp32"]
        for precision in order:
            if precision == "fp32":
                graph = fp32
            elif precision == "int8":
                graph = graphs.quantize_int8(fp32, work / "final" / "model.int8.onnx")
            else:
                graph = graphs.optimize_graph(
                    raw, merged.config, work / "final" / "model.fp16.onnx", fp16=True
                )
            parity, inputs = _graph_parity(
                graph, precision, reference, gold, batches, tokenizer, max_length_tokens, num_labels, threads
            )
            say(
                f"{precision}: {graph.stat().st_size / 1e6:.1f} MB, "
                f"max |Δlogit| {parity.max_abs_logit_diff}, "
                f"agreement {parity.agreement}, accuracy Δ {parity.accuracy_delta}"
                + ("" if parity.verified else f" (UNVERIFIED: {parity.note})")
            )
            if precision == "fp32" and parity.max_abs_logit_diff > FP32_MAX_ABS_LOGIT_DIFF:
                raise ParityError(
                    f"fp32 graph: max |Δlogit| {parity.max_abs_logit_diff:.2e} vs torch exceeds "
                    f"{FP32_MAX_ABS_LOGIT_DIFF:g} over {parity.n_samples} rows; nothing published"
                )
            if (
                precision == "int8"
                and parity.accuracy_delta is not None
                and parity.accuracy_delta < -INT8_MAX_ACCURACY_DROP
            ):
                say(
                    f"[yellow]WARNING[/yellow] int8 accuracy drops "
                    f"{-parity.accuracy_delta * 100:.1f} points vs torch"
                )
            if precision not in wanted:
                continue
            rel = f"{ONNX_DIR}/model.{precision}.onnx"
            (version_dir / ONNX_DIR).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(graph, version_dir / rel)
            records.append(
                ExportRecord(
                    precision=precision,
                    path=rel,
                    opset=graphs.graph_opset(graph),
                    size_bytes=(version_dir / rel).stat().st_size,
                    inputs=inputs,
                    parity=parity,
                )
            )
    return records


def _graph_parity(
    graph: Path,
    precision: str,
    reference: np.ndarray,
    gold: np.ndarray | None,
    batches: list[dict[str, np.ndarray]],
    tokenizer: Any,
    max_length_tokens: int,
    num_labels: int,
    threads: int,
) -> tuple[Parity, list[str]]:
    """Load with ORT, run the load-check batch, compare with torch on the parity rows."""
    providers = base_encoder._fp16_providers() if precision == "fp16" else None
    if precision == "fp16" and providers is None:
        import onnx

        inputs = [i.name for i in onnx.load(str(graph), load_external_data=False).graph.input]
        note = "fp16 exported on a machine without a CUDA execution provider: parity unverified"
        return Parity(n_samples=0, max_abs_logit_diff=None, agreement=None, verified=False, note=note), inputs
    try:
        session = ort_session(graph, providers, threads)
    except Exception as exc:  # onnxruntime raises its own untyped errors on a bad graph
        raise ExportError(f"{precision} graph does not load in onnxruntime: {exc}") from exc
    inputs = session_input_names(session)
    load_check(session, tokenizer, max_length_tokens, num_labels, f"{precision} graph")
    cmp = compare(reference, ort_outputs(session, batches), gold)
    note = "checked on CUDAExecutionProvider" if precision == "fp16" else "checked on CPUExecutionProvider"
    return (
        Parity(
            n_samples=cmp.n_samples,
            max_abs_logit_diff=cmp.max_abs_diff,
            agreement=cmp.agreement,
            accuracy_delta=cmp.accuracy_delta,
            verified=True,
            note=note,
        ),
        inputs,
    )


def _check_head_on_base(
    fp32_base: str | None,
    kind: str,
    arrays: dict[str, np.ndarray],
    reference: np.ndarray,
    batches: list[dict[str, np.ndarray]],
    threads: int,
    say: Callable[[str], None],
) -> None:
    """Serving's frozen path (base features, then the numpy head) must reproduce the torch logits."""
    if fp32_base is None:
        say("frozen: fp32 base encoder not requested; head-on-base parity not checked")
        return
    session = ort_session(fp32_base, None, threads)
    logits = heads.apply_head(kind, arrays, ort_outputs(session, batches))
    diff = float(np.abs(logits - reference).max())
    say(f"frozen: head.npz on the shared base encoder, max |Δlogit| {diff:.2e}")
    if diff > FP32_MAX_ABS_LOGIT_DIFF:
        raise ParityError(
            f"head.npz applied to the shared base encoder's features differs from the torch model by "
            f"{diff:.2e} > {FP32_MAX_ABS_LOGIT_DIFF:g}: the frozen encoder is not the base; nothing published"
        )
