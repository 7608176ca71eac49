"""Classification metrics and class weights for imbalanced data."""

from __future__ import annotations

from typing import Any

import numpy as np


def class_weights(counts: list[int]) -> list[float]:
    """Inverse-frequency weights n / (k * count_c), mean 1 over present classes; absent classes get 1."""
    arr = np.asarray(counts, dtype=float)
    present = arr > 0
    if present.sum() == 0:
        raise ValueError("class_weights needs at least one class with rows")
    weights = np.ones_like(arr)
    weights[present] = arr[present].sum() / (present.sum() * arr[present])
    return weights.tolist()


def imbalance_ratio(counts: list[int]) -> float:
    present = [c for c in counts if c > 0]
    return max(present) / min(present)


def use_class_weights(mode: str, counts: list[int], threshold: float) -> bool:
    if mode == "on":
        return True
    if mode == "off":
        return False
    return imbalance_ratio(counts) > threshold


def classification_metrics(
    label_ids: np.ndarray, predictions: np.ndarray, labels: list[str]
) -> dict[str, Any]:
    """accuracy, macro-F1 over labels present in the data, per-class P/R/F1, confusion matrix."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true = np.asarray(label_ids)
    y_pred = np.asarray(predictions)
    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=ids, zero_division=0
    )
    # Macro-F1 averages over classes that occur in the reference data: a class absent from validation
    # (a capped run) would otherwise count as F1 = 0 whatever the model does. A row answered with such a
    # class still costs: it lowers the recall of its own class (sklearn's "macro" would also average in the
    # absent class's F1 of 0, so its figure can be lower than this one where the model answers them).
    in_data = support > 0
    return {
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        "macro_f1": float(f1[in_data].mean()) if in_data.any() else 0.0,
        "n_samples": len(y_true),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
    }


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise probabilities from logits (shifted by the row max, so large logits do not overflow)."""
    shifted = np.asarray(logits, dtype=float) - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


# Share of kept validation texts that must be right for a confidence cut to count (see decision_threshold).
DECISION_TARGET_ACCURACY = 0.9


def decision_threshold(
    label_ids: np.ndarray, probs: np.ndarray, target_accuracy: float = DECISION_TARGET_ACCURACY
) -> float | None:
    """The lowest top-label probability such that the validation texts scoring at least it are right
    `target_accuracy` of the time, keeping as many texts as possible; None when no cut gets there.

    Serving answers a text under it with a null label when the request asks to abstain."""
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or len(probs) == 0:
        return None
    confidence = probs.max(axis=-1)
    correct = probs.argmax(axis=-1) == np.asarray(label_ids)
    order = np.argsort(-confidence, kind="stable")
    confidence, correct = confidence[order], correct[order]
    accuracy = np.cumsum(correct) / np.arange(1, len(correct) + 1)
    # A cut keeps every text at or above its confidence, so it can only fall after the last of a tie.
    ends = np.append(confidence[:-1] > confidence[1:], True)
    cuts = np.nonzero(ends & (accuracy >= target_accuracy))[0]
    return float(confidence[cuts[-1]]) if len(cuts) else None


# How much validation loss weighs in the selection score: enough to order evaluations whose macro-F1 is
# equal, too little to reorder any two whose macro-F1 differs by more than 1e-6 (the loss is capped at 1000).
SELECTION_LOSS_WEIGHT = 1e-9
_SELECTION_LOSS_CAP = 1000.0


def selection_score(macro_f1: float, eval_loss: float | None) -> float:
    """What a run keeps its best checkpoint (and counts its patience) by: validation macro-F1, and among
    evaluations of the same macro-F1 the one of lower validation loss.

    Macro-F1 alone ties whenever a small or easy validation set is answered the same way at several
    epochs, and the first of those was kept: the least trained, least sure of itself. The demo's LoRA
    scenario (24 validation rows) was right on all of them from epoch 1 to 3 while its validation loss
    fell 0.73 -> 0.12 -> 0.02, and epoch 1 was published, answering its examples at 0.53-0.58."""
    if eval_loss is None:  # no loss logged: macro-F1 alone
        loss = 0.0
    elif not np.isfinite(eval_loss):  # a diverged evaluation is the least sure of its ties
        loss = _SELECTION_LOSS_CAP
    else:
        loss = min(float(eval_loss), _SELECTION_LOSS_CAP)
    return float(macro_f1) - SELECTION_LOSS_WEIGHT * loss


def training_epochs(log_history: list[dict[str, Any]]) -> tuple[float | None, float]:
    """(epoch of the best evaluation, epochs run) from an HF Trainer's log history: best by
    `eval_selection` where the run logged it (selection_score), else by macro-F1.

    The best epoch is None when the loop never evaluated (a single pass, scored after its last step).
    """
    ran = max((float(e["epoch"]) for e in log_history if "epoch" in e), default=0.0)
    evals = [e for e in log_history if "eval_macro_f1" in e and "epoch" in e]
    # The first best, as the Trainer keeps it (a later tie does not replace the best checkpoint).
    key = "eval_selection" if evals and all("eval_selection" in e for e in evals) else "eval_macro_f1"
    best = float(max(evals, key=lambda e: e[key])["epoch"]) if evals else None
    return best, ran


def epoch_summary(log_history: list[dict[str, Any]]) -> str:
    """'best epoch 2 of 3 run', or '1 epoch run' when the loop never evaluated."""
    best, ran = training_epochs(log_history)

    def short(x: float) -> str:
        return f"{x:.2f}".rstrip("0").rstrip(".")

    plural = "" if ran == 1 else "s"
    return (
        f"{short(ran)} epoch{plural} run" if best is None else f"best epoch {short(best)} of {short(ran)} run"
    )
