"""Tiny RoBERTa classifiers for each strategy, briefly fitted on toy data so predictions mean something."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from model_repository import BaseModelRef, weights_hash
from tests.conftest import toy_sentences

LABELS = ["positive", "negative", "neutral"]
MAX_LENGTH_TOKENS = 32


@pytest.fixture(scope="session")
def toy_rows() -> tuple[list[str], list[str]]:
    """90 labelled rows (30 per label), used to fit the heads and for parity."""
    rows = [(t, label) for label in LABELS for t in toy_sentences(label, 30, seed=7)]
    return [r[0] for r in rows], [r[1] for r in rows]


@pytest.fixture(scope="session")
def tiny_base_ref(tiny_roberta_dir: Path) -> BaseModelRef:
    return BaseModelRef(
        id=str(tiny_roberta_dir), content_hash=weights_hash(tiny_roberta_dir), architecture="roberta"
    )


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_roberta_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_roberta_dir)


def build_classifier(
    base_dir: Path, strategy: str, texts: list[str], labels: list[str], tokenizer: Any
) -> Any:
    """A tiny classifier of the given strategy, fitted for a few steps (well under a second)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    if strategy == "frozen":  # what training's frozen strategy builds: the encoder's masked mean + head
        from training.frozen import build_frozen_model

        model = build_frozen_model(base_dir, LABELS)
        return _fit(model, model.classifier.parameters(), texts, labels, tokenizer)
    model = AutoModelForSequenceClassification.from_pretrained(
        base_dir,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={v: i for i, v in enumerate(LABELS)},
    )
    if strategy == "frozen_legacy":  # frozen as published before mean pooling: HF head, first token
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith("classifier.")
    elif strategy == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=4,
                lora_alpha=8,
                target_modules=["query", "value"],
                modules_to_save=["classifier"],
                task_type="SEQ_CLS",
            ),
        )
    return _fit(model, [p for p in model.parameters() if p.requires_grad], texts, labels, tokenizer)


def _fit(model: Any, params: Any, texts: list[str], labels: list[str], tokenizer: Any) -> Any:
    import torch

    enc = tokenizer(texts, padding=True, truncation=True, max_length=MAX_LENGTH_TOKENS, return_tensors="pt")
    gold = torch.tensor([LABELS.index(y) for y in labels])
    optim = torch.optim.AdamW(params, lr=1e-2)
    model.train()
    for _ in range(15):
        optim.zero_grad()
        model(**enc, labels=gold).loss.backward()
        optim.step()
    return model.eval()


@pytest.fixture(scope="session")
def tiny_models(
    tiny_roberta_dir: Path, toy_rows: tuple[list[str], list[str]], tiny_tokenizer: Any
) -> dict[str, Any]:
    texts, labels = toy_rows
    return {
        s: build_classifier(tiny_roberta_dir, s, texts, labels, tiny_tokenizer)
        for s in ("full", "frozen", "frozen_legacy", "lora")
    }
