"""A publish alias that can never name an alias ('latest', all digits, a bad name) is refused before any
training, tuning or publishing: no wasted run, and no version left without the alias asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_repository import InvalidNameError, ModelRepository


def _no_training(*args, **kwargs):
    raise AssertionError("trained before the alias was checked")


@pytest.mark.parametrize("alias", ["latest", "42", "../prod"])
def test_run_training_and_train_and_publish_check_the_alias_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, alias: str
) -> None:
    pytest.importorskip("torch")
    import training
    import training.publish
    from labelwise.training_runs import run_training

    monkeypatch.setattr(training, "train", _no_training)
    monkeypatch.setattr(training.publish, "train", _no_training)
    repo = ModelRepository(tmp_path / "repo")
    config = object()  # never read: the alias is refused first
    with pytest.raises(InvalidNameError):
        run_training(config, repo, export="none", alias=alias)  # type: ignore[arg-type]
    with pytest.raises(InvalidNameError):
        training.publish.train_and_publish(config, repo, alias=alias)  # type: ignore[arg-type]
    assert repo.list_scenarios() == []


def test_a_tune_study_checks_its_publish_alias_before_any_trial(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    from training.tuning.study import run_study

    with pytest.raises(InvalidNameError, match="reserved"):
        run_study("no-such-scenario", "frozen", trials=1, publish=True, alias="latest", output_dir=tmp_path)
