"""lora_train_pooler: a BERT LoRA adapter may train the pooler (dense + tanh on the first token) with its
head, as a RoBERTa head trains its own dense layer; such a version never claims the shared base's pooler."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.export.exporter import _trains_pooler
from training.model import build_model, resolve_base_model


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert-pooler")
    config = BertConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(3)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


def _trainable(model: object) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}  # type: ignore[attr-defined]


@pytest.mark.parametrize("train_pooler", [False, True])
def test_the_pooler_trains_only_when_asked(tiny_bert: Path, train_pooler: bool) -> None:
    model = build_model(
        resolve_base_model(str(tiny_bert)), "lora", ["a", "b", "c"], lora_train_pooler=train_pooler
    )
    trainable = _trainable(model)
    pooler = {n for n in trainable if ".pooler." in n}
    assert bool(pooler) is train_pooler, sorted(trainable)
    if train_pooler:  # trained in full (a copy beside the frozen original), never through LoRA
        assert all("modules_to_save" in n and "lora_" not in n for n in pooler), sorted(pooler)
    assert any("classifier" in n for n in trainable)
    assert any("lora_A" in n and ".layer." in n for n in trainable)
    assert _trains_pooler(model) is train_pooler


def test_a_full_model_never_counts_as_a_pooler_adapter(tiny_bert: Path) -> None:
    model = build_model(resolve_base_model(str(tiny_bert)), "full", ["a", "b"], lora_train_pooler=True)
    assert not _trains_pooler(model)
