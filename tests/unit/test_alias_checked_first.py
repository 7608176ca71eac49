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


def test_an_alias_on_a_run_without_graphs_is_refused_before_any_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--export none publishes torch weights only, which no replica loads and promote refuses: an --alias
    with it is refused before the run (or the study) it would have cost."""
    pytest.importorskip("torch")
    pytest.importorskip("optuna")
    import training
    from labelwise.training_runs import run_training
    from model_repository import UsageError
    from training.errors import TuningError
    from training.tuning.study import run_study

    monkeypatch.setattr(training, "train", _no_training)
    repo = ModelRepository(tmp_path / "repo")
    with pytest.raises(UsageError, match="--alias production with --export none"):
        run_training(object(), repo, export="none", alias="production")  # type: ignore[arg-type]
    with pytest.raises(TuningError, match="--alias staging with --export none"):
        run_study(
            "no-such-scenario",
            "frozen",
            trials=1,
            publish=True,
            export_precisions=[],
            alias="staging",
            output_dir=tmp_path / "study",
        )
    assert repo.list_scenarios() == [] and not (tmp_path / "study").exists()
