"""A LoRA version on a BERT whose checkpoint has no pooler weights (saved from BertForMaskedLM): shared mode,
its merged graph and the torch model reloaded (`evaluate --precision torch`) all answer with the pooler it
was trained with, not one drawn at random on each load."""

from __future__ import annotations

import numpy as np
import pytest

from model_repository import ModelRepository
from tests.conftest import toy_sentences

from .conftest import engine_logits, engine_settings, load_version, publish_tiny

LABELS = ("negative", "positive", "neutral")
TEXTS = toy_sentences("positive", 4, 1) + toy_sentences("negative", 4, 2) + toy_sentences("neutral", 4, 3)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    pytest.importorskip("onnxruntime", reason="the serving extra is not installed")
    from tests.unit.multi_adapter.conftest import build_masked_lm_bert

    work = tmp_path_factory.mktemp("no-pooler")
    base = build_masked_lm_bert(work / "masked-lm-bert")
    repository = ModelRepository(work / "repo")
    assert publish_tiny(repository, work, base, "reviews", LABELS, 5) == 1
    return repository


def test_shared_mode_answers_as_the_merged_graph(repo: ModelRepository) -> None:
    shared = engine_logits(load_version(repo, "reviews", 1, engine_settings("shared")), TEXTS)
    merged = engine_logits(load_version(repo, "reviews", 1, engine_settings("merged")), TEXTS)
    assert np.abs(shared - merged).max() < 1e-4
    assert (shared.argmax(-1) == merged.argmax(-1)).all()
    manifest = repo.load_manifest("reviews", 1)
    assert manifest.head is not None and manifest.head.kind == "bert_pooler"  # its pooler is its own


def test_the_torch_model_reloads_the_pooler_it_was_trained_with(repo: ModelRepository) -> None:
    import torch

    from training import load_published_model

    logits = []
    for _ in range(2):  # each load once drew another random pooler
        model, tokenizer, _manifest = load_published_model(repo, "reviews", 1)
        with torch.no_grad():
            batch = tokenizer(TEXTS, return_tensors="pt", padding=True, truncation=True, max_length=16)
            logits.append(model(**batch).logits.numpy())
    assert np.abs(logits[0] - logits[1]).max() < 1e-6
    merged = engine_logits(load_version(repo, "reviews", 1, engine_settings("merged")), TEXTS)
    assert np.abs(logits[0] - merged).max() < 1e-4
