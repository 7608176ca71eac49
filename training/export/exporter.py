"""export_into: the hook training calls before publishing a version (docs/artifacts.md)."""

from __future__ import annotations

import copy
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_repository import (
    FEATURES_OF_KIND,
    BaseEncoderRef,
    BaseModelRef,
    ExportRecord,
    HeadSpec,
    ModelRepository,
    Parity,
    apply_head,
    base_key,
    layout,
)

from ..errors import ExportError, ParityError
from . import base_encoder, graphs, heads
from .parity import (
    Comparison,
    compare,
    label_ids,
    load_check,
    ort_outputs,
    ort_session,
    sample_rows,
    session_input_names,
    tokenize_passes,
    torch_outputs,
)
from .precisions import RECIPES, GraphBuilder, parse_precisions

DEFAULT_PARITY_ROWS = 512
# The int8 guard (_guard_int8): the fully quantised graph is published when, on the validation rows, it
# loses at most INT8_MAX_DROP of accuracy against the fp32 graph and changes at most 1 - INT8_MIN_AGREEMENT
# of the labels; otherwise the export tries keeping its most sensitive nodes fp32. Agreement is the bar
# that predicts the test split: a graph flipping 1 % of 1,000 test rows moves accuracy by +-0.3 points
# (sd) even when validation accuracy did not move (intent, LoRA, 4,000 rows: validation 0.0, test -0.6).
INT8_MAX_DROP = 0.005
INT8_MIN_AGREEMENT = 0.995
# A frozen version's int8 is the shared base's int8 graph (its most sensitive nodes already fp32) under the
# version's own head. The base serves every frozen scenario, so it cannot be re-quantised for one head:
# when, on the validation rows, the head loses more than FROZEN_INT8_MAX_DROP of accuracy on the int8 base
# against the fp32 base, the version's int8 reads the fp32 base instead (`base_encoder.folders`). Accuracy
# alone decides: under a small head the int8 base changes up to 4.8 % of the validation labels
# (MiniLM, docs/artifacts.md), so the agreement bar would send most frozen versions to fp32, and fp32 costs
# such a scenario ~1.25x the CPU per row of the int8 base. The agreement is recorded beside the choice.
FROZEN_INT8_MAX_DROP = INT8_MAX_DROP
# The scenario's test split scored by every exported graph at publish: all of it up to this many rows,
# so that publishing stays bounded (~3 passes over 2000 rows of MiniLM at 64 tokens on 2 cores).
DEFAULT_TEST_ROWS = 2000


def say_export(message: str) -> None:
    """An export's progress line on stderr, `[export] <message>`."""
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[cyan]\\[export][/cyan] {message}")


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def _trains_pooler(model: Any) -> bool:
    """A LoRA model that trained the encoder's pooler (lora_train_pooler): its head is that pooler + the
    classifier (kind bert_pooler) on the first token of a base without the pooler, not the linear layer on
    the shared base's own pooler."""
    if not _is_peft(model):
        return False
    return any(
        str(name).split(".")[-1] == "pooler"
        for config in model.peft_config.values()
        for name in (config.modules_to_save or [])
    )


@dataclass
class _ParityRows:
    """The rows every graph of one export is checked on, and what torch computed for them."""

    batches: list[dict[str, np.ndarray]]
    gold: np.ndarray | None
    reference: np.ndarray
    tokenizer: Any
    max_length_tokens: int
    threads: int
    test: _TestRows | None = None


@dataclass
class _TestRows:
    """The scenario's held-out test rows, tokenized as for parity, with the labels and torch's scores."""

    batches: list[dict[str, np.ndarray]]
    gold: np.ndarray
    num_labels: int
    torch: dict[str, Any]

    def scores(self, logits: np.ndarray) -> dict[str, Any]:
        """{rows, accuracy, macro_f1} of logits against the test labels."""
        from ..metrics import classification_metrics

        m = classification_metrics(self.gold, logits.argmax(-1), [str(i) for i in range(self.num_labels)])
        return {"rows": len(self.gold), "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}


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
    test_texts: Sequence[str] | None = None,
    test_labels: Sequence[Any] | None = None,
    test_rows: int = DEFAULT_TEST_ROWS,
    int8_guard: bool = True,
    say: Callable[[str], None] = say_export,
) -> dict[str, Any]:
    """Export ONNX graphs (and head/base encoder for frozen/lora) into a draft; return manifest fields.

    `int8_guard` (the scenario's setting): the int8 graph may keep its most sensitive nodes fp32 when
    quantising every MatMul costs validation accuracy or agreement (_guard_int8); False: every MatMul int8.

    With the scenario's held-out test rows (`test_texts`, `test_labels`: a seeded sample of `test_rows`),
    every graph's parity record also holds its accuracy and macro-F1 on them, and the fields hold
    `metrics: {"test": {rows, accuracy, macro_f1 (the torch model), int8_delta_vs_fp32}}` for the
    caller to merge into the version's metrics; for a frozen version the delta, and `served`, are those
    of the path serving runs (shared base encoder + head), scored in serving's passes.

    Raises ExportError (nothing must be published) when fp32 parity fails, a precision is
    unknown, the architecture cannot be exported, or a graph does not load back.
    """
    wanted = parse_precisions(precisions)
    if strategy not in ("full", "frozen", "lora"):
        raise ExportError(f"unknown strategy {strategy!r}: choose full, frozen or lora")
    if not parity_texts:
        raise ExportError("parity_texts is empty: export needs validation rows to check parity")
    version_dir = Path(version_dir)
    was_training = model.training
    # The Trainer leaves the model on its device (cuda:0 on a GPU machine); the parity rows feed CPU
    # tensors and the export traces on CPU, so the model comes to the CPU for the export and goes back.
    device = next(model.parameters()).device
    model.to("cpu")
    model.eval()
    try:
        merged = copy.deepcopy(model).merge_and_unload() if _is_peft(model) else model
        merged.eval()
        rows = _parity_rows(
            model, tokenizer, parity_texts, parity_labels, parity_rows, max_length_tokens, threads
        )
        if test_texts:
            rows.test = _test_rows(model, tokenizer, test_texts, test_labels, test_rows, max_length_tokens)
        exports = _export_graphs(version_dir, merged, wanted, rows, opset, say, int8_guard)
        fields: dict[str, Any] = {"exports": [e.model_dump(mode="json") for e in exports]}
        if rows.test is not None:
            fields["metrics"] = {"test": _test_summary(rows.test, exports, say)}
        kind = heads.head_kind(merged) if strategy in ("frozen", "lora") else None
        if kind == "linear" and _trains_pooler(model):
            kind = "bert_pooler"  # its pooler is its own: the shared base gives the first token instead
        if kind is None:
            if strategy != "full":
                say(
                    f"{strategy}: architecture {merged.config.model_type!r} has no numpy head; "
                    "it is served by its own graph"
                )
            return fields
        if base_model_path is None or repository is None:
            raise ExportError(
                f"{strategy} versions need base_model_path and repository for the shared base encoder"
            )
        arrays = _save_head(version_dir, model, merged, strategy, kind)
        fields["head"] = HeadSpec(kind=kind, path=layout.HEAD_FILE).model_dump(mode="json")
        key = base_key(base_model, base_model_path, FEATURES_OF_KIND[kind])
        input_names = list(exports[0].inputs) if exports else list(rows.batches[0])
        # A frozen version always has the fp32 base too: the head on it is the parity gate (a fine-tuned
        # encoder passed as the base fails it), and the int8 guard's reference. Asked for int8 or fp16
        # alone, both checks were skipped and a head on the wrong encoder could be published.
        base_wanted = ["fp32", *wanted] if strategy == "frozen" and "fp32" not in wanted else list(wanted)
        paths = base_encoder.ensure_base(
            repository,
            key,
            base_wanted,
            base_model=base_model,
            base_model_path=base_model_path,
            kind=kind,
            tokenizer=tokenizer,
            input_names=input_names,
            batches=rows.batches,
            max_length_tokens=max_length_tokens,
            opset=opset,
            threads=threads,
            say=say,
            head=(kind, arrays, rows.reference) if strategy == "frozen" else None,
            int8_guard=int8_guard,
        )
        folders = base_encoder.base_folders(base_wanted, int8_guard)
        if strategy == "frozen":
            served, checks = _check_head_on_base(paths, kind, arrays, rows, say, key)
            head_guard = _frozen_int8_guard(checks, len(rows.reference)) if int8_guard else None
            if head_guard is not None:
                folders["int8"] = "fp32"
                fields.setdefault("metrics", {})["int8_head_guard"] = head_guard
                say(f"frozen int8 guard: {head_guard['choice']}")
                if "fp32" in served:
                    served["int8"] = served["fp32"]  # what serving answers for int8 now
            if served and "metrics" in fields and "test" in fields["metrics"]:
                fields["metrics"]["test"] = _served_test_summary(fields["metrics"]["test"], served, say)
        ref = BaseEncoderRef(key=key, precisions=base_wanted, folders=folders)  # type: ignore[arg-type]
        fields["base_encoder"] = ref.model_dump(mode="json", exclude_defaults=True)
        return fields
    finally:
        model.train(was_training)
        model.to(device)


def _parity_rows(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    labels: Sequence[Any] | None,
    max_rows: int,
    max_length_tokens: int,
    threads: int,
) -> _ParityRows:
    """A seeded sample of the rows, tokenized and cut into passes as serving does, with the caller's model's
    logits on them.

    The reference is the caller's own model (unmerged for lora), so the merge is checked too.
    """
    sampled, sampled_labels = sample_rows(texts, labels, max_rows)
    label2id = {str(k): int(v) for k, v in (model.config.label2id or {}).items()}
    batches, order = tokenize_passes(tokenizer, sampled, max_length_tokens)
    return _ParityRows(
        batches=batches,
        gold=label_ids(None if sampled_labels is None else [sampled_labels[i] for i in order], label2id),
        reference=torch_outputs(lambda **kw: model(**kw).logits, batches, list(batches[0])),
        tokenizer=tokenizer,
        max_length_tokens=max_length_tokens,
        threads=threads,
    )


def _test_rows(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    labels: Sequence[Any] | None,
    max_rows: int,
    max_length_tokens: int,
) -> _TestRows:
    """A seeded sample of at most max_rows test rows (all of them when fewer; the first rows of a split
    kept in file order could be a few classes only), with torch's scores on them."""
    if labels is None or len(labels) != len(texts):
        raise ExportError("test_texts need test_labels, one per text")
    label2id = {str(k): int(v) for k, v in (model.config.label2id or {}).items()}
    texts, sampled_labels = sample_rows(texts, labels, max_rows)
    gold = label_ids(sampled_labels, label2id)
    batches, order = tokenize_passes(tokenizer, texts, max_length_tokens)  # int8 scored as served
    gold = None if gold is None else gold[order]
    logits = torch_outputs(lambda **kw: model(**kw).logits, batches, list(batches[0]))
    assert gold is not None
    test = _TestRows(batches, gold, int(logits.shape[1]), {})
    test.torch = test.scores(logits)
    return test


def _test_summary(test: _TestRows, exports: list[ExportRecord], say: Callable[[str], None]) -> dict[str, Any]:
    """The manifest's metrics.test: torch's figures and the int8-minus-fp32 accuracy; one line said."""
    by_precision = {e.precision: e.parity for e in exports if e.parity and e.parity.test_accuracy is not None}
    summary: dict[str, Any] = dict(test.torch)
    if "int8" in by_precision and "fp32" in by_precision:
        delta = by_precision["int8"].test_accuracy - by_precision["fp32"].test_accuracy  # type: ignore[operator]
        summary["int8_delta_vs_fp32"] = round(delta, 6)
    graphs_said = ", ".join(
        f"{p} {v.test_accuracy:.4f} / {v.test_macro_f1:.4f}" for p, v in by_precision.items()
    )
    say(
        f"test split ({summary['rows']} held-out rows), accuracy / macro-F1: "
        f"torch {summary['accuracy']:.4f} / {summary['macro_f1']:.4f}"
        + (f", {graphs_said}" if graphs_said else "")
        + (
            f"; int8 - fp32 accuracy {summary['int8_delta_vs_fp32'] * 100:+.2f} points"
            if "int8_delta_vs_fp32" in summary
            else ""
        )
    )
    return summary


def _save_head(version_dir: Path, model: Any, merged: Any, strategy: str, kind: str) -> dict[str, np.ndarray]:
    """Write head.npz (and lora.npz for LoRA, when its layers stack); return the head's arrays."""
    arrays = heads.head_arrays(merged, kind)
    heads.save_npz(version_dir / layout.HEAD_FILE, arrays)
    if strategy == "lora":
        lora = heads.lora_arrays(model)
        if lora is not None:
            heads.save_npz(version_dir / layout.LORA_FILE, lora)
    return arrays


def _export_graphs(
    version_dir: Path,
    merged: Any,
    wanted: list[str],
    rows: _ParityRows,
    opset: int,
    say: Callable[[str], None],
    int8_guard: bool = True,
) -> list[ExportRecord]:
    """Build, check and copy each wanted graph; fp32 is always checked, as the others derive from it."""
    records = []
    with tempfile.TemporaryDirectory(prefix="labelwise-export-") as tmp:
        work = Path(tmp)
        say(f"ONNX export ({merged.config.model_type}, opset {opset})")
        raw = graphs.export_sequence_classifier(merged, work, opset, list(rows.batches[0]))
        builder = GraphBuilder(raw, merged.config, work, "model.onnx")
        checked: dict[str, Parity] = {}
        for precision in ["fp32"] + [p for p in wanted if p != "fp32"]:
            graph = builder.build(precision)
            parity, inputs = _graph_parity(graph, precision, rows)
            if precision == "int8" and int8_guard:
                graph, parity = _guard_int8(builder, graph, parity, checked["fp32"], rows, work, say)
            checked[precision] = parity
            _gate(precision, graph, parity, say)
            if precision in wanted:
                records.append(_keep(version_dir, graph, precision, inputs, parity))
    return records


def _guard_int8(
    builder: GraphBuilder,
    graph: Path,
    parity: Parity,
    fp32: Parity,
    rows: _ParityRows,
    work: Path,
    say: Callable[[str], None],
) -> tuple[Path, Parity]:
    """The int8 graph to publish, chosen on validation rows only: every MatMul quantised when that passes
    both bars (INT8_MAX_DROP, INT8_MIN_AGREEMENT); otherwise the first of graphs.int8_fallbacks (cheapest
    first) that passes them, or, when none does, whichever candidate agrees with torch on the most rows
    (the cheaper one on a tie). The choice and its figures are recorded in `parity.quantization`."""
    if parity.accuracy_delta is None or fp32.accuracy_delta is None:
        return graph, parity

    def passes(candidate: Parity) -> bool:
        drop = (fp32.accuracy_delta or 0.0) - (candidate.accuracy_delta or 0.0)
        return drop <= INT8_MAX_DROP and (candidate.agreement or 0.0) >= INT8_MIN_AGREEMENT

    def figures(what: str, candidate: Parity) -> str:
        delta = (candidate.accuracy_delta or 0.0) - (fp32.accuracy_delta or 0.0)
        return f"{what}: accuracy {delta * 100:+.1f} points vs fp32, agreement {candidate.agreement:.3f}"

    if passes(parity):
        return graph, parity
    fp32_graph = builder.build("fp32")
    tried = [figures("every MatMul int8", parity)]
    best: tuple[Path, Parity, str] = (graph, parity, "every MatMul int8")
    for what, keep in graphs.int8_fallbacks(fp32_graph):
        name = f"int8-keep-{len(keep)}"
        candidate_graph = graphs.quantize_int8(fp32_graph, work / name / graph.name, keep_fp32=keep)
        candidate, _inputs = _graph_parity(candidate_graph, "int8", rows)
        tried.append(figures(f"{what} kept fp32", candidate))
        if passes(candidate) or (candidate.agreement or 0.0) > (best[1].agreement or 0.0):
            best = (candidate_graph, candidate, f"{what} kept fp32")
        if passes(candidate):
            break
    why = "; ".join(tried)
    chosen_graph, chosen, how = best
    say(f"int8 guard ({len(rows.reference)} validation rows): {why}; publishing: {how}")
    return chosen_graph, chosen.model_copy(update={"quantization": f"{how} ({why})"})


def _gate(precision: str, graph: Path, parity: Parity, say: Callable[[str], None]) -> None:
    """Report a graph's parity; raise ParityError when it fails its precision's gate."""
    recipe = RECIPES[precision]
    say(
        f"{precision}: {graph.stat().st_size / 1e6:.1f} MB, "
        f"max |Δlogit| {parity.max_abs_logit_diff}, "
        f"agreement {parity.agreement}, accuracy Δ {parity.accuracy_delta}"
        + ("" if parity.verified else f" (UNVERIFIED: {parity.note})")
        # a GPU graph on a machine without CUDA is checked on the CPU provider: say which one it ran on
        + (f", {parity.note}" if parity.verified and recipe.gpu_graph else "")
    )
    if recipe.exceeds(parity.max_abs_logit_diff):
        raise ParityError(
            f"{precision} graph: max |Δlogit| {parity.max_abs_logit_diff:.2e} vs torch exceeds "
            f"{recipe.max_abs_diff:g} over {parity.n_samples} rows; nothing published"
        )
    if recipe.drops_accuracy(parity.accuracy_delta):
        say(
            f"[yellow]WARNING[/yellow] {precision} accuracy drops "
            f"{-(parity.accuracy_delta or 0.0) * 100:.1f} points vs torch"
        )


def _keep(version_dir: Path, graph: Path, precision: str, inputs: list[str], parity: Parity) -> ExportRecord:
    """Copy a checked graph into the version folder; return its manifest record."""
    rel = layout.graph_file(precision)
    target = version_dir / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(graph, target)
    return ExportRecord(
        precision=precision,
        path=rel,
        opset=graphs.graph_opset(graph),
        size_bytes=target.stat().st_size,
        inputs=inputs,
        parity=parity,
    )


def _graph_parity(graph: Path, precision: str, rows: _ParityRows) -> tuple[Parity, list[str]]:
    """Load with ORT, run the load-check batch, compare with torch (fp32) on the parity rows.

    fp16 graphs run on the CUDA provider where there is one, else on the CPU provider (slowly): their
    drift against the fp32 logits is then measured, not assumed.
    """
    providers = RECIPES[precision].providers()
    try:
        session = ort_session(graph, providers, rows.threads)
    except Exception as exc:  # onnxruntime raises its own untyped errors on a bad graph
        raise ExportError(f"{precision} graph does not load in onnxruntime: {exc}") from exc
    inputs = session_input_names(session)
    num_labels = rows.reference.shape[1]
    load_check(session, rows.tokenizer, rows.max_length_tokens, num_labels, f"{precision} graph")
    cmp = compare(rows.reference, ort_outputs(session, rows.batches), rows.gold, f"{precision} graph")
    ran_on = session.get_providers()[0]
    test: dict[str, Any] = {}
    if rows.test is not None:
        scores = rows.test.scores(ort_outputs(session, rows.test.batches))
        test = {
            "test_rows": scores["rows"],
            "test_accuracy": scores["accuracy"],
            "test_macro_f1": scores["macro_f1"],
        }
    parity = Parity(
        n_samples=cmp.n_samples,
        max_abs_logit_diff=cmp.max_abs_diff,
        agreement=cmp.agreement,
        accuracy_delta=cmp.accuracy_delta,
        verified=True,
        note=f"checked on {ran_on} against the fp32 torch logits of the validation rows",
        **test,
    )
    return parity, inputs


def _check_head_on_base(
    base_graphs: dict[str, str],
    kind: str,
    arrays: dict[str, np.ndarray],
    rows: _ParityRows,
    say: Callable[[str], None],
    key: str,
) -> tuple[dict[str, dict[str, Any]], dict[str, Comparison]]:
    """Serving's frozen path (base features, then the numpy head) must reproduce the torch logits.

    Checked in every exported precision of the base; only fp32 is a gate, the others are reported
    (fp16 on the CPU provider when this machine has no GPU). Returns, with test rows, each precision's
    test figures on that path (what serving answers for a frozen version), and each precision's
    comparison with torch on the validation rows, both keyed by precision.
    """
    served: dict[str, dict[str, Any]] = {}
    checks: dict[str, Comparison] = {}
    for folder, path in base_graphs.items():
        precision = layout.precision_of_folder(folder)
        try:
            session = ort_session(path, RECIPES[precision].providers(), rows.threads)
        except Exception as exc:  # onnxruntime raises its own untyped errors (NoSuchFile, InvalidProtobuf)
            raise ExportError(
                f"shared base encoder {key} {folder} ({path}) does not load in onnxruntime for the "
                f"{layout.HEAD_FILE} check: {type(exc).__name__}: {exc}; nothing published"
            ) from exc
        if rows.test is not None:
            served[precision] = rows.test.scores(
                apply_head(kind, arrays, ort_outputs(session, rows.test.batches))
            )
        logits = apply_head(kind, arrays, ort_outputs(session, rows.batches))
        cmp = compare(
            rows.reference, logits, rows.gold, f"{layout.HEAD_FILE} on the shared base encoder {key} {folder}"
        )
        checks[precision] = cmp
        say(
            f"frozen: {layout.HEAD_FILE} on the shared base encoder ({folder}), "
            f"max |Δlogit| {cmp.max_abs_diff:.2e}, agreement {cmp.agreement:.3f}"
        )
        recipe = RECIPES[precision]
        if precision == "fp32" and recipe.exceeds(cmp.max_abs_diff):
            raise ParityError(
                f"{layout.HEAD_FILE} applied to the shared base encoder's features differs from the torch "
                f"model by {cmp.max_abs_diff:.2e} > {recipe.max_abs_diff:g}: the frozen encoder is not the "
                "base; nothing published"
            )
    return served, checks


def _frozen_int8_guard(checks: dict[str, Comparison], rows: int) -> dict[str, Any] | None:
    """When the head loses more than FROZEN_INT8_MAX_DROP of validation accuracy on the int8 base against
    the fp32 base: what to record (the version's int8 then reads the fp32 base); None when the int8 base
    holds or either precision was not checked on labelled rows."""
    fp32, int8 = checks.get("fp32"), checks.get("int8")
    if fp32 is None or int8 is None or fp32.accuracy_delta is None or int8.accuracy_delta is None:
        return None
    drop = fp32.accuracy_delta - int8.accuracy_delta
    if drop <= FROZEN_INT8_MAX_DROP:
        return None
    labels = float((1.0 - int8.agreement) * rows)  # rows whose label the int8 base changes against torch
    return {
        "choice": (
            f"int8 reads the fp32 base: on the int8 base this head loses {drop * 100:.2f} points of "
            f"validation accuracy against the fp32 base (> {FROZEN_INT8_MAX_DROP * 100:.1f}; {rows} rows, "
            f"agreement with torch {int8.agreement:.3f})"
        ),
        "base_folder": "fp32",
        "validation_rows": rows,
        "int8_base_accuracy_drop": round(drop, 6),
        "int8_base_agreement": round(int8.agreement, 6),
        "int8_base_labels_changed": round(labels),
    }


def _served_test_summary(
    summary: dict[str, Any], served: dict[str, dict[str, Any]], say: Callable[[str], None]
) -> dict[str, Any]:
    """A frozen version's metrics.test with the served path's figures: serving runs the shared base
    encoder + the numpy head, not the version's own graphs, so `int8_delta_vs_fp32` is that path's (the
    own graphs' delta stays as `own_graphs_int8_delta_vs_fp32`) and `served` holds each precision's
    accuracy and macro-F1 on it."""
    out = dict(summary)
    if "int8_delta_vs_fp32" in out:
        out["own_graphs_int8_delta_vs_fp32"] = out.pop("int8_delta_vs_fp32")
    out["served"] = {
        p: {"accuracy": round(v["accuracy"], 6), "macro_f1": round(v["macro_f1"], 6)}
        for p, v in served.items()
    }
    if "int8" in served and "fp32" in served:
        out["int8_delta_vs_fp32"] = round(served["int8"]["accuracy"] - served["fp32"]["accuracy"], 6)
        say(
            "frozen, served path (shared base + head) on the test split: "
            + ", ".join(f"{p} {v['accuracy']:.4f}" for p, v in served.items())
            + f"; int8 - fp32 accuracy {out['int8_delta_vs_fp32'] * 100:+.2f} points"
        )
    return out


__all__ = ["DEFAULT_PARITY_ROWS", "DEFAULT_TEST_ROWS", "export_into", "parse_precisions"]
