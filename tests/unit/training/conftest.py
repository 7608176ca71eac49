"""Trained tiny models shared by the training tests: each strategy is trained once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the training extra is not installed")

LABELS = ["positive", "negative", "neutral"]
# Small, fast and deterministic: no early stopping so that the loss curve covers every step.
FAST = {"batch_size": 8, "logging_steps": 4, "early_stopping_patience": None, "warmup_ratio": 0.0}


@pytest.fixture(scope="session")
def toy_scenario(toy_data_dir: Path):
    from training import custom_scenario

    return custom_scenario("toy", LABELS, toy_data_dir, max_length_tokens=32)


def _train(scenario, strategy: str, base: Path, out: Path, **overrides):
    from training import make_train_config, train

    config = make_train_config(
        scenario, strategy, base_model=str(base), output_dir=out, **{**FAST, **overrides}
    )
    return train(config)


@pytest.fixture(scope="session")
def full_run(toy_scenario, tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    return _train(
        toy_scenario,
        "full",
        tiny_roberta_dir,
        tmp_path_factory.mktemp("run-full"),
        learning_rate=3e-3,
        num_train_epochs=5,
    )


@pytest.fixture(scope="session")
def pretrained_base(full_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fully fine-tuned tiny encoder saved as a base: frozen and LoRA need features worth reading,
    which a random encoder does not give."""
    folder = tmp_path_factory.mktemp("tiny-pretrained")
    full_run.model.roberta.save_pretrained(folder, safe_serialization=True)
    full_run.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def frozen_run(toy_scenario, pretrained_base: Path, tmp_path_factory: pytest.TempPathFactory):
    return _train(
        toy_scenario,
        "frozen",
        pretrained_base,
        tmp_path_factory.mktemp("run-frozen"),
        learning_rate=1e-2,
        num_train_epochs=30,  # head epochs on cached embeddings: milliseconds each
    )


@pytest.fixture(scope="session")
def lora_run(toy_scenario, pretrained_base: Path, tmp_path_factory: pytest.TempPathFactory):
    return _train(
        toy_scenario,
        "lora",
        pretrained_base,
        tmp_path_factory.mktemp("run-lora"),
        learning_rate=1e-2,
        num_train_epochs=3,
    )
