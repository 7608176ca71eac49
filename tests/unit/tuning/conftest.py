"""Toy scenario with a small search space, and one FGM-trained tiny model shared by the tuning tests."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the training extra is not installed")
pytest.importorskip("optuna", reason="the training extra is not installed")

LABELS = ["positive", "negative", "neutral"]
# One short epoch per run, no early stopping: what these tests check is the plumbing, not accuracy.
FAST = {"logging_steps": 2, "early_stopping_patience": None, "warmup_ratio": 0.0, "max_eval_samples": 30}
SPACE = {
    "learning_rate": {"low": 1e-3, "high": 5e-3, "log": True},
    "batch_size": {"choices": [16, 32]},
    "weight_decay": {"low": 0.0, "high": 0.1},
}


@pytest.fixture(scope="session")
def tune_scenario(toy_data_dir: Path):
    from training import custom_scenario

    return custom_scenario("toy", LABELS, toy_data_dir, max_length_tokens=24, search_space=SPACE)


def train_tiny(scenario, base: Path, out: Path, **overrides):
    from training import make_train_config, train

    config = make_train_config(
        scenario,
        "full",
        base_model=str(base),
        output_dir=out,
        **{**FAST, "learning_rate": 3e-3, "num_train_epochs": 1, "batch_size": 16, **overrides},
    )
    return train(config)


# One epoch of 12 steps, one evaluation: the loss path and the plumbing are under test, not accuracy.
@pytest.fixture(scope="session")
def fgm_run(tune_scenario, tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    return train_tiny(
        tune_scenario,
        tiny_roberta_dir,
        tmp_path_factory.mktemp("run-fgm"),
        adversarial="fgm",
        adversarial_epsilon=1.0,
    )


@pytest.fixture(scope="session")
def plain_run(tune_scenario, tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    return train_tiny(tune_scenario, tiny_roberta_dir, tmp_path_factory.mktemp("run-plain"))
