"""`labelwise results`: the resumable strategy x scenario job behind `make results` and docs/results.md."""

from __future__ import annotations

from pathlib import Path

import typer

from model_repository.errors import UsageError
from model_repository.layout import is_number

from .options import (
    applies_and_pronoun,
    output_file,
    refuse_unusable_output_dir,
    refuse_unusable_output_file,
    require_training,
    setup_logging,
    typed_flags,
)


def register(app: typer.Typer) -> None:
    app.command("results")(results_command)


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _budgets(value: str) -> tuple[int, ...]:
    """--budgets as train rows per cell: positive integers, at least one."""
    budgets = _split(value)
    if not budgets or not all(is_number(b) and int(b) > 0 for b in budgets):
        raise UsageError(
            f"--budgets {value!r}: give train rows per cell as positive integers, e.g. 1000,4000"
        )
    return tuple(int(b) for b in budgets)


# What --report-only leaves unused: it only writes the report from the cells already run.
_RUN_ONLY = {
    "stages": "--stages",
    "scenarios": "--scenarios",
    "budgets": "--budgets",
    "strategies": "--strategies",
    "time_budget_s": "--time-budget-s",
    "variants": "--variants",
}


def results_command(
    ctx: typer.Context,
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Cell results, runs and the repository (default runs/results, runs/ being $LABELWISE_RUNS_DIR "
        "when that is set).",
    ),
    stages: str = typer.Option(
        "matrix,curve,atis,fgm,sst2",
        "--stages",
        help="Comma list of stages: matrix,curve,atis,fgm,sst2, search (the defaults search, on "
        "validation) and spread (full vs LoRA over more seeds where one run each could not tell them apart).",
    ),
    scenarios: str = typer.Option(
        "sentiment,emotion,intent,intent_atis,news_topic,spam", "--scenarios", help="Scenarios of the matrix."
    ),
    budgets: str = typer.Option("1000,4000", "--budgets", help="Train rows per matrix cell (comma list)."),
    strategies: str = typer.Option(
        "full,lora,frozen",
        "--strategies",
        help="Strategies of the matrix, curve and sst2 cells (comma list).",
    ),
    docs_typed: str = typer.Option(  # as typed: a Path would drop the trailing slash of a folder
        "docs/results.md", "--docs", metavar="<path>", help="Report written after every cell."
    ),
    time_budget_s: float | None = typer.Option(
        None, "--time-budget-s", help="Start no new cell after this long; a rerun resumes."
    ),
    report_only: bool = typer.Option(False, "--report-only", help="Only regenerate the report from cells."),
    variants: str | None = typer.Option(
        None, "--variants", help="With the search stage: only these candidates (comma list; default all)."
    ),
) -> None:
    """Train every strategy on every scenario at stated budgets; score each on the held-out test split."""
    from labelwise import results

    if out is None:  # as every run folder: under LABELWISE_RUNS_DIR when it is set
        from training.config import default_runs_dir

        out = default_runs_dir() / "results"
    setup_logging()
    # before any work: a file there read as no cells (an empty report), or failed once the report was made
    refuse_unusable_output_dir(out, "--out")
    docs = output_file(docs_typed, "--docs")
    refuse_unusable_output_file(docs, "--docs")
    if report_only:
        given = typed_flags(ctx, _RUN_ONLY)
        if given:
            verb, them = applies_and_pronoun(given)
            raise UsageError(
                f"{', '.join(given)} {verb} to running cells, not to --report-only (which writes the report "
                f"from every cell already run): drop {them}, or drop --report-only"
            )
    # nan: never 'spent', no limit at all; a negative budget read "time budget -5 s spent", as 0 does
    if time_budget_s is not None and not time_budget_s >= 0:
        raise UsageError(f"--time-budget-s {time_budget_s}: give seconds, e.g. 3600 (0 starts no new cell)")
    rows = _budgets(budgets)
    if not _split(strategies):
        raise UsageError(
            f"--strategies {strategies!r}: name at least one of {', '.join(results.STRATEGY_ORDER)}"
        )
    if report_only:
        from labelwise.extras import require

        require("matplotlib")  # the report's plots (the training extra)
        path = results.write_report(out, docs, results.load_done(out, results.ledger_dir(docs)))
        typer.echo(f"wrote {path}")
        return
    if not _split(stages):  # it planned no cell and exited 0, as if the job were done
        raise UsageError(f"--stages {stages!r}: name at least one of {', '.join(results.STAGES)}")
    if "matrix" in _split(stages) and not _split(scenarios):  # the matrix ran no cell, unsaid
        raise UsageError(
            f"--scenarios {scenarios!r}: name the matrix's scenarios, e.g. sentiment,spam "
            "(or drop matrix from --stages)"
        )
    for stage in _split(stages):
        if stage not in results.STAGES:
            raise typer.BadParameter(f"unknown stage {stage!r}: choose from {', '.join(results.STAGES)}")
    for strategy in _split(strategies):
        if strategy not in results.STRATEGY_ORDER:
            raise typer.BadParameter(
                f"unknown strategy {strategy!r}: choose from {', '.join(results.STRATEGY_ORDER)}"
            )
    for variant in _split(variants or ""):
        if variant not in results.SEARCH:
            raise typer.BadParameter(
                f"unknown search candidate {variant!r}: choose from {', '.join(results.SEARCH)}"
            )
    if variants is not None and "search" not in _split(stages):
        raise UsageError(
            f"--variants picks candidates of the search stage, which --stages {stages!r} does not run: "
            "add search to --stages (e.g. --stages search), or drop --variants"
        )
    from training import list_scenarios

    known = list_scenarios()
    for scenario in _split(scenarios):  # now, not after the cells before it have trained
        if scenario not in known:
            raise UsageError(f"--scenarios: unknown scenario {scenario!r}: choose from {', '.join(known)}")
    require_training("matplotlib")  # every cell trains; the report after each one plots
    results.run(
        out,
        _split(stages),
        _split(scenarios),
        rows,
        docs,
        typer.echo,
        time_budget_s,
        variants=None if variants is None else _split(variants),
        strategies=_split(strategies),
    )
