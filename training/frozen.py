"""The frozen strategy: the base encoder's sentence embedding and a small head trained on it.

The embedding is the attention-mask-weighted mean of the last hidden state (sentence-transformers'
pooling, all-MiniLM-L6-v2's own), L2-normalised, for every architecture: a BERT pooler or a first
token that was never trained for classification scores below the majority class on MiniLM. The
encoder never changes, so the embeddings of the train and validation rows are computed once and the
head is trained on them for many cheap epochs. torch is imported here: import this module lazily.

The head is dense (256 wide) -> ReLU -> out_proj: on MiniLM it beat a linear head on held-out validation
rows by 2 (sentiment) to 5 (emotion) macro-F1 points at 1,000 and 4,000 train rows.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model_repository import FEATURES_OF_KIND

from .metrics import selection_score

log = logging.getLogger(__name__)

HEAD_KIND = "mean_mlp"  # model_repository head kind of a frozen version (docs/artifacts.md)
POOLING = FEATURES_OF_KIND[HEAD_KIND]
HEAD_HIDDEN = 256  # at most: the embedding's width when narrower
HEAD_DROPOUT = 0.3
# Evaluations (one per epoch) without a better validation macro-F1 before stopping, per unit of the
# run's early_stopping_patience (2 by default: 20 epochs). A head epoch costs milliseconds.
PATIENCE_EPOCHS_PER_UNIT = 10
# safetensors metadata of weights/head.safetensors that marks a mean-pooling head (older frozen
# versions hold an HF classifier head on the pooler or the first token and carry no such key).
POOLING_METADATA_KEY = "labelwise_pooling"


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the hidden states over the tokens the mask keeps: [batch, seq, H] -> [batch, H]."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class MeanPoolingHead(nn.Module):
    """Standardise (per-dimension mean and scale of the train rows) -> dense -> ReLU -> dropout ->
    out_proj, on the L2-normalised sentence embedding.

    The standardisation stays a separate step rather than being folded into `dense`: folded, the
    dense weights grow by 1/scale (~50x on MiniLM) and its input keeps a large common offset, which
    int8 dynamic quantisation of a graph holding the head cannot resolve (agreement with torch fell
    to 0.5 on sentiment); standardised first, the quantised input is well-conditioned.
    """

    def __init__(self, features: int, num_labels: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or min(HEAD_HIDDEN, features)  # never wider than the embedding
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("scale", torch.ones(features))
        self.dense = nn.Linear(features, hidden)
        self.dropout = nn.Dropout(HEAD_DROPOUT)
        self.out_proj = nn.Linear(hidden, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) / self.scale
        return self.out_proj(self.dropout(torch.relu(self.dense(z))))


class MeanPoolingClassifier(nn.Module):
    """Encoder -> masked mean of the last hidden state -> L2 norm -> MeanPoolingHead, called like an HF
    sequence classifier: `model(**tokenizer_batch).logits` (and `.loss` when given `labels`)."""

    base_model_prefix = "encoder"

    def __init__(self, encoder: nn.Module, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config
        self.classifier = MeanPoolingHead(self.config.hidden_size, num_labels)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The sentence embedding before normalisation: what the shared base encoder graph outputs."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **extra)
        return mean_pool(out.last_hidden_state, attention_mask)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(nn.functional.normalize(features, dim=-1))

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **_: Any,
    ) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput

        assert input_ids is not None, "input_ids are required"
        logits = self.head(self.features(input_ids, attention_mask, token_type_ids))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def build_frozen_model(base_path: str | Path, labels: list[str]) -> MeanPoolingClassifier:
    """The base encoder (every weight frozen, no pooler) with a fresh head for labels."""
    from transformers import AutoConfig, AutoModel
    from transformers import logging as hf_logging

    config = AutoConfig.from_pretrained(str(base_path))
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: i for i, name in enumerate(labels)}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "pooler weights not used" is expected: the mean replaces it
    try:
        try:
            encoder = AutoModel.from_pretrained(str(base_path), config=config, add_pooling_layer=False)
        except TypeError:  # an architecture without a pooler takes no such argument
            encoder = AutoModel.from_pretrained(str(base_path), config=config)
    finally:
        hf_logging.set_verbosity(verbosity)
    for param in encoder.parameters():
        param.requires_grad = False
    return MeanPoolingClassifier(encoder, len(labels))


def head_state(model: MeanPoolingClassifier) -> dict[str, torch.Tensor]:
    """The trained weights (torch names) that weights/head.safetensors stores."""
    return {
        f"classifier.{k}": v.detach().cpu().contiguous() for k, v in model.classifier.state_dict().items()
    }


def load_mean_pooling_model(
    head_file: Path, base_path: str | Path, labels: list[str], who: str
) -> MeanPoolingClassifier | None:
    """The published frozen model in eval mode, rebuilt from its base and head.safetensors; None when the
    head is an older frozen version's (an HF classifier head on the pooler or the first token)."""
    from safetensors import safe_open

    from .errors import TrainingError

    with safe_open(str(head_file), framework="pt") as fh:
        pooling = (fh.metadata() or {}).get(POOLING_METADATA_KEY)
        head = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is no mapping)
    if pooling is None:
        return None
    if pooling != POOLING:
        raise TrainingError(f"{who}: {head_file.name} was trained on {pooling!r} pooling, not {POOLING!r}")
    model = build_frozen_model(base_path, labels)
    try:
        state = {k.removeprefix("classifier."): v for k, v in head.items()}
        if "dense.weight" in state:  # the hidden width is the file's
            model.classifier = MeanPoolingHead(
                state["dense.weight"].shape[1], len(labels), state["dense.weight"].shape[0]
            )
        model.classifier.load_state_dict(state)
    except RuntimeError as exc:  # strict: missing, unexpected or mis-shaped weights
        raise TrainingError(f"{who}: {head_file.name} does not fit the base {base_path}: {exc}") from exc
    return model.eval()


def encode_features(
    model: MeanPoolingClassifier, tokenizer: Any, texts: list[str], max_length_tokens: int, batch_size: int
) -> torch.Tensor:
    """Sentence embeddings [rows, H] in the rows' order; batches of similar length pad the least."""
    from tqdm.auto import tqdm

    if not texts:
        return torch.zeros((0, model.config.hidden_size))
    lengths = [
        len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length_tokens)["input_ids"]
    ]
    order = np.argsort(lengths, kind="stable")
    out = torch.empty((len(texts), model.config.hidden_size))
    model.eval()
    with torch.inference_mode():
        for start in tqdm(range(0, len(texts), batch_size), desc="embedding", leave=False):
            rows = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=max_length_tokens,
                return_tensors="pt",
            )
            batch = {k: v.to(model.device) for k, v in batch.items()}
            out[torch.as_tensor(rows)] = model.features(**batch).float().cpu()
    return out


@dataclass
class HeadSettings:
    """How the head is trained on cached embeddings."""

    learning_rate: float
    epochs: float  # a fraction of an epoch trains that fraction of its steps, as Hugging Face's Trainer
    batch_size: int
    weight_decay: float = 0.0
    loss_weights: list[float] | None = None
    sample_weights: list[float] | None = None
    patience_epochs: int | None = None
    max_steps: int | None = None
    seed: int = 42


@dataclass
class HeadFit:
    """What training the head gave: the validation logits of the best head and the run's history."""

    val_logits: np.ndarray
    eval_loss: float
    best_epoch: float  # whole, but for a last epoch cut short (max_steps, fractional epochs): its fraction
    epochs_run: float
    log_history: list[dict[str, Any]] = field(default_factory=list)


def fit_head(
    model: MeanPoolingClassifier,
    train_x: torch.Tensor,
    train_y: np.ndarray,
    val_x: torch.Tensor,
    val_y: np.ndarray,
    settings: HeadSettings,
    on_evaluate: Callable[[dict[str, float]], None] | None = None,
) -> HeadFit:
    """Train model.classifier on cached embeddings (AdamW, minibatches, weighted cross-entropy when the
    run weights classes); keep the head of the best validation macro-F1 (among equal ones, the lower
    validation loss: training.metrics.selection_score); early-stop on the same score.

    The head standardises the normalised embeddings with the train rows' mean and scale (its
    `mean` and `scale` buffers), so it trains well-conditioned whatever their scale
    (docs/artifacts.md, head kind mean_mlp).
    """
    threads = torch.get_num_threads()
    # Ops on a [batch, 384] head are too small to share between threads: one thread is faster.
    torch.set_num_threads(1)
    try:
        return _fit_head(model, train_x, train_y, val_x, val_y, settings, on_evaluate)
    finally:
        torch.set_num_threads(threads)


def macro_f1(gold: np.ndarray, predicted: np.ndarray, num_labels: int) -> float:
    """Macro-F1 over the classes present in gold, as training.metrics.classification_metrics computes it
    (without sklearn's per-call overhead: the head is evaluated every epoch)."""
    confusion = np.bincount(gold * num_labels + predicted, minlength=num_labels**2).reshape(num_labels, -1)
    hits, support, claimed = np.diag(confusion), confusion.sum(1), confusion.sum(0)
    denominator = support + claimed
    f1 = np.divide(2 * hits, denominator, out=np.zeros(num_labels), where=denominator > 0)
    present = support > 0
    return float(f1[present].mean()) if present.any() else 0.0


def _fit_head(
    model: MeanPoolingClassifier,
    train_x: torch.Tensor,
    train_y: np.ndarray,
    val_x: torch.Tensor,
    val_y: np.ndarray,
    settings: HeadSettings,
    on_evaluate: Callable[[dict[str, float]], None] | None,
) -> HeadFit:
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    labels = list(model.config.id2label.values())
    z_train = nn.functional.normalize(train_x, dim=-1)
    z_val = nn.functional.normalize(val_x, dim=-1)
    y_train = torch.as_tensor(np.asarray(train_y), dtype=torch.long)
    y_val = torch.as_tensor(np.asarray(val_y), dtype=torch.long)
    head = MeanPoolingHead(z_train.shape[1], len(labels))
    head.mean.copy_(z_train.mean(0))
    head.scale.copy_(z_train.std(0).clamp_min(1e-6) if len(z_train) > 1 else torch.ones(z_train.shape[1]))
    weight = torch.tensor(settings.loss_weights, dtype=torch.float32) if settings.loss_weights else None
    optimizer = torch.optim.AdamW(
        head.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    sampling = torch.tensor(settings.sample_weights, dtype=torch.float) if settings.sample_weights else None
    n = len(z_train)
    history: list[dict[str, Any]] = []
    best_score, best_epoch, best_state = -math.inf, 0, {k: v.clone() for k, v in head.state_dict().items()}
    steps, mark = 0, 0.0
    steps_per_epoch = max(1, math.ceil(n / settings.batch_size))
    # The run's length in steps, as Hugging Face's Trainer counts it for full and lora: max_steps whatever
    # the epochs (frozen runs stopped at num_train_epochs when those came first: unlike budgets in compare),
    # else the epochs' steps, rounded up (0.5 epochs trained a whole one, saying nothing)
    max_steps = (
        settings.max_steps if settings.max_steps is not None else math.ceil(settings.epochs * steps_per_epoch)
    )
    for epoch in range(1, math.ceil(max_steps / steps_per_epoch) + 1):
        head.train()
        order = (
            torch.multinomial(sampling, n, replacement=True, generator=generator)
            if sampling is not None
            else torch.randperm(n, generator=generator)
        )
        total, seen = 0.0, 0
        for start in range(0, n, settings.batch_size):
            rows = order[start : start + settings.batch_size]
            loss = nn.functional.cross_entropy(head(z_train[rows]), y_train[rows], weight=weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, seen, steps = total + loss.item() * len(rows), seen + len(rows), steps + 1
            if steps >= max_steps:
                break
        # an epoch cut short is logged as the fraction of the epochs run, as the Trainer logs it
        mark = epoch if steps == epoch * steps_per_epoch else round(steps / steps_per_epoch, 2)
        history.append({"loss": total / max(seen, 1), "epoch": mark, "step": steps})
        head.eval()
        with torch.no_grad():
            logits = head(z_val)
            eval_loss = (
                float(nn.functional.cross_entropy(logits, y_val, weight=weight)) if len(y_val) else 0.0
            )
        predicted = logits.argmax(-1).numpy()
        f1 = macro_f1(y_val.numpy(), predicted, len(labels))
        evaluation = {
            "eval_loss": eval_loss,
            "eval_accuracy": float((predicted == y_val.numpy()).mean()) if len(y_val) else 0.0,
            "eval_macro_f1": f1,
            # macro-F1, ties broken by the lower validation loss (training.metrics.selection_score)
            "eval_selection": selection_score(f1, eval_loss),
            "epoch": mark,
            "step": steps,
        }
        history.append(evaluation)
        if on_evaluate is not None:
            on_evaluate(evaluation)
        score = evaluation["eval_selection"]
        if score > best_score:
            best_score, best_epoch = score, mark
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        elif settings.patience_epochs is not None and epoch - best_epoch >= settings.patience_epochs:
            break
        if steps >= max_steps:
            break
    model.classifier.load_state_dict(best_state)
    with torch.no_grad():
        model.eval()
        val_logits = model.head(val_x).numpy()
        eval_loss = (
            float(nn.functional.cross_entropy(torch.from_numpy(val_logits), y_val, weight=weight))
            if len(y_val)
            else 0.0
        )
    return HeadFit(val_logits, eval_loss, best_epoch, mark, history)


def head_settings(
    config: Any, loss_weights: list[float] | None, sample_weights: list[float] | None
) -> HeadSettings:
    """The run's hyperparameters as head settings: patience counts epochs."""
    params = config.params
    patience = config.early_stopping_patience
    return HeadSettings(
        learning_rate=params.learning_rate,
        epochs=params.num_train_epochs,
        batch_size=params.batch_size,
        weight_decay=params.weight_decay,
        loss_weights=loss_weights,
        sample_weights=sample_weights,
        patience_epochs=patience * PATIENCE_EPOCHS_PER_UNIT if patience else None,
        max_steps=config.max_steps,
        seed=config.seed,
    )


@dataclass
class FrozenRun:
    """A trained frozen model and what its run measured."""

    model: MeanPoolingClassifier
    fit: HeadFit
    train_time_s: float
    embed_time_s: float


def train_frozen(
    model: MeanPoolingClassifier,
    tokenizer: Any,
    data: Any,
    config: Any,
    loss_weights: list[float] | None,
    sample_weights: list[float] | None,
    callbacks: list[Any] | None = None,
) -> FrozenRun:
    """Embed the train and validation rows once, then train the head on the embeddings.

    callbacks: transformers TrainerCallbacks; their `on_evaluate` sees each epoch's validation
    metrics (the tuner's pruning reporter reads `eval_macro_f1` and may raise to prune).
    """
    started = time.perf_counter()
    max_len, batch = config.scenario.max_length_tokens, config.params.eval_batch_size
    train_x = encode_features(model, tokenizer, list(data.train.texts), max_len, batch)
    val_x = encode_features(model, tokenizer, list(data.validation.texts), max_len, batch)
    embed_time_s = time.perf_counter() - started

    def on_evaluate(metrics: dict[str, float]) -> None:
        for callback in callbacks or []:
            hook = getattr(callback, "on_evaluate", None)
            if hook is not None:
                hook(None, None, None, metrics=metrics)

    fit = fit_head(
        model,
        train_x,
        np.asarray(data.train.label_ids),
        val_x,
        np.asarray(data.validation.label_ids),
        head_settings(config, loss_weights, sample_weights),
        on_evaluate if callbacks else None,
    )
    model.eval()
    train_time_s = time.perf_counter() - started
    log.info(
        "frozen: embedded %d + %d rows in %.1f s; head trained %d epochs (best %d) in %.1f s",
        len(train_x),
        len(val_x),
        embed_time_s,
        fit.epochs_run,
        fit.best_epoch,
        train_time_s - embed_time_s,
    )
    return FrozenRun(model, fit, train_time_s, embed_time_s)
