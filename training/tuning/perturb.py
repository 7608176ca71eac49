"""A fixed-seed perturbation test: character typos and word drops, and accuracy under them.

No synonyms and no model in the loop: the edits are the noise real users make (a swapped, dropped,
doubled or wrong letter; a missing word), so a drop in accuracy says how brittle a model is to them.
"""

from __future__ import annotations

import random
import string
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

_LETTERS = string.ascii_lowercase


def _typo(word: str, rng: random.Random) -> str:
    """One edit inside a word of >= 2 letters: swap, delete, duplicate or substitute a letter."""
    if len(word) < 2:
        return word
    i = rng.randrange(len(word) - 1)
    kind = rng.randrange(4)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:
        return word[:i] + word[i + 1 :]
    if kind == 2:
        return word[: i + 1] + word[i] + word[i + 1 :]
    return word[:i] + rng.choice(_LETTERS) + word[i + 1 :]


def perturb_text(text: str, rng: random.Random, typo_rate: float = 0.15, drop_rate: float = 0.1) -> str:
    """Each word is dropped with drop_rate (one word always stays), else gets a typo with typo_rate."""
    words = text.split()
    if not words:
        return text
    keep = [w for w in words if rng.random() >= drop_rate] or [rng.choice(words)]
    return " ".join(_typo(w, rng) if w.isalpha() and rng.random() < typo_rate else w for w in keep)


def perturb_texts(
    texts: list[str], seed: int = 0, typo_rate: float = 0.15, drop_rate: float = 0.1
) -> list[str]:
    """The same texts with typos and word drops; the same seed always gives the same output."""
    if not (0 <= typo_rate <= 1 and 0 <= drop_rate < 1):
        raise ValueError(f"typo_rate must be in [0, 1] and drop_rate in [0, 1); got {typo_rate}, {drop_rate}")
    rng = random.Random(seed)
    return [perturb_text(t, rng, typo_rate, drop_rate) for t in texts]


class PerturbationReport(BaseModel):
    """Accuracy of one model on clean and perturbed copies of the same rows."""

    scenario: str = Field(description="Scenario evaluated.")
    version: int | None = Field(default=None, description="Published version evaluated.")
    data: str = Field(description="Labeled file the rows came from.")
    n_rows: int = Field(description="Rows scored.")
    seed: int = Field(description="Seed of the perturbation.")
    typo_rate: float = Field(description="Share of words given one typo.")
    drop_rate: float = Field(description="Share of words dropped.")
    clean_accuracy: float = Field(description="Accuracy on the rows as they are.")
    clean_macro_f1: float = Field(description="Macro-F1 on the rows as they are.")
    perturbed_accuracy: float = Field(description="Accuracy on the perturbed rows.")
    perturbed_macro_f1: float = Field(description="Macro-F1 on the perturbed rows.")
    flipped_share: float = Field(description="Share of rows whose predicted label changed.")
    adversarial: str = Field(default="none", description="The version's adversarial training.")
    adversarial_epsilon: float | None = Field(default=None, description="Its epsilon.")


def robustness_of_published(
    repository: Any,
    scenario: str,
    data_path: str | Path,
    *,
    ref: str | int = "latest",
    seed: int = 0,
    typo_rate: float = 0.15,
    drop_rate: float = 0.1,
    max_rows: int | None = None,
) -> PerturbationReport:
    """Score a published version (torch weights) on a labeled file, clean and perturbed."""
    import numpy as np

    from ..evaluate import evaluation_rows, predict_logits
    from ..metrics import classification_metrics
    from ..publish import load_published_model

    model, tokenizer, manifest = load_published_model(repository, scenario, ref)
    # the rows as `labelwise evaluate --data` reads them (a version from an older release included)
    data = evaluation_rows(manifest, data_path=Path(data_path)).rows
    texts, labels = list(data.texts), np.asarray(data.label_ids)
    if max_rows is not None:
        texts, labels = texts[:max_rows], labels[:max_rows]
    noisy = perturb_texts(texts, seed=seed, typo_rate=typo_rate, drop_rate=drop_rate)
    clean_pred = predict_logits(model, tokenizer, texts, manifest.max_length_tokens).argmax(-1)
    noisy_pred = predict_logits(model, tokenizer, noisy, manifest.max_length_tokens).argmax(-1)
    clean = classification_metrics(labels, clean_pred, manifest.labels)
    perturbed = classification_metrics(labels, noisy_pred, manifest.labels)
    train_cfg = manifest.training_config or {}
    return PerturbationReport(
        scenario=scenario,
        version=manifest.version,
        data=str(data_path),
        n_rows=len(texts),
        seed=seed,
        typo_rate=typo_rate,
        drop_rate=drop_rate,
        clean_accuracy=clean["accuracy"],
        clean_macro_f1=clean["macro_f1"],
        perturbed_accuracy=perturbed["accuracy"],
        perturbed_macro_f1=perturbed["macro_f1"],
        flipped_share=float(np.mean(clean_pred != noisy_pred)) if len(texts) else 0.0,
        adversarial=str(train_cfg.get("adversarial", "none")),
        adversarial_epsilon=train_cfg.get("adversarial_epsilon"),
    )
