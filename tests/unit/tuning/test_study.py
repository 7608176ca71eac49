"""A 3-trial study on the tiny model: intermediate values reach Optuna, the best config is written, and a
study interrupted mid-trial resumes where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training import TrainConfig
from training.tuning import SearchSpace, run_study

from .conftest import FAST, SPACE


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
    stale = optuna.load_study(study_name="toy-study", storage=storage).ask()
    # ... having saved a checkpoint, which its killed objective never removed
    (out / f"trial-{stale.number:03d}" / "checkpoints" / "checkpoint-6").mkdir(parents=True)
    lines: list[str] = []
    second = run_study(tune_scenario, "full", trials=3, **{**common, "say": lines.append})
    study = optuna.load_study(study_name="toy-study", storage=storage)
    return first, second, study, lines, out


def test_study_resumes_the_same_trials(resumed_study) -> None:
    from optuna.trial import TrialState

    first, second, study, lines, out = resumed_study
    assert first.trials == 2 and first.complete + first.pruned == 2
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert study.trials[2].state == TrialState.FAIL  # the interrupted one, failed on resume
    assert not (out / "trial-002" / "checkpoints").exists()  # as a finished trial's, its checkpoints went
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
    # the strategy's 1e-4 is below the searched range: the default trial runs its nearest point, the low
    assert tune_scenario.strategies["full"].learning_rate < SPACE["learning_rate"]["low"]
    assert study.trials[0].params["learning_rate"] == pytest.approx(SPACE["learning_rate"]["low"])


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
    with pytest.raises(
        TuningError,
        match="tunes toy/full, not toy/lora: resume it with that scenario and strategy, or start a new study",
    ):
        run_study(
            tune_scenario,
            "lora",
            trials=4,
            study_name="toy-study",
            output_dir=out,
            base_model=str(tiny_roberta_dir),
            say=lambda line: None,
        )


def _publish_best(tune_scenario, out, tiny_roberta_dir, repo):  # type: ignore[no-untyped-def]
    """run_study on the resumed toy study with --publish: it trains the best trial again and publishes it."""
    return run_study(
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


def test_publish_trains_the_best_and_records_the_study(
    resumed_study, tune_scenario, tiny_roberta_dir
) -> None:
    from model_repository import ModelRepository

    _, _, study, _, out = resumed_study
    repo = ModelRepository(out / "repo")
    # The study already holds 3 finished trials: only the publish step runs.
    summary = _publish_best(tune_scenario, out, tiny_roberta_dir, repo)
    assert summary.trials == 4  # nothing new ran
    manifest = repo.verify("toy", summary.published_version)
    assert manifest.extra["tune"]["study_name"] == "toy-study"
    assert manifest.extra["tune"]["best_trial"] == study.best_trial.number
    params = manifest.training_config["params"]
    assert params["learning_rate"] == pytest.approx(study.best_params["learning_rate"])


def _trial_eval_steps(config: TrainConfig) -> int:
    """What a trial of these studies evaluates on: 2 evaluations per epoch of the run's train rows."""
    import math

    from training.data import prepare_data

    steps_per_epoch = math.ceil(len(prepare_data(config).train) / config.params.batch_size)
    return math.ceil(steps_per_epoch / 2)


def test_best_config_keeps_the_trials_evaluation_schedule(resumed_study) -> None:
    """Patience counts evaluations and the checkpoint kept is the best evaluation's: best_config must
    evaluate on the trial's step schedule, not once per epoch."""
    _, _, study, _, out = resumed_study
    config = TrainConfig.model_validate_json((out / "best_config.json").read_text())
    assert config.eval_steps is not None
    assert config.eval_steps == study.best_trial.user_attrs["eval_steps"] == _trial_eval_steps(config)


def test_publish_retrains_on_the_trials_schedule(resumed_study, tune_scenario, tiny_roberta_dir) -> None:
    from model_repository import ModelRepository

    _, _, study, _, out = resumed_study
    repo = ModelRepository(out / "repo-schedule")
    summary = _publish_best(tune_scenario, out, tiny_roberta_dir, repo)
    manifest = repo.verify("toy", summary.published_version)
    config = TrainConfig.model_validate(manifest.training_config)
    assert config.eval_steps == _trial_eval_steps(config)  # not None: once per epoch
    assert config.eval_steps == study.best_trial.user_attrs["eval_steps"]
    # Same seed, same data, same schedule: the published run is the best trial's run.
    assert manifest.metrics["macro_f1"] == pytest.approx(study.best_value)


def test_epochs_are_not_searched_when_min_train_steps_sets_the_run(
    tune_scenario, tiny_roberta_dir, tmp_path
) -> None:
    """min_train_steps 18 on 180 rows: 1, 2 or 3 epochs all train >= 3 epochs (18 steps at batch 32)."""
    import optuna

    scenario = tune_scenario.model_copy(
        update={
            "search_space": tune_scenario.search_space.model_validate(
                {
                    "learning_rate": {"low": 1e-3, "high": 5e-3, "log": True},
                    "batch_size": {"choices": [32, 64]},
                    "num_train_epochs": {"low": 1, "high": 3, "step": 1},
                }
            )
        }
    )
    lines: list[str] = []
    summary = run_study(
        scenario,
        "full",
        trials=1,
        output_dir=tmp_path,
        study_name="epochs",
        pruner="none",
        base_model=str(tiny_roberta_dir),
        min_train_steps=18,
        evals_per_epoch=1,
        say=lines.append,
        **FAST,
    )
    study = optuna.load_study(study_name="epochs", storage=summary.storage)
    assert "num_train_epochs" not in study.trials[0].params
    assert set(summary.search_space) == {"learning_rate", "batch_size"}
    assert "min_train_steps 18" in summary.not_searched["num_train_epochs"]
    assert study.user_attrs["not_searched"] == summary.not_searched
    assert any(line.startswith("num_train_epochs is not searched: min_train_steps 18") for line in lines)


def test_epochs_stay_searched_where_they_change_the_run() -> None:
    """The packaged emotion LoRA at 1,000 rows (min_train_steps 1200): 1..3 epochs are all ~19; with
    6,400 rows at batch 8 the floor is 1.5 epochs and 2 or 3 epochs train longer; max_steps fixes all."""
    from pathlib import Path

    from training import make_train_config
    from training.tuning.space import default_search_space
    from training.tuning.study import _inert_epochs

    ranges = default_search_space().ranges("lora")
    config = make_train_config("emotion", "lora", output_dir=Path("unused"))
    assert "min_train_steps 1200" in _inert_epochs(ranges, config, 1000)
    assert _inert_epochs(ranges, config, 6400) is None
    assert "max_steps 50" in _inert_epochs(ranges, config.model_copy(update={"max_steps": 50}), 6400)


def _writer_threads() -> set[int]:
    import threading

    return {id(t) for t in threading.enumerate() if type(t).__name__ == "_AsyncWriterThread" and t.is_alive()}


def test_pruned_trials_leave_no_tensorboard_writer_running(
    tune_scenario, tiny_roberta_dir, tmp_path, monkeypatch
) -> None:
    """Every trial is pruned at its first evaluation: each Trainer must still close its TensorBoard writer."""
    import optuna

    from training.tuning import study as study_module

    pytest.importorskip("tensorboard")
    monkeypatch.setattr(study_module, "_pruner", lambda name: optuna.pruners.ThresholdPruner(lower=1.01))
    before = _writer_threads()
    summary = run_study(
        tune_scenario,
        "full",
        trials=2,
        output_dir=tmp_path,
        study_name="pruned",
        default_trial=False,
        base_model=str(tiny_roberta_dir),
        num_train_epochs=1,
        say=lambda line: None,
        **FAST,
    )
    assert summary.pruned == 2 and summary.complete == 0
    study = optuna.load_study(study_name="pruned", storage=summary.storage)
    assert all(list(t.intermediate_values) == [1] for t in study.trials)  # stopped at evaluation 1
    assert _writer_threads() - before == set()


def test_resuming_a_study_that_holds_more_trials_says_nothing_to_go(
    resumed_study, tune_scenario, tiny_roberta_dir
) -> None:
    _, _, _, _, out = resumed_study
    lines: list[str] = []
    summary = run_study(
        tune_scenario,
        "full",
        trials=1,  # the study holds 3 finished trials: it said "3 finished trial(s), -2 to go"
        study_name="toy-study",
        output_dir=out,
        base_model=str(tiny_roberta_dir),
        num_train_epochs=1,
        say=lines.append,
        **FAST,
    )
    assert summary.trials == 4  # nothing new ran
    assert not any("to go" in line for line in lines), lines
    assert any("already holds 3 finished trial(s): nothing to run" in line for line in lines)


def test_the_default_trial_outside_the_choices_is_named_in_whole_numbers(
    tune_scenario, tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    """It said "runs batch_size=32.0: the strategy's 64 is not one of the searched choices [8.0, ...]"."""
    scenario = tune_scenario.model_copy(
        update={"search_space": SearchSpace.model_validate({**SPACE, "batch_size": {"choices": [8, 32]}})}
    )
    lines: list[str] = []
    run_study(
        scenario,
        "full",
        trials=1,
        output_dir=tmp_path,
        base_model=str(tiny_roberta_dir),
        max_steps=1,
        say=lines.append,
        **FAST,
    )
    expected = (
        "the default trial runs batch_size=8: the strategy's 16 is not one of the searched choices [8, 32]"
    )
    assert expected in lines, lines


def test_the_default_trial_off_a_range_runs_its_nearest_point_and_says_so(
    tune_scenario, tiny_roberta_dir: Path, tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    """The strategy's weight_decay 0.01 off the grid 0..0.1 step 0.05, and its learning rate 1e-4 below the
    range, ran as they were: Optuna warned "Fixed parameter ... is out of range", and the summary said
    nothing of the default trial running outside the space searched."""
    space = {
        "learning_rate": {"low": 2e-4, "high": 1e-3, "log": True},
        "weight_decay": {"low": 0.0, "high": 0.1, "step": 0.05},
        "batch_size": {"low": 8, "high": 32, "step": 8},  # 16, on the grid: runs as it is
    }
    scenario = tune_scenario.model_copy(update={"search_space": SearchSpace.model_validate(space)})
    lines: list[str] = []
    summary = run_study(
        scenario,
        "full",
        trials=1,
        output_dir=tmp_path,
        base_model=str(tiny_roberta_dir),
        max_steps=1,
        say=lines.append,
        **FAST,
    )
    assert summary.default_params == {"learning_rate": 2e-4, "weight_decay": 0.0, "batch_size": 16}
    assert summary.default_outside_space == {"learning_rate": 1e-4, "weight_decay": 0.01}
    assert (
        "the default trial runs learning_rate=0.0002: the strategy's 0.0001 is outside the searched range "
        "[0.0002, 0.001]" in lines
    ), lines
    assert (
        "the default trial runs weight_decay=0: the strategy's 0.01 is not on the searched grid [0, 0.1] "
        "step 0.05" in lines
    ), lines
    assert not [w for w in recwarn if "Fixed parameter" in str(w.message)]


@pytest.mark.parametrize(
    ("spec", "value", "as_int", "nearest"),
    [
        ({"low": 0.0, "high": 0.1, "step": 0.05}, 0.01, False, 0.0),
        ({"low": 0.0, "high": 0.1, "step": 0.05}, 0.025, False, 0.0),  # a tie goes to the lower point
        ({"low": 0.0, "high": 0.12, "step": 0.05}, 0.2, False, 0.1),  # the last point, not high
        ({"low": 0.1, "high": 0.3, "step": 0.1}, 0.3, False, 0.3),
        ({"low": 1e-4, "high": 1e-3, "log": True}, 5e-3, False, 1e-3),
        ({"low": 4, "high": 12, "step": 4}, 7, True, 8),
        ({"low": 4, "high": 12}, 64, True, 12),
    ],
)
def test_the_nearest_searched_value(spec: dict, value: float, as_int: bool, nearest: float) -> None:
    from training.tuning.space import ParamRange
    from training.tuning.study import _nearest_searched

    assert _nearest_searched(ParamRange.model_validate(spec), value, as_int) == pytest.approx(nearest)
