"""The shared fixtures build what later tests rely on."""

from __future__ import annotations

from pathlib import Path


def test_tiny_roberta_loads_as_classifier(tiny_roberta_dir: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_roberta_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_roberta_dir, num_labels=3)
    batch = tokenizer(
        ["The film was great today.", "Our hotel was awful."], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**batch).logits
    assert model.config.model_type == "roberta"
    assert logits.shape == (2, 3)
    assert "token_type_ids" not in batch or batch["token_type_ids"].max() == 0


def test_minilm_is_a_bert_encoder(minilm_dir: Path) -> None:
    import json

    config = json.loads((minilm_dir / "config.json").read_text())
    assert config["model_type"] == "bert"
    assert (minilm_dir / "tokenizer.json").is_file()
