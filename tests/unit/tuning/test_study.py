"""A 3-trial study on the tiny model: intermediate values reach Optuna, the best config is written, and a
study interrupted mid-trial resumes where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training import TrainConfig
from training.tuning import run_study

from .conftest import FAST


@pytest.fixture(scope="module")
def resumed_study(tune_scenario, tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    import optuna

    out = tmp_path_factory.mktemp("tune")
    common = {
        "study_name": "toy-study",
        "output_dir": out,
        "pruner": "median",
        "base_model": str(tiny_roberta_dir),
        "num_train_epochs": 1,
        "say": lambda line: None,
        **FAST,
    }
    first = run_study(tune_scenario, "full", trials=2, **common)
    # A run killed mid-trial leaves a RUNNING trial in the database: simulate one.
    storage = f"sqlite:///{(out / 'study.db').resolve()}"
    optuna.load_study(study_name="toy-study", storage=storage).ask()
    lines: list[str] = []
    second = run_study(tune_scenario, "full", trials=3, **{**common, "say": lines.append})
    study = optuna.load_study(study_name="toy-study", storage=storage)
    return first, second, study, lines, out


def test_study_resumes_the_same_trials(resumed_study) -> None:
    from optuna.trial import TrialState

    first, second, study, lines, _ = resumed_study
    assert first.trials == 2 and first.complete + first.pruned == 2
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert study.trials[2].state == TrialState.FAIL  # the interrupted one, failed on resume
    assert second.complete + second.pruned == 3 and second.failed == 1
    assert any("resuming study 'toy-study': 2 finished" in line for line in lines)
    assert any(line.startswith("trial 3 [3/3]") for line in lines)  # one progress line per trial
    # The resumed run draws new values: it does not replay the first run's sampler stream.
    assert study.trials[3].params != study.trials[1].params


def test_trials_report_intermediate_macro_f1(resumed_study, tune_scenario) -> None:
    _, _, study, _, _ = resumed_study
    reported = [t.intermediate_values for t in study.trials if t.intermediate_values]
    assert reported, "no trial reported an intermediate value: the pruner could never prune"
    assert all(len(values) >= 2 for values in reported)  # 2 evaluations per epoch
    assert all(0.0 <= v <= 1.0 for values in reported for v in values.values())
    assert study.trials[0].user_attrs.get("default") is True
    default_lr = tune_scenario.strategies["full"].learning_rate
    assert study.trials[0].params["learning_rate"] == pytest.approx(default_lr)


def test_best_config_and_summary_are_written(resumed_study, tune_scenario) -> None:
    _, second, study, _, out = resumed_study
    config = TrainConfig.model_validate_json((out / "best_config.json").read_text())
    assert config.params.learning_rate == pytest.approx(study.best_params["learning_rate"])
    assert config.params.batch_size == study.best_params["batch_size"]
    assert config.scenario.name == tune_scenario.name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_macro_f1"] == pytest.approx(study.best_value)
    assert summary["best_trial"] == study.best_trial.number
    assert (out / "optimization_history.png").stat().st_size > 0
    assert second.default_macro_f1 is not None or study.trials[0].state.name == "PRUNED"


def test_resuming_with_another_strategy_is_refused(resumed_study, tune_scenario, tiny_roberta_dir) -> None:
    from training.tuning import TuningError

    _, _, _, _, out = resumed_study
    with pytest.raises(TuningError, match="tunes toy/full, not toy/lora"):
        run_study(
            tune_scenario,
            "lora",
            trials=4,
            study_name="toy-study",
            output_dir=out,
            base_model=str(tiny_roberta_dir),
            say=lambda line: None,
        )


def test_publish_trains_the_best_and_records_the_study(
    resumed_study, tune_scenario, tiny_roberta_dir
) -> None:
    from model_repository import ModelRepository

    _, _, study, _, out = resumed_study
    repo = ModelRepository(out / "repo")
    summary = run_study(  # the study already holds 3 finished trials: only the publish step runs
        tune_scenario,
        "full",
        trials=3,
        study_name="toy-study",
        output_dir=out,
        base_model=str(tiny_roberta_dir),
        num_train_epochs=1,
        say=lambda line: None,
        publish=True,
        repository=repo,
        export_precisions=None,
        **FAST,
    )
    assert summary.trials == 4  # nothing new ran
    manifest = repo.verify("toy", summary.published_version)
    assert manifest.extra["tune"]["study_name"] == "toy-study"
    assert manifest.extra["tune"]["best_trial"] == study.best_trial.number
    params = manifest.training_config["params"]
    assert params["learning_rate"] == pytest.approx(study.best_params["learning_rate"])
