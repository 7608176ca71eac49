"""An Optuna study over a scenario's search space: TPE sampling, pruning on intermediate macro-F1, SQLite.

Every trial is one `training.train` run whose evaluations (evals_per_epoch per epoch, i.e. every
`eval_steps` optimizer steps) are reported to Optuna, so the pruner sees a learning curve and stops trials
below the median early. The study lives in <run folder>/study.db and resumes by name; trial 0 of a new study
runs the strategy's default values (the nearest searched value where a default is not one: the summary's
default_outside_space names it), so the summary can say what tuning bought (run again by a resume that runs
trials when the run that held it was interrupted).

A study is one experiment: it records its scenario, strategy, search space, overrides (data paths and a
base model folder resolved, max_train_samples, seed, ...) and pruning schedule (--pruner,
--evals-per-epoch) when it starts, and a resume that changes any of them is refused, since its trials would
not be comparable and the --publish retrain would not be the best trial's run. A study started before its
overrides or its pruning schedule were recorded takes this run's as its own (and says so): nothing in the
study tells what it ran with. One process runs a study at a time: it holds <run folder>/study.lock for the
whole run, so that the RUNNING trials a resume fails are those of a dead run, never of a live one.

A pruned trial stops as an early-stopped run does (the Trainer ends its loop and closes its TensorBoard
writer), so it also pays one last validation pass; the frozen head's loop is stopped by the exception.

best_config.json and the --publish retrain are the best trial's run: its hyperparameters and its evaluation
schedule (`eval_steps`), on which early-stopping patience (counted in evaluations) and the checkpoint kept
(the best evaluation's) depend. What still differs: a trial is scored as it ran (no collapse restarts), while
the retrain keeps them; they change the retrain only when the best trial itself collapsed (it then trains
again at a lower rate, recorded in metrics.collapse_restarts, instead of being refused at publish).

`num_train_epochs` is not searched when it cannot change a run: when max_steps fixes every run's length, or
when min_train_steps raises every epoch value of the range to the same planned epochs (trainer's
planned_epochs: on the packaged scenarios' 1,200 steps, 1, 2 and 3 epochs of 1,000 rows all train ~19
epochs). The summary's `not_searched` says why.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import gc
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field

from model_repository.layout import is_number

from ..errors import TuningError
from .space import FROZEN_SKIPS, INT_PARAMS, SearchSpace, default_search_space

log = logging.getLogger(__name__)

PRUNERS = ("median", "hyperband", "none")

# A study's run folders, in its --output-dir: one per trial, and best/ for the best configuration's retrain.
BEST_RUN_FOLDER = "best"


def trial_folder_name(number: int) -> str:
    return f"trial-{number:03d}"


def is_study_run_folder(name: str) -> bool:
    """Whether `name`, a folder in a study's --output-dir, is one of its run folders (a trial's, or best/):
    each is a train run folder, and its weights/, tensorboard/ and checkpoints/ are cleared as such."""
    number = name.removeprefix("trial-")
    return name == BEST_RUN_FOLDER or (
        number != name and is_number(number) and name == trial_folder_name(int(number))
    )


class StudySummary(BaseModel):
    """What a tune run found; written to summary.json and, with --publish, into the manifest's extra."""

    study_name: str = Field(description="Optuna study name (pass it as --study-name to resume).")
    scenario: str = Field(description="Scenario tuned.")
    strategy: str = Field(description="Strategy tuned.")
    storage: str = Field(description="Optuna storage URL (SQLite under the run folder).")
    output_dir: str = Field(description="Run folder of the study.")
    trials: int = Field(description="Trials in the study, any state.")
    complete: int = Field(description="Trials that finished.")
    pruned: int = Field(description="Trials the pruner stopped early.")
    failed: int = Field(description="Trials that raised or were interrupted.")
    best_trial: int | None = Field(description="Number of the best trial.")
    best_macro_f1: float | None = Field(description="Validation macro-F1 of the best trial.")
    best_accuracy: float | None = Field(description="Validation accuracy of the best trial.")
    best_params: dict[str, Any] = Field(description="Hyperparameters of the best trial.")
    default_macro_f1: float | None = Field(description="Macro-F1 of the default-hyperparameter trial.")
    default_params: dict[str, Any] = Field(description="Values the default trial ran with.")
    search_space: dict[str, Any] = Field(description="The dimensions searched.")
    wall_time_s: float = Field(description="Wall time of this invocation in seconds.")
    best_config_path: str | None = Field(
        description="best_config.json: the resolved TrainConfig of the best (its eval_steps included)."
    )
    not_searched: dict[str, str] = Field(
        default_factory=dict,
        description="Dimensions of the search space left out because they cannot change a run, and why.",
    )
    default_outside_space: dict[str, Any] = Field(
        default_factory=dict,
        description="Dimensions whose strategy default is not a searched value (one of the choices, or a "
        "point of low..high on its step), with that default: the default trial ran the nearest searched "
        "value (default_params) instead.",
    )
    plots: list[str] = Field(default_factory=list, description="PNG plots written.")
    published_version: int | None = Field(default=None, description="Version published with --publish.")


def tune_dir(scenario: str, study_name: str) -> Path:
    """runs/<scenario>/tune-<study name>/ (under $LABELWISE_RUNS_DIR)."""
    from ..config import default_runs_dir

    return default_runs_dir() / scenario / f"tune-{study_name}"


def _pruner(name: str) -> Any:
    import optuna

    if name == "median":
        # Two complete curves before judging anyone; then any evaluation below the median prunes.
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def _reporter(trial: Any) -> Any:
    """A TrainerCallback that reports each evaluation's macro-F1 and stops the run when the pruner says so.

    In a Trainer run it stops the loop (control.should_training_stop) and records why in `pruned`; the
    objective raises optuna.TrialPruned once train() has returned. Raising inside the Trainer would skip
    its on_train_end, and with it the close of the TensorBoard writer: one writer thread leaked per pruned
    trial. The frozen head's loop passes no control and opens its writer only after the loop: it raises."""
    import optuna
    from transformers import TrainerCallback

    class PruningReporter(TrainerCallback):
        def __init__(self) -> None:
            self.evaluations = 0
            self.pruned: str | None = None

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # type: ignore[no-untyped-def]
            if self.pruned is not None or not metrics or "eval_macro_f1" not in metrics:
                return
            self.evaluations += 1
            # Step = evaluation index: comparable across batch sizes, unlike the optimizer step.
            trial.report(float(metrics["eval_macro_f1"]), step=self.evaluations)
            if trial.should_prune():
                self.pruned = f"macro-F1 {metrics['eval_macro_f1']:.4f} at evaluation {self.evaluations}"
                if control is None:
                    raise optuna.TrialPruned(self.pruned)
                control.should_training_stop = True

    return PruningReporter()


def _eval_steps(n_train: int, batch_size: int, evals_per_epoch: int, max_steps: int | None = None) -> int:
    """Optimizer steps between two evaluations of a trial: evals_per_epoch evaluations per epoch.

    A max_steps shorter than an epoch is the whole run: it gets the evals_per_epoch evaluations, or the
    trial would end before its first one and report nothing to the pruner."""
    steps = max(1, math.ceil(math.ceil(n_train / batch_size) / evals_per_epoch))
    if max_steps is not None:
        steps = min(steps, max(1, max_steps // evals_per_epoch))
    return steps


def _values(spec: Any) -> list[float]:
    return [float(v) for v in (spec.choices if spec.choices is not None else [spec.low, spec.high])]


def _inert_epochs(ranges: dict[str, Any], base_config: Any, n_train: int) -> str | None:
    """Why searching num_train_epochs cannot change any trial's run, or None when it can.

    max_steps ends every run whatever the epochs. min_train_steps raises num_train_epochs to
    min_train_steps / steps per epoch (trainer.planned_epochs); that floor is lowest at the smallest batch
    size searched (most steps per epoch), so when every epoch value of the range plans the same epochs
    there, it does at every batch size."""
    from ..trainer import planned_epochs

    spec = ranges.get("num_train_epochs")
    if spec is None:
        return None
    if base_config.max_steps is not None:
        return f"max_steps {base_config.max_steps} sets the length of every run"
    params = base_config.params
    if not params.min_train_steps:
        return None
    batch = ranges.get("batch_size")
    smallest = int(min(_values(batch))) if batch is not None else params.batch_size
    epochs = _values(spec)
    planned = {
        planned_epochs(params.model_copy(update={"num_train_epochs": e, "batch_size": smallest}), n_train)
        for e in (min(epochs), max(epochs))
    }
    if len(planned) > 1:
        return None
    return (
        f"min_train_steps {params.min_train_steps} sets the length of every run: with {n_train} train rows "
        f"and batch size {smallest} or more, every num_train_epochs from {min(epochs):g} to {max(epochs):g} "
        f"trains at least {planned.pop():g} epochs"
    )


def _check_space(space: SearchSpace, strategy: str, base_params: Any) -> dict[str, Any]:
    """Every extreme of every dimension must make valid StrategyParams: fail before any trial runs."""
    from pydantic import ValidationError

    from ..config import StrategyParams

    ranges = space.ranges(strategy)
    if not ranges:
        why = "LoRA ones apply to lora only"
        if strategy == "frozen":  # a frozen space of epochs and warm-up was told only of LoRA
            why += (
                f"; frozen searches none of {sorted(FROZEN_SKIPS)}: its head keeps its best epoch, unwarmed"
            )
        raise TuningError(
            f"the search space has no dimension for strategy {strategy!r} "
            f"(declared: {sorted(space.ranges())}; {why})"
        )
    for name, spec in ranges.items():
        for value in spec.choices if spec.choices is not None else [spec.low, spec.high]:
            try:
                StrategyParams.model_validate({**base_params.model_dump(), name: value})
            except ValidationError as exc:
                raise TuningError(f"search_space.{name}: value {value} is not allowed: {exc}") from exc
    return ranges


def _default_values(ranges: dict[str, Any], base_params: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The default trial's values for the searched dimensions: the strategy's own, except that a default
    Optuna cannot run (not one of the choices, outside low..high, or off its step) runs as the nearest value
    searched; Optuna would run it anyway, with a warning, outside the space. Second: those dimensions, with
    the strategy's own value, for the summary to say so."""
    values: dict[str, Any] = {}
    outside: dict[str, Any] = {}
    for name, spec in ranges.items():
        value = getattr(base_params, name)
        nearest = _nearest_searched(spec, float(value), name in INT_PARAMS)
        if not math.isclose(nearest, float(value), rel_tol=1e-9, abs_tol=1e-12):
            outside[name] = value
            value = int(nearest) if name in INT_PARAMS else nearest
        values[name] = value
    return values, outside


def _nearest_searched(spec: Any, value: float, as_int: bool) -> float:
    """The searched value nearest `value`, the lower of two as near: a choice, or a point of low..high on its
    step (1 for an integer, as SearchSpace.suggest asks Optuna)."""
    if spec.choices is not None:
        return float(min(spec.choices, key=lambda choice: (abs(float(choice) - value), float(choice))))
    nearest = min(max(value, spec.low), spec.high)
    step = spec.step if spec.step is not None else (1 if as_int else None)
    if step is not None:
        points = math.floor((spec.high - spec.low) / step + 1e-8)  # the last grid point at or below high
        k = min(points, max(0, math.ceil((nearest - spec.low) / step - 0.5)))  # ceil(x - .5): a tie goes down
        nearest = min(spec.high, spec.low + k * step)
    return nearest


def _not_searched_because(spec: Any, value: Any) -> str:
    """Why the strategy's `value` is not a value searched: what the default trial's line says of it."""
    if spec.choices is not None:  # _fmt: choices are floats, "batch_size=32.0"
        return f"is not one of the searched choices [{', '.join(_fmt(choice) for choice in spec.choices)}]"
    where = f"[{_fmt(spec.low)}, {_fmt(spec.high)}]" + (f" step {_fmt(spec.step)}" if spec.step else "")
    if spec.low <= float(value) <= spec.high:
        return f"is not on the searched grid {where}"
    return f"is outside the searched range {where}"


def _mark_stale_running(study: Any, out: Path, say: Callable[[str], None]) -> None:
    """A killed process leaves its trial RUNNING forever: fail it so that resuming counts it correctly.

    Only called under the study's lock (_study_lock): no other process runs the study, so every RUNNING
    trial is a dead run's. Without the lock a second process would fail the first one's live trial, and
    the first would then crash telling Optuna the trial's result. The dead trial's checkpoints go, as a
    finished trial's do: its killed objective never cleared them, and no trial resumes from them."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # Study.tell by trial number: Optuna's public way to finish a trial another process started.
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        shutil.rmtree(out / trial_folder_name(trial.number) / "checkpoints", ignore_errors=True)
        say(f"trial {trial.number} was left running by an interrupted run: marked failed")


@contextlib.contextmanager
def _study_lock(out: Path, study_name: str) -> Iterator[None]:
    """Hold <out>/study.lock (flock, exclusive) for a run of the study; refuse at once if another holds it.

    The folder is locked, not the study name: trial folders, best_config.json and summary.json live there
    too. The lock goes with the process (a killed run leaves no stale lock); the pid and study written into
    the file only name the holder in the refusal."""
    path = out / "study.lock"
    with open(path, "a+") as fh:  # "a+": a refused run must not wipe the holder's pid
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().split()
            pid = holder[0] if holder else "unknown"
            other = holder[1] if len(holder) > 1 else study_name
            if other == study_name:
                raise TuningError(
                    f"study {study_name!r} is being run by another process (pid {pid}) in {out}: wait for "
                    f"it to end, or start a new study with another --study-name"
                ) from None
            raise TuningError(
                f"study {study_name!r}: its folder {out} is in use by another process (pid {pid}) running "
                f"study {other!r}; give this study another --output-dir or --study-name"
            ) from None
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()} {study_name}\n")
            fh.flush()
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# Overrides that name files: a study records them resolved, since a relative --data typed again in another
# folder names another file. base_model too where it names a folder here (as resolve_base_model reads it
# first), and as typed otherwise: a hub id or the alias 'minilm' names the same model from any folder.
_PATH_OVERRIDES = frozenset({"data", "validation_data", "data_dir"})


def _resolved_paths(overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides with the file ones, and a base_model folder, resolved from this working directory."""

    def names_a_file(key: str, value: Any) -> bool:
        if value is None:
            return False
        return key in _PATH_OVERRIDES or (key == "base_model" and Path(value).expanduser().is_dir())

    return {k: str(Path(v).expanduser().resolve()) if names_a_file(k, v) else v for k, v in overrides.items()}


def _jsonable(overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides as the study's user_attrs store them (paths as strings): what a resume compares."""
    from pydantic_core import to_jsonable_python

    return {k: to_jsonable_python(v) for k, v in sorted(overrides.items())}


def _changes(was: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """'key: recorded -> now' for every key whose value differs ('unset' where a side lacks it)."""
    unset = object()

    def show(value: Any) -> str:
        return "unset" if value is unset else repr(value)

    return [
        f"{k}: {show(was.get(k, unset))} -> {show(now.get(k, unset))}"
        for k in sorted(set(was) | set(now))
        if was.get(k, unset) != now.get(k, unset)
    ]


# What a refused resume may do instead: its folder holds one study per name, and an --output-dir is
# one study's folder (a second study there is refused).
_NEW_STUDY = (
    "start a new study in a new folder: another --study-name, and another --output-dir where one is given"
)


def _resume_problems(
    attrs: dict[str, Any], overrides: dict[str, Any], space: dict[str, Any], pruning: dict[str, Any]
) -> list[str]:
    """What of a study's recorded settings (its user_attrs) this run's differ from, one phrase each."""
    problems: list[str] = []
    recorded = attrs.get("overrides")
    if recorded is not None:  # a study started before file overrides were resolved: read from here
        recorded = _resolved_paths(recorded)
    if recorded is not None and recorded != overrides:
        problems.append(f"other overrides ({'; '.join(_changes(recorded, overrides))})")
    recorded_space = attrs.get("search_space")
    if recorded_space is not None and recorded_space != space:
        changed = sorted(k for k in set(recorded_space) | set(space) if recorded_space.get(k) != space.get(k))
        problems.append(
            f"another search space (changed: {', '.join(changed)}; "
            f"{'; '.join(_changes(recorded_space, space))})"
        )
    recorded_pruning = attrs.get("pruning")
    if recorded_pruning is not None and recorded_pruning != pruning:
        problems.append(f"another pruning schedule ({'; '.join(_changes(recorded_pruning, pruning))})")
    return problems


def _check_resume(
    study: Any,
    study_name: str,
    out: Path,
    overrides: dict[str, Any],
    space: dict[str, Any],
    pruning: dict[str, Any],
) -> None:
    """A resume must run the experiment the study started: the same overrides, search space and pruning.

    Other overrides (max_train_samples, seed, epochs, ...) would score the new trials on other runs than
    the old ones, and the --publish retrain (these overrides + the best trial's params) would not be the
    best trial's run. Another search space crashes Optuna mid-trial (a categorical's choices cannot
    change) or leaves old trials outside the new ranges. Another --pruner or --evals-per-epoch stops the new
    trials by another rule, or judges them at other points of their curves, than the old ones."""
    problems = _resume_problems(study.user_attrs, overrides, space, pruning)
    if problems:
        raise TuningError(
            f"study {study_name!r} in {out} was started with other settings than this run's: "
            f"{' and '.join(problems)}. A study is one experiment: resume it with the settings it started "
            f"with (the recorded value is left of each '->'), or {_NEW_STUDY}"
        )


class _SaidOnce(logging.Filter):
    """A logging filter that lets each message through once (see _data_warnings_said_once)."""

    def __init__(self) -> None:
        super().__init__()
        self.said: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.said:
            return False
        self.said.add(message)
        return True


_Run = TypeVar("_Run", bound=Callable[..., Any])


def _data_warnings_said_once(run: _Run) -> _Run:
    """run_study says its data's warnings once: the check before the first trial, every trial and the
    --publish retrain each prepare the study's data (training.data.prepare_data), and said them each time
    (a validation text seen in train, texts under two labels...). A train run still says them."""

    @functools.wraps(run)
    def once(*args: Any, **kwargs: Any) -> Any:
        data_log, said = logging.getLogger("training.data"), _SaidOnce()
        data_log.addFilter(said)
        try:
            return run(*args, **kwargs)
        finally:
            data_log.removeFilter(said)

    return once  # type: ignore[return-value]


@_data_warnings_said_once
def run_study(
    scenario: Any,
    strategy: str,
    *,
    trials: int,
    timeout_s: float | None = None,
    study_name: str | None = None,
    pruner: Literal["median", "hyperband", "none"] = "median",
    evals_per_epoch: int = 2,
    sampler_seed: int = 0,
    default_trial: bool = True,
    output_dir: str | Path | None = None,
    publish: bool = False,
    repository: Any = None,
    export_precisions: list[str] | str | None = "auto",
    alias: str | None = None,
    say: Callable[[str], None] = print,
    flags: Callable[[str], str] | None = None,
    **overrides: Any,
) -> StudySummary:
    """Run (or resume) a study until it holds `trials` finished (complete or pruned) trials.

    overrides go to every trial's make_train_config (base_model, max_train_samples, max_length_tokens,
    data, ...); the sampled hyperparameters take precedence over them. flags: the option an override is
    given as (the CLI's `--max-length` for max_length_tokens), which a refused value names.
    """
    import optuna

    from ..config import load_scenario, make_train_config
    from ..data import prepare_data
    from ..publish import publish_run
    from ..trainer import train

    if publish and alias:  # before any trial: a bad alias name costs no study
        from model_repository import check_alias_name

        from ..publish import requested_precisions

        check_alias_name(alias)
        if not requested_precisions(export_precisions):  # nor an alias no replica could load
            raise TuningError(
                f"--alias {alias} with --export none: a version without ONNX graphs cannot serve, so no "
                "alias may point at it; export (e.g. --export fp32,int8) or publish without --alias"
            )
    if trials < 1:
        raise TuningError(f"--trials must be at least 1, got {trials}")
    if timeout_s is not None and not timeout_s > 0:  # nan too: it compared false and set no limit
        raise TuningError(f"--timeout-s must be > 0, got {timeout_s}")
    if not 0 <= sampler_seed < 2**32:  # numpy's seed range: a traceback from TPESampler otherwise
        raise TuningError(f"--sampler-seed must be between 0 and 2**32 - 1, got {sampler_seed}")
    if pruner not in PRUNERS:
        raise TuningError(f"--pruner: unknown pruner {pruner!r}: choose one of {list(PRUNERS)}")
    if evals_per_epoch < 1:
        raise TuningError(f"--evals-per-epoch must be at least 1, got {evals_per_epoch}")
    if study_name is not None and not study_name.replace("-", "").replace("_", "").isalnum():
        raise TuningError(f"--study-name {study_name!r}: use letters, digits, '-' and '_' only")
    if isinstance(scenario, str):
        scenario = load_scenario(scenario)
    if publish and alias:  # nor an alias whose file cannot be written (a file where its folder goes)
        from model_repository import ModelRepository, RepositoryError

        repo = repository if isinstance(repository, ModelRepository) else ModelRepository(repository)
        try:
            repo.check_alias_writable(scenario.name, alias)
        except RepositoryError as exc:
            raise TuningError(f"--alias {alias}: {exc}; no trial was run") from exc
    overrides = {k: v for k, v in overrides.items() if v is not None}
    # the overrides are checked here, once, before any trial: a refusal names them as `flags` says
    base_config = make_train_config(scenario, strategy, output_dir=Path("unused"), flags=flags, **overrides)
    space = scenario.search_space or default_search_space()
    ranges = _check_space(space, strategy, base_config.params)
    n_train = len(prepare_data(base_config).train)  # data errors surface here, before any trial
    not_searched: dict[str, str] = {}
    why = _inert_epochs(ranges, base_config, n_train)
    if why is not None:
        not_searched["num_train_epochs"] = why
        ranges = {k: v for k, v in ranges.items() if k != "num_train_epochs"}
        space = space.model_copy(update={"num_train_epochs": None})  # what trials suggest
        if not ranges:
            raise TuningError(
                f"the search space holds only num_train_epochs, which cannot change a run: {why}"
            )
        say(f"num_train_epochs is not searched: {why}")
    default_values, default_outside = _default_values(ranges, base_config.params)
    overrides = _resolved_paths(overrides)  # after the checks above, whose refusals name the paths as typed

    study_name = study_name or f"{strategy}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out = Path(output_dir) if output_dir is not None else tune_dir(scenario.name, study_name)
    out.mkdir(parents=True, exist_ok=True)
    with _study_lock(out, study_name):
        storage = f"sqlite:///{(out / 'study.db').resolve()}"
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        searched = {k: v.model_dump(exclude_none=True) for k, v in ranges.items()}
        run_overrides = _jsonable(overrides)
        # keyed by flag, as the refusal of a resume names them
        pruning = {"--evals-per-epoch": evals_per_epoch, "--pruner": pruner}
        # one study a folder: its trial-NNN/, best/, best_config.json, summary.json and plots are named by
        # nothing else, so a second study under the same --output-dir replaced the first one's
        others = (
            [
                found
                for found in optuna.study.get_all_study_summaries(storage, include_best_trial=False)
                if found.study_name != study_name
            ]
            if (out / "study.db").exists()
            else []
        )
        if others:
            other, attrs = others[0].study_name, others[0].user_attrs
            held = (attrs.get("scenario"), attrs.get("strategy"))
            if held not in ((None, None), (scenario.name, strategy)):  # a resume of it is refused too
                what, instead = f", which tunes {held[0]}/{held[1]}, not {scenario.name}/{strategy}", ""
            elif problems := _resume_problems(attrs, run_overrides, searched, pruning):
                what = f", started with other settings than this run's: {' and '.join(problems)}"
                instead = (
                    f"resume it with --study-name {other} and the settings it started with (the recorded "
                    "value is left of each '->'), or "
                )
            else:
                what, instead = "", f"resume it with --study-name {other}, or "
            raise TuningError(
                f"{out} holds study {other!r}{what}: study {study_name!r} there would replace its trial "
                f"folders, best_config.json and summary.json; {instead}give another --output-dir"
            )
        study = optuna.create_study(
            study_name=study_name,
            storage=storage,
            direction="maximize",
            pruner=_pruner(pruner),
            load_if_exists=True,
        )
        # Offset the seed by the trials already stored: a resumed run with the same seed would otherwise
        # replay the first run's random draws and repeat its trials. Small studies leave random startup
        # sooner than Optuna's default of 10 trials, so that TPE gets to model some of them.
        study.sampler = optuna.samplers.TPESampler(
            seed=(sampler_seed + len(study.trials)) % 2**32, n_startup_trials=max(3, min(10, trials // 3))
        )
        recorded = study.user_attrs.get("scenario"), study.user_attrs.get("strategy")
        if recorded == (None, None):
            study.set_user_attr("scenario", scenario.name)
            study.set_user_attr("strategy", strategy)
            study.set_user_attr("search_space", searched)
            study.set_user_attr("overrides", run_overrides)
            study.set_user_attr("pruning", pruning)
        elif recorded != (scenario.name, strategy):
            raise TuningError(
                f"study {study_name!r} in {out} tunes {recorded[0]}/{recorded[1]}, "
                f"not {scenario.name}/{strategy}: resume it with that scenario and strategy, or {_NEW_STUDY}"
            )
        else:
            _check_resume(study, study_name, out, run_overrides, searched, pruning)
            if "overrides" not in study.user_attrs:  # a study started before overrides were recorded
                say(f"study {study_name!r} recorded no overrides: this run's are recorded as the study's")
                study.set_user_attr("overrides", run_overrides)
            elif study.user_attrs["overrides"] != run_overrides:  # the same, but for relative file paths
                typed = [k for k, v in run_overrides.items() if study.user_attrs["overrides"].get(k) != v]
                say(
                    f"study {study_name!r} recorded {', '.join(typed)} as typed: recorded resolved from this "
                    f"folder, {Path.cwd()}"
                )
                study.set_user_attr("overrides", run_overrides)
            if "pruning" not in study.user_attrs:  # nor --pruner and --evals-per-epoch
                say(
                    f"study {study_name!r} recorded no --pruner nor --evals-per-epoch: this run's (--pruner "
                    f"{pruner}, --evals-per-epoch {evals_per_epoch}) are recorded as the study's"
                )
                study.set_user_attr("pruning", pruning)
        if not_searched or "not_searched" in study.user_attrs:  # this invocation's, on a resume too
            study.set_user_attr("not_searched", not_searched)
        _mark_stale_running(study, out, say)
        from optuna.trial import TrialState

        finished_states = (TrialState.COMPLETE, TrialState.PRUNED)
        done = len(study.get_trials(deepcopy=False, states=finished_states))
        remaining = trials - done
        # The default trial of a run interrupted before it finished is FAIL now: enqueue it again, or the
        # summary could never say what tuning bought. A study started with --no-default-trial gets none.
        defaults = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("default")]
        kept = (*finished_states, TrialState.WAITING)
        if default_trial and (not study.trials or defaults) and not any(t.state in kept for t in defaults):
            if remaining <= 0:  # queued, it would wait unrun: a trial the summary counts in no state
                say(
                    f"the default trial ({defaults[-1].number}) did not finish: it runs on a resume with "
                    f"--trials above {done}"
                )
            else:
                if defaults:
                    say(f"the default trial ({defaults[-1].number}) did not finish: it runs again")
                study.enqueue_trial(default_values, user_attrs={"default": True})
                for name, own in default_outside.items():
                    say(
                        f"the default trial runs {name}={_fmt(default_values[name])}: the strategy's {own} "
                        f"{_not_searched_because(ranges[name], own)}"
                    )
        if done and remaining > 0:  # else the line below says so: not "-2 to go"
            say(f"resuming study {study_name!r}: {done} finished trial(s), {remaining} to go")
        started = time.perf_counter()

        def objective(trial: Any) -> float:
            params = space.suggest(trial, strategy)
            batch = params.get("batch_size", base_config.params.batch_size)
            eval_steps = _eval_steps(n_train, batch, evals_per_epoch, base_config.max_steps)
            config = make_train_config(
                scenario,
                strategy,
                output_dir=out / trial_folder_name(trial.number),
                **{"eval_steps": eval_steps, **overrides, **params},
            )
            # The schedule the trial is measured on: best_config and the --publish retrain train on it too.
            trial.set_user_attr("eval_steps", config.eval_steps)
            reporter = _reporter(trial)
            try:
                result = train(config, extra_callbacks=[reporter], collapse_restarts=0)
            finally:
                # A pruned trial leaves its checkpoints behind: only the study and the plots matter.
                shutil.rmtree(Path(config.output_dir) / "checkpoints", ignore_errors=True)
            if reporter.pruned is not None:  # the Trainer stopped at the pruner's word and ended cleanly
                del result
                gc.collect()
                raise optuna.TrialPruned(reporter.pruned)
            trial.set_user_attr("collapsed", bool(result.metrics.get("collapsed")))
            trial.set_user_attr("accuracy", result.metrics["accuracy"])
            trial.set_user_attr("train_time_s", round(result.train_time_s, 2))
            trial.set_user_attr("evaluations", reporter.evaluations)
            value = float(result.metrics["macro_f1"])
            del result
            gc.collect()
            return value

        def progress(study: Any, trial: Any) -> None:
            n = len(study.get_trials(deepcopy=False, states=finished_states))
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
            if trial.state == TrialState.COMPLETE:
                what = f"macro-F1 {trial.value:.4f}"
            elif trial.state == TrialState.PRUNED:
                last = max(trial.intermediate_values) if trial.intermediate_values else 0
                what = f"pruned at evaluation {last}"
            else:
                what = trial.state.name.lower()
            try:
                best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
            except ValueError:
                best = "no complete trial yet"
            say(f"trial {trial.number} [{n}/{trials}]: {what} ({params}); {best}")

        if remaining > 0:
            study.optimize(
                objective, n_trials=remaining, timeout=timeout_s, callbacks=[progress], gc_after_trial=True
            )
        else:
            say(f"study {study_name!r} already holds {done} finished trial(s): nothing to run")
        summary = _summarize(study, scenario, strategy, storage, out, ranges, time.perf_counter() - started)
        summary.not_searched = not_searched
        summary.default_outside_space = default_outside if summary.default_params else {}
        if summary.best_trial is not None:
            best = study.best_trial
            # The best trial's evaluation schedule: patience counts evaluations, and the checkpoint kept is
            # the best evaluation's, so evaluating once per epoch instead would train another model. A trial
            # of a study started before eval_steps was recorded: computed as its objective did.
            eval_steps = best.user_attrs.get("eval_steps") or _eval_steps(
                n_train, best.params.get("batch_size", base_config.params.batch_size), evals_per_epoch
            )
            # overrides are the study's own (recorded at its start; a resume with others is refused), so
            # the retrain is the best trial's run, not one with the resuming run's settings.
            best_config = make_train_config(
                scenario,
                strategy,
                output_dir=out / BEST_RUN_FOLDER,
                **{"eval_steps": eval_steps, **overrides, **best.params},
            )
            path = out / "best_config.json"
            path.write_text(best_config.model_dump_json(indent=2))
            summary.best_config_path = str(path)
            if publish:
                from model_repository import ModelRepository

                repo = repository if isinstance(repository, ModelRepository) else ModelRepository(repository)
                say(f"training the best configuration (trial {best.number}) to publish it")
                if best.user_attrs.get("collapsed"):
                    say(
                        f"trial {best.number} collapsed: the retrain may train again at a lower learning rate"
                    )
                manifest = publish_run(
                    train(best_config),
                    repo,
                    export_precisions=export_precisions,
                    alias=alias,
                    extra={"tune": summary.model_dump(mode="json")},
                )
                summary.published_version = manifest.version
        summary.plots = _plots(study, out)
        (out / "summary.json").write_text(summary.model_dump_json(indent=2))
        return summary


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _summarize(
    study: Any,
    scenario: Any,
    strategy: str,
    storage: str,
    out: Path,
    ranges: dict[str, Any],
    wall_time_s: float,
) -> StudySummary:
    from optuna.trial import TrialState

    all_trials = study.get_trials(deepcopy=False)
    count = {s: sum(1 for t in all_trials if t.state == s) for s in TrialState}
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value) if complete else None
    # An interrupted default trial is enqueued again: the one that finished is the default's score.
    defaults = [t for t in all_trials if t.user_attrs.get("default")]
    finished = [t for t in defaults if t.state == TrialState.COMPLETE]
    default = (finished or defaults or [None])[-1]
    return StudySummary(
        study_name=study.study_name,
        scenario=scenario.name,
        strategy=strategy,
        storage=storage,
        output_dir=str(out),
        trials=len(all_trials),
        complete=count[TrialState.COMPLETE],
        pruned=count[TrialState.PRUNED],
        failed=count[TrialState.FAIL],
        best_trial=best.number if best else None,
        best_macro_f1=best.value if best else None,
        best_accuracy=best.user_attrs.get("accuracy") if best else None,
        best_params=dict(best.params) if best else {},
        default_macro_f1=default.value if default and default.state == TrialState.COMPLETE else None,
        default_params=dict(default.params) if default else {},
        search_space={k: v.model_dump(exclude_none=True) for k, v in ranges.items()},
        wall_time_s=round(wall_time_s, 1),
        best_config_path=None,
    )


def _plots(study: Any, out: Path) -> list[str]:
    """Optimisation history, intermediate values and parameter importances (when computable)."""
    import optuna
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as vis

    from ..plots import pyplot, save_png

    pyplot()  # Agg, text as text

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    jobs: list[tuple[str, Callable[[Any], Any]]] = [
        ("optimization_history.png", vis.plot_optimization_history),
        ("intermediate_values.png", vis.plot_intermediate_values),
    ]
    if len(complete) >= 2:
        jobs.append(("param_importances.png", vis.plot_param_importances))
    written: list[str] = []
    for name, plot in jobs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = plot(study)
        except (ValueError, RuntimeError) as exc:  # e.g. importances need params that varied
            log.warning("skipped %s: %s", name, exc)
            continue
        fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
        written.append(str(save_png(fig, out / name, dpi=110)))
    return written
