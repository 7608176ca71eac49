"""A LoRA version on a BERT whose checkpoint has no pooler weights (saved from BertForMaskedLM): shared mode,
its merged graph and the torch model reloaded (`evaluate --precision torch`) all answer with the pooler it
was trained with, not one drawn at random on each load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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


def test_a_version_that_saved_no_pooler_is_refused_not_reloaded_with_a_random_one(
    repo: ModelRepository, tmp_path: Path
) -> None:
    """A LoRA version published before LoRA trained the pooler on such a base saved none: reloading it
    (re-export, `evaluate --precision torch`) would draw a random pooler, so it is refused by name."""
    from safetensors.numpy import load_file, save_file

    from model_repository import layout
    from training import TrainingError
    from training.publish import load_version_model, local_base

    manifest = repo.verify("reviews", 1)
    folder = tmp_path / "v1"
    shutil.copytree(repo.version_path("reviews", 1), folder)
    adapter = folder / layout.WEIGHTS_DIR / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert "pooler" in config["modules_to_save"]  # what a version publishes now
    config["modules_to_save"] = [m for m in config["modules_to_save"] if m != "pooler"]
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    save_file(
        {k: v for k, v in tensors.items() if "pooler" not in k.split(".")},
        str(adapter / "adapter_model.safetensors"),
    )

    base_path = local_base(manifest, "reviews v1").path
    load_version_model(repo.version_path("reviews", 1), manifest, base_path, "reviews v1")  # as published
    with pytest.raises(TrainingError, match="pooler") as refused:
        load_version_model(folder, manifest, base_path, "reviews v1")
    assert "random pooler" in str(refused.value) and "reviews v1" in str(refused.value)


def test_a_pre_mean_pooling_frozen_head_on_the_pooler_is_refused(
    repo: ModelRepository, tmp_path: Path
) -> None:
    """A frozen head published before mean pooling (an HF classifier on BERT's pooler output) on a base
    without pooler weights cannot be rebuilt as trained either: refused by name, not scored at random."""
    import numpy as np
    from safetensors.numpy import save_file

    from model_repository import layout
    from training import TrainingError
    from training.publish import HEAD_WEIGHTS_FILE, load_version_model, local_base

    manifest = repo.verify("reviews", 1)
    base_path = local_base(manifest, "reviews v1").path
    hidden = json.loads((base_path / "config.json").read_text())["hidden_size"]
    folder = tmp_path / "legacy-frozen"
    shutil.copytree(repo.version_path("reviews", 1) / layout.TOKENIZER_DIR, folder / layout.TOKENIZER_DIR)
    (folder / layout.WEIGHTS_DIR).mkdir()
    rng = np.random.default_rng(0)
    legacy = {
        "classifier.weight": rng.normal(size=(len(LABELS), hidden)).astype(np.float32),
        "classifier.bias": np.zeros(len(LABELS), np.float32),
    }  # no pooling metadata: the layout frozen versions had before mean pooling
    save_file(legacy, str(folder / layout.WEIGHTS_DIR / HEAD_WEIGHTS_FILE))
    frozen = manifest.model_copy(update={"strategy": "frozen"})
    with pytest.raises(TrainingError, match="random pooler"):
        load_version_model(folder, frozen, base_path, "legacy v1")
