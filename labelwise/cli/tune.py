"""`labelwise tune` (Optuna search) and `labelwise robustness` (the typo / word-drop perturbation test)."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from labelwise.training_runs import export_precisions, flag_of, refuse_publish_flags
from model_repository.layout import is_number

from .options import (
    BaseModelOpt,
    DataDirOpt,
    DataOpt,
    MaxEvalOpt,
    MaxLenOpt,
    MaxTrainOpt,
    RepoOpt,
    SeedOpt,
    ValDataOpt,
    VersionOpt,
    given_on_command_line,
    refuse_missing_repository,
    refuse_repository_in_run_folder,
    refuse_unusable_output_dir,
    refuse_unwritable_repository,
    require_training,
    setup_logging,
)

_console = Console()


def register(app: typer.Typer) -> None:
    app.command("tune")(tune_command)
    app.command("robustness")(robustness_command)


def tune_command(
    ctx: typer.Context,
    scenario: str = typer.Option(
        ...,
        "--scenario",
        "-s",
        help="Packaged scenario or a scenario YAML (its search_space is searched).",
    ),
    strategy: str = typer.Option(..., "--strategy", help="full | frozen | lora"),
    trials: int = typer.Option(..., "--trials", "-n", help="Finished (complete or pruned) trials to reach."),
    timeout_s: float | None = typer.Option(None, "--timeout-s", help="Stop starting trials after this long."),
    study_name: str | None = typer.Option(
        None,
        "--study-name",
        help="Name of the study; an existing one in the study folder (--output-dir, else the default) is "
        "resumed.",
    ),
    pruner: str = typer.Option(
        "median",
        "--pruner",
        help="median | hyperband | none; kept by the study: a resume must give the same.",
    ),
    evals_per_epoch: int = typer.Option(
        2,
        "--evals-per-epoch",
        help="Validation passes per epoch, each reported to the pruner; kept by the study: a resume must "
        "give the same.",
    ),
    default_trial: bool = typer.Option(
        True, "--default-trial/--no-default-trial", help="Trial 0 runs the strategy's default values."
    ),
    sampler_seed: int = typer.Option(
        0, "--sampler-seed", help="Seed of the TPE sampler: the same seed draws the same trials again."
    ),
    base_model: str | None = BaseModelOpt,
    data: Path | None = DataOpt,
    validation_data: Path | None = ValDataOpt,
    data_dir: Path | None = DataDirOpt,
    max_train_samples: int | None = MaxTrainOpt,
    max_eval_samples: int | None = MaxEvalOpt,
    max_steps: int | None = typer.Option(
        None,
        "--max-steps",
        help="Train every trial this many optimizer steps whatever its epochs (then not searched); early "
        "stopping and pruning may end it sooner.",
    ),
    max_length: int | None = MaxLenOpt,
    seed: int = SeedOpt,
    output_dir: Path | None = typer.Option(
        None,
        "--output-dir",
        "-o",
        help="Study folder (default runs/<scenario>/tune-<study name>, runs/ being $LABELWISE_RUNS_DIR "
        "when that is set).",
    ),
    publish: bool = typer.Option(False, "--publish", help="Train the best configuration and publish it."),
    repository: Path | None = RepoOpt,
    export: str | None = typer.Option(None, "--export", help="ONNX precisions with --publish; 'none' skips."),
    alias: str | None = typer.Option(None, "--alias", help="With --publish: point this alias at it."),
) -> None:
    """Search hyperparameters with Optuna (TPE + pruning on macro-F1); the study resumes by name."""
    setup_logging()
    refuse_unusable_output_dir(output_dir, repository=repository)
    require_training("optuna")
    if not publish:  # what only the published best run uses, given without --publish: refused, not dropped
        unused = [flag for flag, value in (("--alias", alias), ("--export", export)) if value is not None]
        if given_on_command_line(ctx, "repository"):  # not LABELWISE_REPOSITORY: set for every command
            unused.append("--repository")
        refuse_publish_flags(
            unused, "--publish", "without it the study publishes nothing; add --publish, or drop {them}"
        )
    from model_repository import ModelRepository, UsageError
    from model_repository.layout import why_not_a_folder
    from training.tuning import is_study_run_folder, run_study

    refuse_repository_in_run_folder(output_dir, repository, runs_inside=is_study_run_folder)
    if output_dir is not None and output_dir.is_dir():
        # a file where a trial's run folder goes failed that trial with a traceback, then the study with
        # `error: NotADirectoryError` (exit 1), after the trials before it had trained
        for path in sorted(output_dir.iterdir()):
            if not is_study_run_folder(path.name) or (path.name == "best" and not publish):
                continue
            why = why_not_a_folder(path)  # as compare words its refusal
            if why is not None:
                raise UsageError(
                    f"--output-dir {output_dir}: {why}, where a run of the study goes; remove it or give "
                    "another --output-dir"
                )

    if publish:
        refuse_unwritable_repository(repository)
    summary = run_study(
        scenario,
        strategy,
        trials=trials,
        timeout_s=timeout_s,
        study_name=study_name,
        pruner=pruner,  # type: ignore[arg-type]
        evals_per_epoch=evals_per_epoch,
        default_trial=default_trial,
        sampler_seed=sampler_seed,
        output_dir=output_dir,
        publish=publish,
        repository=ModelRepository(repository) if publish else None,
        export_precisions=export_precisions(export) if publish else None,
        alias=alias,
        # escaped: its lines name paths (the study's folder), where Rich would read `[...]` as markup
        say=lambda line: _console.print(escape(line), soft_wrap=True, highlight=False),
        flags=flag_of,
        base_model=base_model,
        data=data,
        validation_data=validation_data,
        data_dir=data_dir,
        max_train_samples=max_train_samples,
        max_eval_samples=max_eval_samples,
        max_steps=max_steps,
        max_length_tokens=max_length,
        seed=seed,
    )
    best = f"{summary.best_macro_f1:.4f}" if summary.best_macro_f1 is not None else "n/a"
    default = f"{summary.default_macro_f1:.4f}" if summary.default_macro_f1 is not None else "n/a"
    if summary.default_macro_f1 is not None and summary.default_outside_space:
        ran = ", ".join(
            f"{name} {summary.default_params.get(name)} for its {own}"
            for name, own in summary.default_outside_space.items()
        )
        default += f" (with {ran}, not a searched value)"
    _console.print(
        f"[green]done[/green] study {summary.study_name}: {summary.trials} trials "
        f"({summary.complete} complete, {summary.pruned} pruned, {summary.failed} failed) in "
        f"{summary.wall_time_s:.0f} s; best macro-F1 {best} "
        f"(trial {summary.best_trial}, {escape(str(summary.best_params))}) vs default {escape(default)}",
        soft_wrap=True,
        highlight=False,
    )
    if summary.published_version is not None:
        _console.print(f"published {summary.scenario} v{summary.published_version}")
    # a study in an --output-dir resumes only there: --study-name alone started a new study under runs/
    resume = f"--study-name {summary.study_name}"
    if output_dir is not None:
        resume += f" --output-dir {shlex.quote(str(summary.output_dir))}"
    _console.print(
        f"best config {escape(str(summary.best_config_path))}; summary and plots in "
        f"{escape(str(summary.output_dir))}; resume with {escape(resume)}",
        soft_wrap=True,
    )


def _below_one(value: float) -> float:
    if value >= 1:
        raise typer.BadParameter(f"{value} is not in the range 0<=x<1.")
    return value


def robustness_command(
    scenario: str = typer.Option(..., "--scenario", "-s", help="Scenario name in the repository."),
    data: Path = typer.Option(..., "--data", help="Labeled file (csv, jsonl, parquet) to score."),
    version: str = VersionOpt,
    repository: Path | None = RepoOpt,
    seed: int = typer.Option(0, "--seed", help="Seed of the perturbation."),
    typo_rate: float = typer.Option(
        0.15, "--typo-rate", min=0.0, max=1.0, help="Share of words given one typo, in [0, 1]."
    ),
    drop_rate: float = typer.Option(
        0.1, "--drop-rate", callback=_below_one, min=0.0, help="Share of words dropped, in [0, 1)."
    ),
    # min=1: 0 scored no row (a traceback from argmax), and -1 sliced the file's last row off unsaid
    max_rows: int | None = typer.Option(None, "--max-rows", min=1, help="Score the first N rows only."),
) -> None:
    """Accuracy of a published version on clean rows and on the same rows with typos and word drops."""
    setup_logging()
    require_training()
    refuse_missing_repository(repository)
    from model_repository import ModelRepository
    from training.tuning import robustness_of_published

    report = robustness_of_published(
        ModelRepository(repository),
        scenario,
        data,
        ref=int(version) if is_number(version) else version,
        seed=seed,
        typo_rate=typo_rate,
        drop_rate=drop_rate,
        max_rows=max_rows,
    )
    _console.print_json(report.model_dump_json())
    _console.print(
        f"{scenario} v{report.version} ({report.adversarial}): accuracy {report.clean_accuracy:.4f} clean, "
        f"{report.perturbed_accuracy:.4f} perturbed; {report.flipped_share:.1%} of predictions flipped",
        highlight=False,
        soft_wrap=True,  # piped or redirected, the line was cut at 80 columns into two
    )
