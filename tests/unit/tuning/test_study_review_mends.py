"""What a review of `labelwise tune` found: a resume with other overrides published another model, a second
process failed the first one's live trial, an interrupted default trial was lost, short max_steps runs
reported nothing to the pruner, ranges that cannot vary were accepted, an edited search space crashed
mid-trial, and the CLI had no sampler seed. Each test runs a few 2-4 step trials of the tiny model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from training.tuning import SearchSpace, TuningError, run_study

from .conftest import FAST, SPACE

# A short run of the toy study: 180 train rows, so one epoch at batch 16 is 12 steps; 4 steps are a third.
SHORT = {**FAST, "max_steps": 4, "pruner": "none", "say": lambda line: None}


def _load(out: Path, name: str):  # type: ignore[no-untyped-def]
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{(out / 'study.db').resolve()}")


@pytest.fixture(scope="module")
def small_study(tune_scenario, tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A 2-trial study run with max_train_samples 60, 1 epoch and seed 7."""
    out = tmp_path_factory.mktemp("mends")
    common = {
        "study_name": "mends",
        "output_dir": out,
        "base_model": str(tiny_roberta_dir),
        "max_train_samples": 60,
        "num_train_epochs": 1,
        "seed": 7,
        **SHORT,
    }
    summary = run_study(tune_scenario, "full", trials=2, **common)
    return summary, common, out


def test_resume_with_other_overrides_is_refused_and_publish_keeps_the_studys(
    small_study, tune_scenario
) -> None:
    from model_repository import ModelRepository

    summary, common, out = small_study
    repo = ModelRepository(out / "repo")
    resumed = {k: v for k, v in common.items() if k not in ("max_train_samples", "seed")}
    with pytest.raises(TuningError) as caught:
        run_study(
            tune_scenario,
            "full",
            trials=2,
            publish=True,
            repository=repo,
            export_precisions=None,
            **{**resumed, "num_train_epochs": 3},
        )
    message = str(caught.value)
    assert "study 'mends'" in message and "--study-name" in message
    for needle in ("max_train_samples: 60 -> unset", "seed: 7 -> unset", "num_train_epochs: 1 -> 3"):
        assert needle in message
    study = _load(out, "mends")
    assert len(study.trials) == summary.trials  # refused before any trial
    assert study.user_attrs["overrides"]["max_train_samples"] == 60
    # The same settings resume (and the refused run released the study's lock): the retrain is the best
    # trial's run, on the study's own max_train_samples and seed.
    published = run_study(
        tune_scenario, "full", trials=2, publish=True, repository=repo, export_precisions=None, **common
    )
    config = repo.verify("toy", published.published_version).training_config
    assert config["max_train_samples"] == 60 and config["seed"] == 7
    assert config["params"]["num_train_epochs"] == 1


def test_resume_with_another_search_space_is_refused(small_study, tune_scenario) -> None:
    _, common, out = small_study
    before = len(_load(out, "mends").trials)
    edited = tune_scenario.model_copy(
        update={"search_space": SearchSpace.model_validate({**SPACE, "batch_size": {"choices": [8, 16]}})}
    )
    with pytest.raises(TuningError, match=r"another search space \(changed: batch_size;") as caught:
        run_study(edited, "full", trials=3, **common)
    assert "learning_rate" not in str(caught.value)
    assert len(_load(out, "mends").trials) == before  # refused before any trial, none failed mid-way


_HOLDER = """
import fcntl, os, sys
fh = open(sys.argv[1], "a+")
fcntl.flock(fh, fcntl.LOCK_EX)
fh.seek(0); fh.truncate(); fh.write(f"{os.getpid()} busy\\n"); fh.flush()
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_second_process_on_the_study_is_refused_and_leaves_its_trial_alone(
    tune_scenario, tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    """Another process runs study 'busy' (it holds the lock and a RUNNING trial): a second run must not
    fail that live trial; once the holder is gone, the trial is a dead run's and is failed on resume."""
    import optuna
    from optuna.trial import TrialState

    storage = f"sqlite:///{(tmp_path / 'study.db').resolve()}"
    optuna.create_study(study_name="busy", storage=storage, direction="maximize").ask()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path / "study.lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    kwargs = {"study_name": "busy", "output_dir": tmp_path, "base_model": str(tiny_roberta_dir)}
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            TuningError, match=rf"study 'busy' is being run by another process \(pid {holder.pid}\)"
        ):
            run_study(tune_scenario, "full", trials=1, default_trial=False, **kwargs, **SHORT)
        assert _load(tmp_path, "busy").trials[0].state == TrialState.RUNNING
    finally:
        holder.communicate(input="", timeout=30)
    summary = run_study(tune_scenario, "full", trials=1, default_trial=False, **kwargs, **SHORT)
    assert summary.failed == 1 and summary.complete == 1


class _Killed(BaseException):
    """A kill in the middle of trial 0: Optuna catches no BaseException, so the trial stays RUNNING."""


def _killed_in_its_first_trial(
    monkeypatch: pytest.MonkeyPatch, scenario: Any, kwargs: dict[str, Any]
) -> None:
    """A study of 2 trials whose process dies in its first (the default) trial: left RUNNING."""
    import training.trainer

    def killed(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(training.trainer, "train", killed)
        with pytest.raises(_Killed):
            run_study(scenario, "full", trials=2, **kwargs)


def test_an_interrupted_default_trial_runs_again(
    tune_scenario, tiny_roberta_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs = {"study_name": "killed", "output_dir": tmp_path, "base_model": str(tiny_roberta_dir), **SHORT}
    _killed_in_its_first_trial(monkeypatch, tune_scenario, kwargs)
    lines: list[str] = []
    summary = run_study(tune_scenario, "full", trials=1, **{**kwargs, "say": lines.append})
    study = _load(tmp_path, "killed")
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    assert study.trials[1].user_attrs.get("default") is True
    # the strategy's 1e-4 is below the searched range: the default trial runs its nearest point, the low
    assert tune_scenario.strategies["full"].learning_rate < SPACE["learning_rate"]["low"]
    assert study.trials[1].params["learning_rate"] == pytest.approx(SPACE["learning_rate"]["low"])
    assert summary.default_macro_f1 is not None
    assert any("the default trial (0) did not finish" in line for line in lines)


def test_max_steps_below_half_an_epoch_still_reports_to_the_pruner(
    tune_scenario, tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    """4 steps of a 12-step epoch: evaluating every 6 steps (half an epoch) would never evaluate."""
    scenario = tune_scenario.model_copy(
        update={"search_space": SearchSpace.model_validate({"learning_rate": SPACE["learning_rate"]})}
    )
    summary = run_study(
        scenario,
        "full",
        trials=1,
        study_name="short",
        output_dir=tmp_path,
        default_trial=False,
        base_model=str(tiny_roberta_dir),
        batch_size=16,
        **SHORT,
    )
    trial = _load(tmp_path, "short").trials[0]
    assert trial.user_attrs["eval_steps"] == 2  # 4 steps // 2 evaluations per epoch
    assert len(trial.intermediate_values) == 2
    assert summary.complete == 1


@pytest.mark.parametrize(
    ("space", "needle"),
    [
        ({"batch_size": {"choices": [16]}}, r"batch_size: choices \[16.0\] hold one value"),
        ({"learning_rate": {"choices": [1e-3]}}, "learning_rate: choices"),
        ({"num_train_epochs": {"low": 1, "high": 2, "step": 2}}, r"num_train_epochs: low 1 \+ step 2"),
        ({"weight_decay": {"low": 0.0, "high": 0.05, "step": 0.1}}, r"weight_decay: low 0 \+ step 0.1"),
    ],
)
def test_ranges_that_cannot_vary_are_refused(space: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        SearchSpace.model_validate(space)


def test_ranges_of_two_values_are_accepted() -> None:
    space = SearchSpace.model_validate(
        {
            "batch_size": {"choices": [16, 32]},
            "num_train_epochs": {"low": 1, "high": 2, "step": 1},
            "weight_decay": {"low": 0.1, "high": 0.3, "step": 0.2},  # 0.1 + 0.2 is a hair above 0.3
            "lora_r": {"low": 8, "high": 9},
        }
    )
    assert set(space.ranges()) == {"batch_size", "num_train_epochs", "weight_decay", "lora_r"}


def test_cli_passes_the_sampler_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import training.tuning
    from labelwise.cli import app

    seen: list[int] = []

    def fake(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs["sampler_seed"])
        raise TuningError("stop here")

    monkeypatch.setattr(training.tuning, "run_study", fake)
    base = ["tune", "-s", "spam", "--strategy", "full", "-n", "1"]
    result = CliRunner().invoke(app, [*base, "--sampler-seed", "5"])
    assert seen == [5], result.output
    CliRunner().invoke(app, base)
    assert seen == [5, 0]


def test_the_resume_hint_of_a_study_in_an_output_dir_resumes_it(
    tune_scenario, tiny_roberta_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last line said "resume with --study-name s" for a study in an --output-dir: run as said, it
    started a new study under runs/ and trained its trials again."""
    import shlex

    from typer.testing import CliRunner

    from labelwise.cli import app

    monkeypatch.setenv("LABELWISE_RUNS_DIR", str(tmp_path / "runs"))
    yaml_path = tmp_path / "toy.yaml"
    yaml_path.write_text(tune_scenario.model_dump_json())  # JSON is YAML
    base = ["tune", "-s", str(yaml_path), "--strategy", "full", "-n", "1", "-m", str(tiny_roberta_dir)]
    base += ["--max-steps", "2", "--pruner", "none"]
    first = CliRunner().invoke(app, [*base, "--study-name", "s", "-o", str(tmp_path / "my study")])
    assert first.exit_code == 0, first.output
    hint = first.output.split("resume with ")[-1]
    resumed = CliRunner().invoke(app, [*base, *shlex.split(hint)])
    assert resumed.exit_code == 0, resumed.output
    assert "study 's' already holds 1 finished trial(s): nothing to run" in resumed.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("flag", "value"), [("--sampler-seed", "-1"), ("--sampler-seed", str(2**32)), ("--timeout-s", "nan")]
)
def test_a_sampler_seed_or_timeout_out_of_range_is_refused_by_name(
    tune_scenario, tmp_path: Path, flag: str, value: str
) -> None:
    """`--sampler-seed -1` ended in numpy's ValueError traceback; `--timeout-s nan` set no limit."""
    from typer.testing import CliRunner

    from labelwise.cli import app

    yaml_path = tmp_path / "toy.yaml"
    yaml_path.write_text(tune_scenario.model_dump_json())  # JSON is YAML
    args = ["tune", "-s", str(yaml_path), "--strategy", "full", "-n", "1", "-o", str(tmp_path / "s")]
    result = CliRunner().invoke(app, [*args, flag, value])
    assert result.exit_code == 2, result.output
    assert f"error: {flag} must be" in result.output
    assert not (tmp_path / "s").exists()  # refused before any study


def test_a_second_study_in_a_study_folder_is_refused_and_the_first_kept(small_study, tune_scenario) -> None:
    """`tune -o DIR --study-name s2` where study s1 ran replaced s1's trial-000/, best_config.json and
    summary.json with its own."""
    import json

    _summary, common, out = small_study
    before = {p: p.read_bytes() for p in (out / "best_config.json", out / "summary.json")}
    with pytest.raises(TuningError, match=r"holds study 'mends'.*--study-name mends"):
        run_study(tune_scenario, "full", trials=1, **{**common, "study_name": "other"})
    assert {p: p.read_bytes() for p in before} == before
    assert json.loads((out / "summary.json").read_text())["study_name"] == "mends"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"strategy": "lora"}, "holds study 'mends', which tunes toy/full, not toy/lora"),
        ({"scenario": "other-toy"}, "holds study 'mends', which tunes toy/full, not other-toy/full"),
        (
            {"seed": 8},
            "holds study 'mends', started with other settings than this run's: other overrides "
            "(seed: 7 -> 8)",
        ),
    ],
)
def test_a_second_study_of_another_experiment_is_refused_saying_what_differs(
    small_study, tune_scenario, change: dict, needle: str
) -> None:
    """It said "resume it with --study-name mends", where that resume was refused too (another strategy,
    scenario or override than the study's)."""
    _summary, common, _out = small_study
    scenario = tune_scenario.model_copy(update={"name": change.get("scenario", tune_scenario.name)})
    settings = {k: v for k, v in change.items() if k not in ("scenario", "strategy")}
    with pytest.raises(TuningError) as caught:
        run_study(
            scenario,
            change.get("strategy", "full"),
            trials=1,
            **{**common, **settings, "study_name": "other"},
        )
    message = str(caught.value)
    assert needle in message, message
    assert "give another --output-dir" in message
    if "seed" not in change:  # no resume would run it
        assert "--study-name mends" not in message, message


@pytest.mark.parametrize(
    ("setting", "needle"),
    [
        ({"pruner": "median"}, "--pruner: 'none' -> 'median'"),
        ({"evals_per_epoch": 3}, "--evals-per-epoch: 2 -> 3"),
    ],
)
def test_resume_with_another_pruner_or_evals_per_epoch_is_refused(
    small_study, tune_scenario, setting: dict, needle: str
) -> None:
    """A study started with --pruner none resumed under --pruner median (or --evals-per-epoch 3) ran its
    new trials under another pruning schedule than the old ones, silently."""
    _, common, out = small_study
    before = len(_load(out, "mends").trials)
    with pytest.raises(TuningError) as caught:
        run_study(tune_scenario, "full", trials=before + 1, **{**common, **setting})
    message = str(caught.value)
    assert needle in message and "overrides" not in message
    assert "--study-name" in message and "--output-dir" in message  # what to do instead
    assert len(_load(out, "mends").trials) == before  # refused before any trial


def test_a_study_that_recorded_no_pruning_takes_this_runs_and_keeps_it(
    small_study, tune_scenario, tmp_path: Path
) -> None:
    """A study written before --pruner and --evals-per-epoch were recorded resumes: this run's are taken as
    the study's (said), and a later resume with others is refused."""
    import shutil
    import sqlite3

    _, common, out = small_study
    shutil.copy(out / "study.db", tmp_path / "study.db")
    with sqlite3.connect(tmp_path / "study.db") as db:
        assert db.execute("DELETE FROM study_user_attributes WHERE key = 'pruning'").rowcount == 1
    finished = sum(t.state.is_finished() for t in _load(tmp_path, "mends").trials)
    said: list[str] = []
    legacy = {**common, "output_dir": tmp_path, "say": said.append}
    run_study(tune_scenario, "full", trials=finished, **{**legacy, "pruner": "hyperband"})
    assert any("recorded no --pruner nor --evals-per-epoch" in line for line in said), said
    assert _load(tmp_path, "mends").user_attrs["pruning"] == {"--evals-per-epoch": 2, "--pruner": "hyperband"}
    with pytest.raises(TuningError, match="--pruner: 'hyperband' -> 'none'"):
        run_study(tune_scenario, "full", trials=finished, **legacy)


def test_data_warnings_are_said_once_a_study(
    tune_scenario,
    tiny_roberta_dir: Path,
    toy_data_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every trial (and the --publish retrain) prepares the study's data again: its warnings (here a
    validation text seen in train, a text under two labels) were said again by each. A train run after the
    study says them as before."""
    import csv

    from model_repository import ModelRepository
    from tests.conftest import write_rows
    from training import make_train_config, prepare_data

    def rows(name: str) -> list[tuple[str, str]]:
        with (toy_data_dir / name).open(newline="") as fh:
            return [(r["text"], r["label"]) for r in csv.DictReader(fh)]

    train = rows("train.csv")
    write_rows(
        tmp_path / "d" / "train.csv",
        [*train, (train[0][0], "neutral" if train[0][1] != "neutral" else "positive")],
    )
    write_rows(tmp_path / "d" / "validation.csv", [*rows("validation.csv"), train[1]])
    scenario = tune_scenario.model_copy(
        update={
            "train_file": str(tmp_path / "d" / "train.csv"),
            "validation_file": str(tmp_path / "d" / "validation.csv"),
        }
    )
    needles = ("repeat a train text", "more than one label")
    with caplog.at_level("WARNING", logger="training"):
        run_study(
            scenario,
            "full",
            trials=2,
            study_name="said",
            output_dir=tmp_path / "study",
            base_model=str(tiny_roberta_dir),
            publish=True,
            repository=ModelRepository(tmp_path / "repo"),
            export_precisions=None,
            **SHORT,
        )
        said = [r.getMessage() for r in caplog.records]
        assert [sum(needle in line for line in said) for needle in needles] == [1, 1], said
        caplog.clear()
        prepare_data(make_train_config(scenario, "full", output_dir=tmp_path / "run"))
        said = [r.getMessage() for r in caplog.records]
        assert [sum(needle in line for line in said) for needle in needles] == [1, 1], said


def test_a_failed_default_trial_is_not_queued_by_a_resume_that_runs_nothing(
    tune_scenario, tiny_roberta_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resume whose --trials the study already held said "the default trial did not finish: it runs
    again", ran nothing, and left the default queued (WAITING): the summary's trials were one more than its
    complete, pruned and failed ones."""
    kwargs = {"study_name": "held", "output_dir": tmp_path, "base_model": str(tiny_roberta_dir), **SHORT}
    _killed_in_its_first_trial(monkeypatch, tune_scenario, kwargs)
    run_study(tune_scenario, "full", trials=1, default_trial=False, **kwargs)  # trial 1 finishes
    lines: list[str] = []
    summary = run_study(tune_scenario, "full", trials=1, **{**kwargs, "say": lines.append})
    assert [t.state.name for t in _load(tmp_path, "held").trials] == ["FAIL", "COMPLETE"]
    assert summary.trials == summary.complete + summary.pruned + summary.failed == 2
    assert not any("it runs again" in line for line in lines), lines
    assert any(
        "the default trial (0) did not finish: it runs on a resume with --trials above 1" in line
        for line in lines
    ), lines
    # and it does run on such a resume
    summary = run_study(tune_scenario, "full", trials=2, **kwargs)
    study = _load(tmp_path, "held")
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert study.trials[2].user_attrs.get("default") is True and summary.default_macro_f1 is not None


def test_a_relative_data_path_is_recorded_resolved_and_a_resume_elsewhere_is_refused(
    tune_scenario, tiny_roberta_dir: Path, toy_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--data train.csv was recorded as typed: a resume from another folder, holding another train.csv,
    compared equal and trained its trials on that other file."""
    import shutil

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(toy_data_dir / "train.csv", elsewhere / "train.csv")
    kwargs = {
        "study_name": "rel",
        "output_dir": tmp_path / "study",
        "base_model": str(tiny_roberta_dir),
        "data": Path("train.csv"),
        **SHORT,
    }
    monkeypatch.chdir(toy_data_dir)
    run_study(tune_scenario, "full", trials=1, **kwargs)
    recorded = _load(tmp_path / "study", "rel").user_attrs["overrides"]["data"]
    assert recorded == str((toy_data_dir / "train.csv").resolve())
    run_study(tune_scenario, "full", trials=1, **kwargs)  # the same file, typed from the same folder
    monkeypatch.chdir(elsewhere)
    with pytest.raises(
        TuningError, match=r"other overrides \(data: '.*toy-data.*' -> '.*elsewhere/train.csv'\)"
    ):
        run_study(tune_scenario, "full", trials=2, **kwargs)
    assert len(_load(tmp_path / "study", "rel").trials) == 1
    # a study that recorded the path as typed resumes from the folder it names a file in, and records it
    study = _load(tmp_path / "study", "rel")
    study.set_user_attr("overrides", {**study.user_attrs["overrides"], "data": "train.csv"})
    said: list[str] = []
    run_study(tune_scenario, "full", trials=1, **{**kwargs, "say": said.append})
    assert any("recorded data as typed" in line for line in said), said
    recorded = _load(tmp_path / "study", "rel").user_attrs["overrides"]["data"]
    assert recorded == str((elsewhere / "train.csv").resolve())


def test_a_relative_base_model_folder_is_recorded_resolved_and_a_resume_elsewhere_is_refused(
    tune_scenario, tiny_roberta_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--base-model ./models/tiny was recorded as typed: a resume from another folder, holding another
    models/tiny, compared equal and trained its trials on that other model. A hub id stays as typed."""
    import shutil

    from training.tuning.study import _resolved_paths

    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    for root in (here, elsewhere):
        shutil.copytree(tiny_roberta_dir, root / "models" / "tiny")
    folder = str((here / "models" / "tiny").resolve())
    kwargs = {"study_name": "rel", "output_dir": tmp_path / "study", "base_model": "./models/tiny", **SHORT}
    monkeypatch.chdir(here)
    run_study(tune_scenario, "full", trials=1, **kwargs)
    assert _load(tmp_path / "study", "rel").user_attrs["overrides"]["base_model"] == folder
    run_study(tune_scenario, "full", trials=2, **{**kwargs, "base_model": folder})  # the same folder
    monkeypatch.chdir(elsewhere)
    with pytest.raises(
        TuningError,
        match=r"other overrides \(base_model: '.*here/models/tiny' -> '.*elsewhere/models/tiny'\)",
    ):
        run_study(tune_scenario, "full", trials=3, **kwargs)
    assert len(_load(tmp_path / "study", "rel").trials) == 2
    # a study that recorded the folder as typed resumes from the folder it names, and records it resolved
    study = _load(tmp_path / "study", "rel")
    study.set_user_attr("overrides", {**study.user_attrs["overrides"], "base_model": "./models/tiny"})
    monkeypatch.chdir(here)
    said: list[str] = []
    run_study(tune_scenario, "full", trials=2, **{**kwargs, "say": said.append})
    assert any("recorded base_model as typed" in line for line in said), said
    assert _load(tmp_path / "study", "rel").user_attrs["overrides"]["base_model"] == folder
    # a hub id (no folder here) names no file: recorded as typed
    assert _resolved_paths({"base_model": "distilroberta-base"}) == {"base_model": "distilroberta-base"}
