"""Write a trained model into the model repository (and read one back for evaluation)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from model_repository import (
    BaseModelRef,
    Manifest,
    ModelRepository,
    RepositoryError,
    check_alias_name,
    layout,
)
from model_repository.repository import serving_problem

from .config import TrainConfig
from .data import HELD_OUT, held_out_record
from .errors import TrainingError
from .model import ResolvedBase, head_prefixes, resolve_base_model
from .trainer import TrainedModel, train

log = logging.getLogger(__name__)

PARITY_ROWS = 512
DEFAULT_EXPORT = ("fp32", "int8")
# Added to the default where this machine has a CUDA GPU: what GPU replicas load (precision fp16/auto).
GPU_EXPORT = "fp16"
# Table rank of the multi-adapter graph published beside LoRA versions; serving's lora_table_rank
# defaults to the same, so every adapter of rank <= 8 on a base shares one graph and one batch.
SHARED_TABLE_RANK = 8
# Inside weights/ (layout.WEIGHTS_DIR): training's own files, read back only by training.
HEAD_WEIGHTS_FILE = "head.safetensors"
ADAPTER_DIR = "adapter"


def export_available() -> bool:
    """Whether the ONNX export hook (training.export.export_into) is installed in this checkout."""
    if importlib.util.find_spec("training.export") is None:
        return False
    import training.export as export

    return hasattr(export, "export_into")


def default_precisions() -> list[str]:
    """The default export: fp32 and int8 (CPU replicas), and fp16 too where torch sees a CUDA GPU, so a
    version trained on a GPU machine has the graph GPU replicas load; elsewhere fp16 is asked for
    explicitly (`--export fp32,int8,fp16`, or `labelwise export -p fp16` for a published version)."""
    import torch

    return [*DEFAULT_EXPORT, GPU_EXPORT] if torch.cuda.is_available() else list(DEFAULT_EXPORT)


def save_weights(result: TrainedModel, folder: Path) -> int:
    """Save the strategy's weights (safetensors only) under folder; return their size in bytes.

    full: model.safetensors + config.json; frozen: head.safetensors (its metadata names the pooling)
    + config.json; lora: adapter/ (peft).

    A folder that holds an earlier run's weights (a run folder used again, `-o` the same twice) is emptied
    first: a frozen run saved beside a LoRA run's adapter/ reported both in its size and left a folder of
    two runs' weights.
    """
    from safetensors.torch import save_file

    if folder.is_dir():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    strategy = result.config.strategy
    model = result.model
    if strategy == "full":
        model.save_pretrained(folder, safe_serialization=True)
    elif strategy == "frozen":
        from .frozen import POOLING, POOLING_METADATA_KEY, head_state

        metadata = {"format": "pt", POOLING_METADATA_KEY: POOLING}
        save_file(head_state(model), str(folder / HEAD_WEIGHTS_FILE), metadata=metadata)
        model.config.save_pretrained(folder)
    else:
        model.save_pretrained(folder / ADAPTER_DIR, safe_serialization=True)
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors"))


def publish_run(
    result: TrainedModel,
    repository: ModelRepository,
    *,
    export_precisions: list[str] | str | None = "auto",
    alias: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Manifest:
    """Publish a trained model as the next version of its scenario, then point alias at it.

    An error before the version is sealed publishes nothing. An error pointing the alias (a version no
    replica can load, a failed write or base check) comes after it: RepositoryError saying that the
    version was published and how to promote it, so that a retry does not publish it twice.

    extra: free-form notes stored in the manifest's `extra` (e.g. the tune study summary).

    export_precisions: ONNX precisions to export through training.export.export_into before the
    version is sealed; "auto" means fp32 + int8 when the export hook is installed; None or []
    publishes torch weights only (such a version cannot be served by ONNX Runtime).
    """
    if alias:  # before the version is written: a bad alias name publishes nothing
        check_alias_name(alias)
    precisions = requested_precisions(export_precisions)
    scenario = result.config.scenario.name
    _refuse_collapsed(result)
    _warn_no_better_than_majority(result)
    with repository.new_version(scenario, **_manifest_fields(result, extra)) as draft:
        result.tokenizer.save_pretrained(draft.path / layout.TOKENIZER_DIR)
        save_weights(result, draft.path / layout.WEIGHTS_DIR)
        if precisions:
            draft.fields.update(_export_onnx(result, repository, draft.path, precisions))
    assert draft.manifest is not None
    version = draft.manifest.version
    log.info("published %s v%d to %s", scenario, version, repository.root)
    if alias:
        point_alias(repository, draft.manifest, alias)
    return draft.manifest


def point_alias(repository: ModelRepository, manifest: Manifest, alias: str) -> None:
    """Point alias at a version just published (`labelwise train --alias`), under the scenario's alias
    lock as `labelwise promote` takes it: a promote or rollback started before it is not overwritten by
    it. A failure is RepositoryError saying that the version was published and how to promote it, so
    that a retry does not publish the same run again."""
    scenario, version = manifest.scenario, manifest.version
    published = f"{scenario} v{version} was published; pointing {alias} at it failed"
    problem = serving_problem(manifest)
    if problem is not None:
        raise RepositoryError(f"{published}: {problem}")
    try:
        with repository.alias_lock(scenario):
            repository.set_alias(scenario, alias, version)
    except Exception as exc:
        raise RepositoryError(
            f"{published}: {type(exc).__name__}: {exc} (run `labelwise promote --scenario {scenario} "
            f"--version {version} --alias {alias}` to retry)"
        ) from exc


def _refuse_collapsed(result: TrainedModel) -> None:
    """A run that diverged to a constant answer at every rate it tried answers no better than the majority
    label: publishing it would replace a serving version with one that ignores its input."""
    metrics = result.metrics
    if not metrics.get("collapsed"):
        return
    from .errors import CollapsedRunError
    from .trainer import learning_rates_tried

    tried = learning_rates_tried(result)
    raise CollapsedRunError(
        f"refusing to publish {result.config.scenario.name}/{result.config.strategy}: the run collapsed at "
        f"every learning rate tried ({', '.join(f'{lr:g}' for lr in tried)}): its training loss climbed "
        f"back and its validation macro-F1 {metrics['macro_f1']:.3f} is no better than always answering "
        f"{metrics.get('majority_label')!r} ({metrics.get('majority_macro_f1', 0.0):.3f}); train it at a "
        "lower learning_rate or with a longer warmup_ratio"
    )


def _warn_no_better_than_majority(result: TrainedModel) -> None:
    """A run whose validation macro-F1 is no better than always answering the majority label, without the
    climbing loss that makes it a collapse, is published (a small or hard dataset may be at that bar) with
    a warning: such a version may ignore its input."""
    from .trainer import no_better_than_majority

    metrics = result.metrics
    f1, majority = metrics.get("macro_f1"), metrics.get("majority_macro_f1")
    if not isinstance(f1, int | float) or not isinstance(majority, int | float):
        return
    if no_better_than_majority(f1, majority):
        log.warning(
            "%s/%s: validation macro-F1 %.3f is no better than always answering %r (%.3f): published, but "
            "the version may ignore its input; look at its confusion matrix and learning curve before "
            "promoting it",
            result.config.scenario.name,
            result.config.strategy,
            f1,
            metrics.get("majority_label"),
            majority,
        )


def requested_precisions(export_precisions: list[str] | str | None) -> list[str]:
    """The precisions to export, from "auto", "fp32,int8", a list or None; the export hook must be there.

    Decided by training.export.precisions.parse_precisions: unknown names raise, fp16 alone gets fp32."""
    if export_precisions == "auto":
        return default_precisions() if export_available() else []
    if isinstance(export_precisions, str):
        export_precisions = [p.strip() for p in export_precisions.split(",") if p.strip()]
    if not export_precisions:
        return []
    if not export_available():
        raise TrainingError(
            "ONNX export was requested but training.export.export_into is not available in this checkout; "
            "publish with --export none"
        )
    from training.export.precisions import parse_precisions

    # checked and completed as a re-export's are: fp16 alone gets fp32 too (a version no CPU replica loads)
    return parse_precisions(export_precisions)


def _base_ref(result: TrainedModel) -> BaseModelRef:
    base = result.base
    return BaseModelRef(
        id=base.id, revision=base.revision, content_hash=base.content_hash, architecture=base.architecture
    )


def _manifest_fields(result: TrainedModel, extra: dict[str, Any] | None) -> dict[str, Any]:
    """What the manifest says about the run: strategy, base, labels, metrics, the training config."""
    config = result.config
    fields: dict[str, Any] = {
        "strategy": config.strategy,
        "base_model": _base_ref(result),
        "labels": result.labels,
        "max_length_tokens": config.scenario.max_length_tokens,
        "text_normalization": config.scenario.cleaning,
        "metrics": _run_metrics(result),
        "trainable_params": result.trainable_params,
        "total_params": result.total_params,
        "train_time_s": round(result.train_time_s, 3),
        "training_config": json.loads(config.model_dump_json()),
    }
    if extra:
        fields["extra"] = extra
    return fields


def _run_metrics(result: TrainedModel) -> dict[str, Any]:
    """The run's validation metrics, and what identifies the rows it held out and validated on
    (`held_out`: `labelwise evaluate --split` checks that it carves the same rows again)."""
    return {**result.metrics, HELD_OUT: held_out_record(result.config, result.data)}


def _export_onnx(
    result: TrainedModel, repository: ModelRepository, version_dir: Path, precisions: list[str]
) -> dict[str, Any]:
    """ONNX graphs (+ head, base encoder) into the draft, parity-checked on validation rows; their fields."""
    from training.export import export_into

    config = result.config
    test = result.data.test  # the scenario's held-out split: each graph's test figures go in the manifest
    fields = export_into(
        version_dir,
        model=result.model,
        tokenizer=result.tokenizer,
        strategy=config.strategy,
        base_model=_base_ref(result),
        base_model_path=str(result.base.path),
        precisions=precisions,
        # every validation row: the export draws its seeded sample of PARITY_ROWS from them (a file sorted
        # by label would give the first rows of one or two classes only)
        parity_texts=result.data.validation.texts,
        parity_labels=result.data.validation.label_ids,
        parity_rows=PARITY_ROWS,
        max_length_tokens=config.scenario.max_length_tokens,
        repository=repository,
        test_texts=test.texts if test else None,
        test_labels=test.label_ids if test else None,
        int8_guard=config.scenario.int8_guard,
    )
    if "metrics" in fields:  # metrics.test, beside the run's validation metrics
        fields["metrics"] = {**_run_metrics(result), **fields["metrics"]}
    if config.strategy == "lora" and (version_dir / layout.LORA_FILE).is_file():
        head_kind = (fields.get("head") or {}).get("kind")
        # The base as training named it (a hub id resolves through the cache to the same key): its local
        # folder would resolve as a plain folder, to a key no version names.
        export_shared_graph(repository, config.base_model, config.params.lora_r, precisions, head_kind)
    return fields


def export_shared_graph(
    repository: ModelRepository,
    base_path: str | Path,
    lora_r: int,
    precisions: list[str],
    head_kind: str | None = None,
    say: Callable[[str], None] = log.info,
) -> None:
    """Export the base's multi-adapter graph (lora_mode: shared) unless it exists, so serving needs no torch.
    `say` hears where each precision's graph was exported (or that it was there and is reused).

    The graph adapts the architecture's default target modules (every linear projection of a BERT-like
    layer): one graph per base serves every adapter whose targets are among them (query/value only
    included); an adapter on others is refused by shared serving and keeps its merged graph. An
    unsupported architecture, a graph exported earlier on fewer targets, or a repository error on the
    graph (a store error, a claim whose writer died) only logs: the version is still served by its merged
    graph (lora_mode: merged).
    """
    from training.export.precisions import MULTI_ADAPTER_PRECISIONS
    from training.multi_adapter import MultiAdapterError, export_multi_adapter_base

    wanted = [p for p in precisions if p in MULTI_ADAPTER_PRECISIONS]
    if not wanted:
        return
    try:
        export_multi_adapter_base(
            repository,
            base_path,
            rank=max(SHARED_TABLE_RANK, lora_r),
            precisions=wanted,
            say=say,
            head_kind=head_kind,
        )
    except MultiAdapterError as exc:
        log.warning("no multi-adapter graph for %s: %s (lora_mode: shared will refuse it)", base_path, exc)
    except RepositoryError as exc:
        # The store, or a claim whose writer died (its graph never came): the version itself is sealed or
        # about to be, and lora_mode merged serves it; only the shared graph is missing.
        log.warning(
            "no multi-adapter graph for %s: %s: %s. lora_mode: merged serves the version; lora_mode: shared "
            "refuses versions on this base until the graph is exported: once the store answers, or a stale "
            "claim under %s/<key>/%s/ (its writer gone) is deleted, re-export a LoRA version on this base "
            "(`labelwise export`)",
            base_path,
            type(exc).__name__,
            exc,
            layout.BASES_DIR,
            layout.CLAIMS_DIR,
        )


def train_and_publish(
    config: TrainConfig,
    repository: ModelRepository,
    *,
    export_precisions: list[str] | str | None = "auto",
    alias: str | None = None,
) -> Manifest:
    """Train one scenario and publish it; returns the published manifest.

    Example::

        from model_repository import ModelRepository
        from training import custom_scenario, make_train_config, train_and_publish

        scenario = custom_scenario("tickets", ["billing", "bug", "other"], "data/tickets")
        config = make_train_config(scenario, "lora", base_model="minilm", num_train_epochs=2)
        manifest = train_and_publish(config, ModelRepository("var/model-repository"), alias="production")
    """
    if alias:  # before training: a bad alias name costs no run
        check_alias_name(alias)
    return publish_run(train(config), repository, export_precisions=export_precisions, alias=alias)


def local_base(manifest: Manifest, who: str) -> ResolvedBase:
    """The version's base encoder on this machine (a local folder, the packaged MiniLM or the offline
    cache; never a download), refused when its weights differ from the ones the version was trained on."""
    base = resolve_base_model(manifest.base_model.id)
    if manifest.base_model.content_hash and base.content_hash != manifest.base_model.content_hash:
        raise TrainingError(
            f"{who} was trained on base {manifest.base_model.id} with content hash "
            f"{manifest.base_model.content_hash[:12]}, but {base.path} hashes to "
            f"{str(base.content_hash)[:12]}"
        )
    return base


def load_published_model(
    repository: ModelRepository, scenario: str, ref: str | int = "latest"
) -> tuple[Any, Any, Manifest]:
    """(torch model in eval mode, tokenizer, manifest) of a published version, checksums verified first."""
    version = repository.resolve(scenario, ref)
    manifest = repository.verify(scenario, version)
    who = f"{scenario} v{version}"
    base_path = None if manifest.strategy == "full" else local_base(manifest, who).path
    model, tokenizer = load_version_model(
        repository.version_path(scenario, version), manifest, base_path, who
    )
    return model, tokenizer, manifest


def load_version_model(folder: Path, manifest: Manifest, base_path: Path | None, who: str) -> tuple[Any, Any]:
    """(torch model in eval mode, tokenizer) rebuilt from a version folder's own files; base_path: its base
    encoder on this machine (local_base), None for a full fine-tune. Frozen heads: mean-pooled, or on the
    encoder's pooler / first token as published before mean pooling (keys with or without `classifier.`)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder / layout.TOKENIZER_DIR))
    weights = folder / layout.WEIGHTS_DIR
    if manifest.strategy == "full":
        return AutoModelForSequenceClassification.from_pretrained(str(weights)).eval(), tokenizer
    if manifest.strategy == "frozen":
        from .frozen import load_mean_pooling_model

        mean_model = load_mean_pooling_model(weights / HEAD_WEIGHTS_FILE, base_path, manifest.labels, who)
        if mean_model is not None:
            return mean_model.eval(), tokenizer
    labels = manifest.labels
    with _quiet_transformers():  # the head is loaded below: "newly initialized ... TRAIN" is wrong here
        model, info = AutoModelForSequenceClassification.from_pretrained(
            str(base_path),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={n: i for i, n in enumerate(labels)},
            output_loading_info=True,
        )
    # A base saved from a masked-LM model has no pooler weights, so transformers drew one at random just
    # now. A head that reads the pooler needs the one it was trained with: a LoRA version published since
    # build_model trains and saves it (modules_to_save); an older one, or a frozen head from before mean
    # pooling, would score with another random pooler on every load, so it is refused.
    random_pooler = any("pooler" in k.split(".") for k in info["missing_keys"])
    if manifest.strategy == "frozen":
        from safetensors.torch import load_file

        head = load_file(str(weights / HEAD_WEIGHTS_FILE))
        prefix = "" if any(k.split(".")[0] in head_prefixes(model) for k in head) else "classifier."
        missing, unexpected = model.load_state_dict({prefix + k: v for k, v in head.items()}, strict=False)
        if unexpected or any(k.split(".")[0] in head_prefixes(model) for k in missing):
            raise TrainingError(f"{who}: {HEAD_WEIGHTS_FILE} does not match the base architecture")
        if random_pooler and any("pooler" in k.split(".") for k in missing):  # the head brought none
            raise _random_pooler_error(who, base_path)
    else:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(weights / ADAPTER_DIR))
        saved = {str(m).split(".")[-1] for m in (model.peft_config["default"].modules_to_save or ())}
        if random_pooler and "pooler" not in saved:
            raise _random_pooler_error(who, base_path)
    return model.eval(), tokenizer


def _random_pooler_error(who: str, base_path: Path | None) -> TrainingError:
    return TrainingError(
        f"{who}: its head reads the encoder's pooler, but base {base_path} has no pooler weights "
        "(saved from a masked-LM model) and this version, published before LoRA trained the pooler with "
        "its head, did not save one: reloading it would draw a random pooler, not the one it was trained "
        "with; its published ONNX graphs still serve as exported, and a version retrained now saves it"
    )


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' warnings off for one call (errors still shown)."""
    from transformers import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
