"""Versions for the integration tests, made by the real producer: training.train_and_publish, whose
export step is training.export.export_into, on the tiny RoBERTa and toy data.

Each scenario renames the toy labels so that concurrent answers can be told apart by their label set.
Training is bounded (a few dozen steps) so that a version costs seconds on 2 cores.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_repository import ModelRepository
from tests.conftest import toy_sentences

MAX_LENGTH_TOKENS = 24
# scenario -> (strategy, {toy label: scenario label}); the dict order is the logit order.
SCENARIOS: dict[str, tuple[str, dict[str, str]]] = {
    "sentiment_full": ("full", {"negative": "negative", "neutral": "neutral", "positive": "positive"}),
    "topic_frozen": ("frozen", {"positive": "sports", "negative": "politics", "neutral": "science"}),
    "mood_frozen": ("frozen", {"neutral": "calm", "negative": "angry"}),
    "intent_lora": ("lora", {"positive": "buy", "negative": "cancel"}),
}
# lora_mode shared (tests/integration/test_shared_lora.py): three LoRA scenarios on the tiny base, and
# one whose adapter is of a higher rank than the served multi-adapter graph's table (refused in shared mode).
SHARED_LORA: dict[str, tuple[str, dict[str, str]]] = {
    "ask_lora": ("lora", {"positive": "yes", "negative": "no"}),
    "tone_lora": ("lora", {"positive": "warm", "negative": "cold", "neutral": "flat"}),
    "risk_lora": ("lora", {"negative": "high", "positive": "low"}),
    "wide_lora": ("lora", {"positive": "up", "negative": "down"}),
}
SHARED_LORA_OVERRIDES = {"wide_lora": {"lora_r": 16, "lora_alpha": 32}}
LATE_SCENARIO = "late_frozen"  # configured but published only by the readiness test
LATE_LABELS = {"positive": "yes", "negative": "no"}
# Bounded: ~16-24 optimizer steps per version, no early stopping, fp32 export only (int8 would not
# match torch to 1e-4, and serving picks int8 first on CPU when it exists).
TRAINING = {
    "batch_size": 8,
    "num_train_epochs": 2,
    "early_stopping_patience": None,
    "warmup_ratio": 0.0,
    "logging_steps": 10,
}
LEARNING_RATE = {"full": 3e-3, "frozen": 1e-2, "lora": 1e-2}


def labels_of(scenario: str) -> list[str]:
    mapping = (
        LATE_LABELS if scenario == LATE_SCENARIO else (SCENARIOS.get(scenario) or SHARED_LORA[scenario])[1]
    )
    return list(mapping.values())


@dataclass
class Reference:
    """The published torch model (read back with transformers) that a served version must agree with."""

    model: object
    tokenizer: object
    labels: list[str]

    def probs(self, texts: list[str]) -> np.ndarray:
        import torch

        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=MAX_LENGTH_TOKENS, return_tensors="pt"
        )
        with torch.no_grad():
            logits = self.model(**enc).logits
        return torch.softmax(logits, -1).numpy()


def _write_data(folder: Path, mapping: dict[str, str], seed: int) -> Path:
    for split, n, split_seed in (("train", 30, seed), ("validation", 10, seed + 1000)):
        rows = [(text, mapping[toy]) for toy in mapping for text in toy_sentences(toy, n, seed=split_seed)]
        random.Random(split_seed).shuffle(rows)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
    return folder


def publish(repo: ModelRepository, scenario: str, base_dir: Path, work_dir: Path, seed: int) -> Reference:
    """Train and publish the next version of scenario; return its published torch model."""
    from training import custom_scenario, load_published_model, make_train_config, train_and_publish

    if scenario == LATE_SCENARIO:
        strategy, mapping = "frozen", LATE_LABELS
    else:
        strategy, mapping = SCENARIOS.get(scenario) or SHARED_LORA[scenario]
    data = _write_data(work_dir / f"{scenario}-{seed}", mapping, seed)
    config = make_train_config(
        custom_scenario(scenario, list(mapping.values()), data, max_length_tokens=MAX_LENGTH_TOKENS),
        strategy,
        base_model=str(base_dir),
        output_dir=work_dir / f"run-{scenario}-{seed}",
        learning_rate=LEARNING_RATE[strategy],
        seed=seed,
        **TRAINING,
        **SHARED_LORA_OVERRIDES.get(scenario, {}),
    )
    manifest = train_and_publish(config, repo, export_precisions=["fp32"])
    model, tokenizer, _ = load_published_model(repo, scenario, manifest.version)
    return Reference(model, tokenizer, manifest.labels)
