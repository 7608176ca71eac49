"""One training run: data -> model -> HF Trainer (weighted loss, early stopping on macro-F1) -> metrics."""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import TrainConfig
from .data import LabeledTexts, PreparedData, prepare_data
from .errors import ScenarioConfigError
from .metrics import (
    class_weights,
    classification_metrics,
    decision_threshold,
    epoch_summary,
    imbalance_ratio,
    selection_score,
    softmax,
    use_class_weights,
)
from .model import ResolvedBase, build_model, count_params, resolve_base_model
from .plots import plot_confusion_matrix, plot_label_distribution

log = logging.getLogger(__name__)

# A run that diverges (its training loss fell, then climbed back) and ends no better than always answering
# the most frequent label has collapsed: it is trained again from the start at a lower learning rate, up to
# MAX_COLLAPSE_RESTARTS times. Seen on spam LoRA at 4,000 rows and lr 1e-3: loss 0.19 at step 80, back to
# ln 2 (the class-weighted loss of a constant answer) once the warm-up reached the full rate, never recovered.
MAX_COLLAPSE_RESTARTS = 2
COLLAPSE_LR_FACTOR = 0.5
COLLAPSE_LOSS_RISE = 1.6  # the latest losses this many times the lowest one so far: the loss climbed back
COLLAPSE_F1_MARGIN = 0.01  # validation macro-F1 within this of the majority answer's counts as no better


@dataclass
class TrainedModel:
    """What a run produced: the model in memory, its tokenizer, and the figures to publish."""

    config: TrainConfig
    model: Any
    tokenizer: Any
    base: ResolvedBase
    data: PreparedData
    metrics: dict[str, Any]
    trainable_params: int
    total_params: int
    train_time_s: float
    class_weights: list[float] | None
    log_history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return self.data.labels

    def train_losses(self) -> list[float]:
        return [float(e["loss"]) for e in self.log_history if "loss" in e]


def tokenize(texts: LabeledTexts, tokenizer: Any, max_length_tokens: int) -> Any:
    """A torch-ready dataset; no padding here: the collator pads each batch to its longest row."""
    import datasets

    ds = datasets.Dataset.from_dict({"text": texts.texts, "labels": texts.label_ids})
    return ds.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length_tokens),
        batched=True,
        remove_columns=["text"],
        desc="tokenizing",
        keep_in_memory=True,
    )


def _trainer_class() -> type:
    import torch
    from transformers import Trainer

    class ScenarioTrainer(Trainer):
        """Trainer with class-weighted cross-entropy and optional class-balanced sampling."""

        def __init__(
            self,
            *args: Any,
            loss_weights: list[float] | None = None,
            sample_weights: list[float] | None = None,
            adversarial: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> None:
            super().__init__(*args, **kwargs)
            self._loss_weights = torch.tensor(loss_weights, dtype=torch.float32) if loss_weights else None
            self._sample_weights = sample_weights
            self._adversarial = adversarial

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
            # Adversarial steps only while training: evaluation and prediction see the plain model.
            if self._adversarial and model.training and not return_outputs and torch.is_grad_enabled():
                from .adversarial import adversarial_loss

                return adversarial_loss(
                    lambda: self._plain_loss(model, dict(inputs), False, num_items_in_batch),
                    model,
                    **self._adversarial,
                )
            return self._plain_loss(model, inputs, return_outputs, num_items_in_batch)

        def _plain_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
            if self._loss_weights is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            logits = outputs.logits.float()
            loss = torch.nn.functional.cross_entropy(
                logits, labels, weight=self._loss_weights.to(logits.device)
            )
            return (loss, outputs) if return_outputs else loss

        def _get_train_sampler(self, train_dataset=None):  # type: ignore[override]
            if self._sample_weights is None:
                return super()._get_train_sampler(train_dataset)
            generator = torch.Generator().manual_seed(self.args.seed)
            return torch.utils.data.WeightedRandomSampler(
                self._sample_weights,
                num_samples=len(self._sample_weights),
                replacement=True,
                generator=generator,
            )

    return ScenarioTrainer


def _precision_flags(mode: str) -> dict[str, bool]:
    import torch

    if not torch.cuda.is_available() or mode == "fp32":
        return {"use_cpu": not torch.cuda.is_available()}
    if mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported()):
        return {"bf16": True}
    return {"fp16": True}


def load_tokenizer(base: ResolvedBase) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base.path), use_fast=True)
    if not tokenizer.is_fast:
        from .errors import BaseModelNotFoundError

        raise BaseModelNotFoundError(
            f"base model {base.id}: no fast tokenizer (tokenizer.json) to serve with"
        )
    # As serving cuts and pads (serving/engine/tokenize.py: the end of a long text is dropped, padding goes
    # after the tokens): a base whose tokenizer_config says "left" trained and scored on other ids than a
    # replica reads. The version's saved tokenizer records "right" too.
    tokenizer.truncation_side = "right"
    tokenizer.padding_side = "right"
    return tokenizer


# Encoders whose position ids start at the padding index + 1 (create_position_ids_from_input_ids).
ROBERTA_POSITIONS = frozenset(
    {"roberta", "xlm-roberta", "camembert", "mpnet", "data2vec-text", "roberta-prelayernorm", "xmod", "ibert",
     "luke", "longformer", "xlm-roberta-xl"}
)  # fmt: skip


def _check_max_length(config: TrainConfig, base: ResolvedBase, tokenizer: Any) -> None:
    """Refuse a max_length_tokens past the base's position table before any step: a longer row broke
    the first evaluation (full, lora) or the head (frozen) with a tensor-size error."""
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(str(base.path))
    positions = getattr(hf, "max_position_embeddings", None)
    if not positions:
        return
    # RoBERTa-type position ids start past the padding index: 514 slots hold 512 tokens (MPNet's too).
    roberta_type = hf.model_type in ROBERTA_POSITIONS
    offset = int(hf.pad_token_id or 0) + 1 if roberta_type else 0
    limit = positions - offset
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < limit:
        limit = model_max
    if config.scenario.max_length_tokens > limit:
        raise ScenarioConfigError(
            f"max_length_tokens {config.scenario.max_length_tokens} is more than base model {base.id} reads "
            f"({limit} tokens): set --max-length {limit} or less"
        )


def train(
    config: TrainConfig,
    *,
    extra_callbacks: list[Any] | None = None,
    collapse_restarts: int = MAX_COLLAPSE_RESTARTS,
) -> TrainedModel:
    """Run one training: every input check happens before the first step; metrics are on validation.

    extra_callbacks: extra transformers TrainerCallbacks (the tuner's pruning reporter).
    collapse_restarts: how many times a collapsed full or LoRA run is trained again at half the rate
    (0: never; a tuning trial is scored as it ran, so that the search sees a rate that collapses).
    """
    from transformers import set_seed

    if config.strategy == "frozen" and config.adversarial != "none":
        from .errors import StrategyError

        raise StrategyError(
            f"adversarial {config.adversarial} perturbs the encoder's input on every step; the frozen "
            "strategy trains its head on embeddings computed once, so it takes no adversarial training "
            "(use --strategy lora or full)"
        )
    data = prepare_data(config)
    base = resolve_base_model(config.base_model)
    set_seed(config.seed)
    tokenizer = load_tokenizer(base)
    _check_max_length(config, base, tokenizer)
    model = _build_model(config, base, data.labels)
    trainable, total = count_params(model)
    out = _start_run_folder(config, data)
    balance = _class_balance(config, data)
    _log_start(config, base, data, balance, trainable, total)
    job = _Job(config, model, tokenizer, data, balance, out, extra_callbacks, base, collapse_restarts)
    fitted = _train_frozen(job) if config.strategy == "frozen" else _train_with_trainer(job)
    result = TrainedModel(
        config=fitted.config or config,
        model=fitted.model,
        tokenizer=tokenizer,
        base=base,
        data=data,
        metrics=fitted.metrics,
        trainable_params=trainable,
        total_params=total,
        train_time_s=fitted.train_time_s,
        class_weights=balance.loss_weights,
        log_history=fitted.log_history,
    )
    _finish_run_folder(result, out)
    return result


@dataclass
class _Job:
    """What a strategy's training loop starts from."""

    config: TrainConfig
    model: Any
    tokenizer: Any
    data: PreparedData
    balance: _ClassBalance
    out: Path
    extra_callbacks: list[Any] | None
    base: ResolvedBase | None = None  # what a collapse restart rebuilds the model from
    collapse_restarts: int = 0


@dataclass
class _Fitted:
    """What a strategy's training loop hands back to train()."""

    model: Any
    metrics: dict[str, Any]
    train_time_s: float
    log_history: list[dict[str, Any]]
    config: TrainConfig | None = None  # the settings the kept run trained with, when they differ


def majority_macro_f1(data: PreparedData) -> tuple[str, float]:
    """The most frequent train label, and the validation macro-F1 of always answering it."""
    counts = data.train_counts()
    top = int(np.argmax(counts))
    gold = np.asarray(data.validation.label_ids)
    return data.labels[top], classification_metrics(gold, np.full_like(gold, top), data.labels)["macro_f1"]


def loss_climbed_back(log_history: list[dict[str, Any]]) -> bool:
    """Whether the logged training loss fell and then climbed back (the mean of the last three logged
    losses COLLAPSE_LOSS_RISE times the lowest before them): a diverged run, not a slow one."""
    losses = [float(e["loss"]) for e in log_history if "loss" in e]
    if len(losses) < 4:
        return False
    recent = float(np.mean(losses[-3:]))
    return min(losses[:-3]) * COLLAPSE_LOSS_RISE < recent


def no_better_than_majority(macro_f1: float, majority_f1: float) -> bool:
    """Validation macro-F1 within COLLAPSE_F1_MARGIN of always answering the majority label, or below it."""
    return macro_f1 <= majority_f1 + COLLAPSE_F1_MARGIN


def has_collapsed(macro_f1: float, majority_f1: float, log_history: list[dict[str, Any]]) -> bool:
    """A collapsed run: validation macro-F1 no better than the majority answer's and a loss that climbed
    back (see MAX_COLLAPSE_RESTARTS)."""
    return no_better_than_majority(macro_f1, majority_f1) and loss_climbed_back(log_history)


def learning_rates_tried(result: TrainedModel) -> list[float]:
    """The learning rate of every collapsed attempt of a run, then the rate of the run kept."""
    tried = [r["learning_rate"] for r in result.metrics.get("collapse_restarts", [])]
    return [*tried, result.config.params.learning_rate]


def _collapse_watch(majority_f1: float) -> Any:
    """A TrainerCallback that stops a run at the first evaluation where it has collapsed (its loss
    climbed back and validation macro-F1 is no better than the majority answer's): the rest of the
    planned steps would not bring it back, and the restart needs the time."""
    from transformers import TrainerCallback

    class CollapseWatch(TrainerCallback):
        def __init__(self) -> None:
            self.collapsed_at: dict[str, float] | None = None

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # type: ignore[no-untyped-def]
            f1 = (metrics or {}).get("eval_macro_f1")
            if f1 is None or not has_collapsed(f1, majority_f1, state.log_history):
                return control
            self.collapsed_at = {"step": state.global_step, "epoch": float(state.epoch or 0), "macro_f1": f1}
            control.should_training_stop = True
            return control

    return CollapseWatch()


def _score_last_step() -> Any:
    """With evaluation every eval_steps, the steps after the last multiple were trained and never scored,
    so the best checkpoint could never be the run's end (transformers saves the last step without
    evaluating it): the last step is evaluated and saved too, as a candidate like the others."""
    from transformers import TrainerCallback

    class ScoreLastStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            if state.max_steps > 0 and state.global_step >= state.max_steps:
                control.should_evaluate = True
                control.should_save = True
            return control

    return ScoreLastStep()


def _early_stopping(patience: int, majority_f1: float | None) -> Any:
    """Stop after `patience` evaluations without a better validation macro-F1, counting only from the first
    evaluation that beats always answering the majority label (majority_f1 + COLLAPSE_F1_MARGIN): a LoRA
    run often sits on that answer for an epoch or more before it starts to learn (sentiment, 1,000 rows:
    0.20 after epoch 1, 0.65 after epoch 2; with FGM it sat there for 4 epochs and the patience of 3 ended
    it). The planned epochs still bound such a run; a run whose loss climbed back is _collapse_watch's."""
    from transformers import TrainerCallback

    floor = -math.inf if majority_f1 is None else majority_f1 + COLLAPSE_F1_MARGIN

    class EarlyStopping(TrainerCallback):
        def __init__(self) -> None:
            self.best: float | None = None
            self.waited = 0

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # type: ignore[no-untyped-def]
            metrics = metrics or {}
            f1 = metrics.get("eval_macro_f1")
            if f1 is None:
                return control
            # Better: a higher selection score (macro-F1, then lower loss), as the kept checkpoint is chosen
            score = metrics.get("eval_selection", f1)
            if self.best is None or score > self.best:
                self.best, self.waited = score, 0
            elif self.best > floor:
                self.waited += 1
                if self.waited >= patience:
                    control.should_training_stop = True
            return control

    return EarlyStopping()


def _lowered(config: TrainConfig) -> TrainConfig:
    """The run's config with every learning rate times COLLAPSE_LR_FACTOR."""
    params = config.params
    update: dict[str, Any] = {"learning_rate": params.learning_rate * COLLAPSE_LR_FACTOR}
    if params.head_learning_rate:
        update["head_learning_rate"] = params.head_learning_rate * COLLAPSE_LR_FACTOR
    return config.model_copy(update={"params": params.model_copy(update=update)})


def _train_with_trainer(job: _Job) -> _Fitted:
    """Full and LoRA: the transformers Trainer, early stopping on validation macro-F1; a collapsed run
    (see MAX_COLLAPSE_RESTARTS) is trained again from the base weights at a lower learning rate."""
    from transformers import set_seed

    config, tokenizer, data, balance = job.config, job.tokenizer, job.data, job.balance
    max_len = config.scenario.max_length_tokens
    train_ds = tokenize(data.train, tokenizer, max_len)
    val_ds = tokenize(data.validation, tokenizer, max_len)
    majority_label, majority_f1 = majority_macro_f1(data)
    model, restarts, spent = job.model, [], 0.0
    while True:
        watch = _collapse_watch(majority_f1)
        trainer = _make_trainer(
            config,
            model,
            tokenizer,
            data.labels,
            train_ds,
            val_ds,
            balance,
            job.out,
            [*(job.extra_callbacks or []), watch],
            majority_f1,
        )
        started = time.perf_counter()
        trainer.train()
        spent += time.perf_counter() - started
        metrics = _validation_metrics(trainer, val_ds, data, balance.weighted)
        # Judged on the kept (best, reloaded) checkpoint: a run whose best checkpoint learned and that only
        # diverged later is not collapsed; the watch merely stopped it early, and its good model is kept.
        collapsed = has_collapsed(metrics["macro_f1"], majority_f1, trainer.state.log_history)
        if watch.collapsed_at is not None and not collapsed:
            log.info(
                "%s/%s diverged at step %d (validation macro-F1 %.3f) and was stopped there; its best "
                "checkpoint (validation macro-F1 %.3f) is kept",
                config.scenario.name,
                config.strategy,
                watch.collapsed_at["step"],
                watch.collapsed_at["macro_f1"],
                metrics["macro_f1"],
            )
        if not collapsed or len(restarts) >= job.collapse_restarts or job.base is None:
            break
        at = watch.collapsed_at or {
            "step": trainer.state.global_step,
            "epoch": float(trainer.state.epoch or 0),
        }
        restarts.append(
            {
                "learning_rate": config.params.learning_rate,
                "stopped_at_step": at["step"],
                "epoch": at["epoch"],
            }
        )
        config = _lowered(config)
        log.warning(
            "%s/%s collapsed at lr %g: its training loss climbed back and validation macro-F1 %.3f is no "
            "better than always answering %r (%.3f); stopped at step %d, training again from the base "
            "weights at lr %g (restart %d of %d)",
            config.scenario.name,
            config.strategy,
            restarts[-1]["learning_rate"],
            metrics["macro_f1"],
            majority_label,
            majority_f1,
            at["step"],
            config.params.learning_rate,
            len(restarts),
            job.collapse_restarts,
        )
        del trainer
        shutil.rmtree(job.out / "checkpoints", ignore_errors=True)
        set_seed(config.seed)
        model = _build_model(config, job.base, data.labels)
    if restarts:
        metrics["collapse_restarts"] = restarts
    if collapsed:
        metrics["collapsed"] = True
        log.warning(
            "%s/%s is still collapsed at lr %g: validation macro-F1 %.3f, always answering %r scores %.3f",
            config.scenario.name,
            config.strategy,
            config.params.learning_rate,
            metrics["macro_f1"],
            majority_label,
            majority_f1,
        )
    trainer.model.eval()
    return _Fitted(trainer.model, metrics, spent, list(trainer.state.log_history), config)


def _train_frozen(job: _Job) -> _Fitted:
    """Frozen: embed the rows once, train the head on the embeddings (training/frozen.py), no Trainer."""
    from .frozen import train_frozen

    balance = job.balance
    run = train_frozen(
        job.model,
        job.tokenizer,
        job.data,
        job.config,
        balance.loss_weights,
        balance.sample_weights,
        job.extra_callbacks,
    )
    metrics = _metrics_from_logits(run.fit.val_logits, job.data, balance.weighted, run.fit.eval_loss)
    metrics["head_epochs"] = run.fit.epochs_run
    metrics["head_best_epoch"] = run.fit.best_epoch
    metrics["embed_time_s"] = round(run.embed_time_s, 3)
    _write_tensorboard(job.out, run.fit.log_history)
    return _Fitted(run.model, metrics, run.train_time_s, run.fit.log_history)


def _write_tensorboard(out: Path, history: list[dict[str, Any]]) -> None:
    """The head's logged losses and validation figures, where and as the Trainer would write its own.

    The x-axis is the head's optimizer step, as the Trainer's is its global_step for full and lora (both
    count batches of batch_size), so the strategies' curves line up; int(epoch) put a fractional last
    epoch on the same x as the whole one before it. The epoch is a train/epoch scalar, as the Trainer's.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional for the frozen path: the figures are in metrics.json
        return
    with SummaryWriter(str(out / "tensorboard")) as writer:
        for entry in history:
            for name, value in entry.items():
                # the evaluation repeats its step's epoch: train/epoch gets one point a step
                if name == "step" or (name == "epoch" and "loss" not in entry):
                    continue
                tag = f"eval/{name[5:]}" if name.startswith("eval_") else f"train/{name}"
                writer.add_scalar(tag, value, int(entry["step"]))


def _build_model(config: TrainConfig, base: ResolvedBase, labels: list[str]) -> Any:
    params = config.params
    return build_model(
        base,
        config.strategy,
        labels,
        lora_r=params.lora_r,
        lora_alpha=params.lora_alpha,
        lora_dropout=params.lora_dropout,
        lora_target_modules=params.lora_target_modules,
        lora_train_pooler=params.lora_train_pooler,
        qlora=config.qlora,
        seed=config.seed,
    )


# Folders of a run folder that a run deletes with what is in them: the earlier run's weights/ and
# tensorboard/ (_start_run_folder), checkpoints/ (_finish_run_folder), weights/ again when they are saved
# there (publish.save_weights). `labelwise train` refuses a model repository inside one of them.
_STALE_RUN_FOLDERS = ("weights", "tensorboard")
RUN_FOLDER_CLEARED = (*_STALE_RUN_FOLDERS, "checkpoints")


def _start_run_folder(config: TrainConfig, data: PreparedData) -> Path:
    """The run's output folder, with the config it ran with and the label distribution figure.

    A folder used before (`-o` the same again) loses the earlier run's results first: a run interrupted
    there left the earlier metrics.json, confusion matrix and weights/ beside its own train_config.json,
    and TensorBoard drew both runs' events as one curve."""
    out = Path(config.output_dir)
    for stale in ("metrics.json", "confusion_matrix.png"):
        (out / stale).unlink(missing_ok=True)
    for stale in _STALE_RUN_FOLDERS:
        shutil.rmtree(out / stale, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(config.model_dump_json(indent=2))
    val_counts = np.bincount(data.validation.label_ids, minlength=len(data.labels)).tolist()
    plot_label_distribution(
        {"train": data.train_counts(), "validation": val_counts}, data.labels, out / "label_distribution.png"
    )
    return out


@dataclass(frozen=True)
class _ClassBalance:
    """How an imbalanced training set is evened out: loss weights per class, sampling weights per row."""

    weighted: bool
    loss_weights: list[float] | None
    sample_weights: list[float] | None


def _class_balance(config: TrainConfig, data: PreparedData) -> _ClassBalance:
    """Loss weights (class_weighting) or class-balanced sampling (weighted_sampling), not both by default:
    sampling already gives each class an equal share of the batches, and weighting the loss as well by
    1/count turned the imbalance around (spam, 2,000 rows: sampled 50/50, weighted 0.58 / 3.73, so the
    minority class carried 87 % of the loss). With weighted sampling `auto` weighting is off; `on` still
    weights, as asked, with a warning."""
    counts = data.train_counts()
    scenario = config.scenario
    if scenario.weighted_sampling and scenario.class_weighting == "auto":
        weighted = False
    else:
        weighted = use_class_weights(scenario.class_weighting, counts, scenario.imbalance_ratio)
    if weighted and scenario.weighted_sampling:
        log.warning(
            "class_weighting on with weighted_sampling: the loss is weighted by 1/count on batches that are "
            "already class-balanced, which favours the rare classes twice over"
        )
    sample_weights = None
    if scenario.weighted_sampling:
        per_class = [1.0 / c if c else 0.0 for c in counts]
        sample_weights = [per_class[i] for i in data.train.label_ids]
    return _ClassBalance(weighted, class_weights(counts) if weighted else None, sample_weights)


def _log_start(
    config: TrainConfig,
    base: ResolvedBase,
    data: PreparedData,
    balance: _ClassBalance,
    trainable: int,
    total: int,
) -> None:
    log.info(
        "%s/%s on %s: %d train, %d validation rows, %d labels, imbalance %.1f, class weights %s, "
        "trainable %d of %d params",
        config.scenario.name,
        config.strategy,
        base.id,
        len(data.train),
        len(data.validation),
        len(data.labels),
        imbalance_ratio(data.train_counts()),
        "on" if balance.weighted else "off",
        trainable,
        total,
    )


def planned_epochs(params: Any, train_rows: int) -> float:
    """num_train_epochs, raised so that the run makes at least min_train_steps optimizer steps (a small
    train set needs more passes to converge), never above max_train_epochs."""
    epochs = float(params.num_train_epochs)
    if params.min_train_steps:
        steps_per_epoch = max(1, math.ceil(train_rows / params.batch_size))
        epochs = max(epochs, min(params.max_train_epochs, params.min_train_steps / steps_per_epoch))
    return round(epochs, 2)


def head_optimizer(model: Any, params: Any) -> Any:
    """AdamW with the classification head at head_learning_rate and everything else at learning_rate;
    no weight decay on biases and LayerNorm weights (as the Trainer's own optimizer). A LoRA run's pooler,
    when it trains (lora_train_pooler, or a checkpoint without pooler weights), trains with the head: at
    head_learning_rate too."""
    import torch

    from .model import head_prefixes

    inner = getattr(model, "base_model", model) if hasattr(model, "peft_config") else model
    inner = getattr(inner, "model", inner) if hasattr(model, "peft_config") else inner
    heads = tuple(head_prefixes(inner))
    groups: dict[tuple[bool, bool], list[Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        parts = name.split(".")
        # A peft model names the head base_model.model.classifier.modules_to_save.default.weight, and a
        # pooler trained in full with it base_model.model.bert.pooler.modules_to_save.default.dense.weight
        # (build_model's modules_to_save: the head and that pooler).
        with_head = any(p in heads for p in parts[:4]) or "modules_to_save" in parts
        is_head = with_head and not any("lora_" in p for p in parts)
        decay = param.ndim >= 2 and "LayerNorm" not in name and "layer_norm" not in name
        groups.setdefault((is_head, decay), []).append(param)
    return torch.optim.AdamW(
        [
            {
                "params": tensors,
                "lr": params.head_learning_rate if is_head else params.learning_rate,
                "weight_decay": params.weight_decay if decay else 0.0,
            }
            for (is_head, decay), tensors in groups.items()
        ]
    )


def _training_arguments(config: TrainConfig, out: Path, train_rows: int) -> tuple[Any, bool]:
    """HF TrainingArguments for the run, and whether it is a single pass (no evaluation inside the loop)."""
    from transformers import TrainingArguments

    params = config.params
    steps_per_epoch = math.ceil(train_rows / params.batch_size)
    epochs = planned_epochs(params, train_rows)
    by_steps = config.eval_steps is not None or (
        config.max_steps is not None and config.max_steps < steps_per_epoch
    )
    eval_steps = config.eval_steps or (max(1, config.max_steps // 2) if config.max_steps else None)
    # A single-epoch run has one evaluation point: the final prediction below is that evaluation, so
    # evaluating (and checkpointing) inside the loop as well would only double the validation cost.
    single_pass = not by_steps and config.max_steps is None and epochs <= 1
    strategy = "no" if single_pass else ("steps" if by_steps else "epoch")
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        logging_dir=str(out / "tensorboard"),
        report_to=["tensorboard"],
        learning_rate=params.learning_rate,
        num_train_epochs=epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=params.batch_size,
        per_device_eval_batch_size=params.eval_batch_size,
        weight_decay=params.weight_decay,
        warmup_ratio=params.warmup_ratio,
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=eval_steps if by_steps else None,
        save_steps=eval_steps if by_steps else None,
        save_total_limit=1,
        load_best_model_at_end=not single_pass,
        # macro-F1, ties broken by the lower validation loss (training.metrics.selection_score)
        metric_for_best_model="selection",
        greater_is_better=True,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        seed=config.seed,
        data_seed=config.seed,
        save_safetensors=True,
        dataloader_num_workers=0,
        disable_tqdm=False,
        **_precision_flags(config.mixed_precision),
    )
    return args, single_pass


def _make_trainer(
    config: TrainConfig,
    model: Any,
    tokenizer: Any,
    labels: list[str],
    train_ds: Any,
    val_ds: Any,
    balance: _ClassBalance,
    out: Path,
    extra_callbacks: list[Any] | None,
    majority_f1: float | None = None,
) -> Any:
    """The HF Trainer with the run's loss weights, sampling, adversarial steps and early stopping
    (majority_f1: the validation macro-F1 of always answering the majority label, see _early_stopping)."""
    import torch
    from transformers import DataCollatorWithPadding

    weight = torch.tensor(balance.loss_weights, dtype=torch.float64) if balance.loss_weights else None

    def compute_metrics(pred: Any) -> dict[str, float]:
        logits = _logits(pred)
        m = classification_metrics(pred.label_ids, np.argmax(logits, axis=-1), labels)
        # The loss the run trains on (class-weighted when it is), from the same logits
        gold = torch.as_tensor(np.asarray(pred.label_ids), dtype=torch.long)
        scores = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
        loss = float(torch.nn.functional.cross_entropy(scores, gold, weight=weight)) if len(gold) else 0.0
        selection = selection_score(m["macro_f1"], loss)
        return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "selection": selection}

    args, single_pass = _training_arguments(config, out, len(train_ds))
    callbacks = (
        [_early_stopping(config.early_stopping_patience, majority_f1)]
        if config.early_stopping_patience and not single_pass
        else []
    )
    if args.eval_strategy == "steps":
        callbacks.append(_score_last_step())
    callbacks += list(extra_callbacks or [])
    adversarial = (
        None
        if config.adversarial == "none"
        else {
            "method": config.adversarial,
            "epsilon": config.adversarial_epsilon,
            "pgd_steps": config.pgd_steps,
        }
    )
    optimizer = head_optimizer(model, config.params) if config.params.head_learning_rate else None
    return _trainer_class()(
        optimizers=(optimizer, None),
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        callbacks=callbacks,
        loss_weights=balance.loss_weights,
        sample_weights=balance.sample_weights,
        adversarial=adversarial,
    )


def _logits(prediction: Any) -> np.ndarray:
    """The logits of a Trainer prediction (models may return them first in a tuple)."""
    predictions = prediction.predictions
    return predictions[0] if isinstance(predictions, tuple) else predictions


def _validation_metrics(trainer: Any, val_ds: Any, data: PreparedData, weighted: bool) -> dict[str, Any]:
    """Metrics of the trained (best) model on the validation rows."""
    prediction = trainer.predict(val_ds)
    eval_loss = float(prediction.metrics.get("test_loss", float("nan")))
    return _metrics_from_logits(_logits(prediction), data, weighted, eval_loss)


def _metrics_from_logits(
    logits: np.ndarray, data: PreparedData, weighted: bool, eval_loss: float
) -> dict[str, Any]:
    metrics = classification_metrics(data.validation.label_ids, np.argmax(logits, axis=-1), data.labels)
    # Chosen here, on validation, stored with the metrics in the manifest; serving applies it on request.
    metrics["decision_threshold"] = decision_threshold(data.validation.label_ids, softmax(logits))
    metrics["eval_loss"] = eval_loss
    metrics["class_weighting"] = weighted
    metrics["majority_label"], metrics["majority_macro_f1"] = majority_macro_f1(data)
    return metrics


def _finish_run_folder(result: TrainedModel, out: Path) -> None:
    """Drop checkpoints unless kept; write the confusion matrix and metrics.json; log the figures."""
    config, metrics = result.config, result.metrics
    if not config.keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    plot_confusion_matrix(
        metrics["confusion_matrix"],
        result.labels,
        out / "confusion_matrix.png",
        f"{config.scenario.name} / {config.strategy}: validation, {len(result.data.validation)} rows, "
        f"acc {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}; "
        f"{epoch_summary(result.log_history)}",
    )
    summary = {
        "scenario": config.scenario.name,
        "strategy": config.strategy,
        "base_model": result.base.id,
        "train_rows": len(result.data.train),
        "validation_rows": len(result.data.validation),
        "train_time_s": round(result.train_time_s, 2),
        "trainable_params": result.trainable_params,
        "total_params": result.total_params,
        "class_weights": result.class_weights,
        "epochs": epoch_summary(result.log_history),
        "metrics": metrics,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    log.info(
        "%s/%s: accuracy %.4f macro-F1 %.4f in %.1f s",
        config.scenario.name,
        config.strategy,
        metrics["accuracy"],
        metrics["macro_f1"],
        result.train_time_s,
    )
