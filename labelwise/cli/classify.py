"""`labelwise classify`: score a CSV / JSONL / Parquet file (labelwise.file_scoring does the work)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import typer

from model_repository.errors import UsageError
from model_repository.passes import MAX_INTRA_OP_THREADS

from .options import (
    applies_and_pronoun,
    given_on_command_line,
    output_file,
    repository_path,
    typed_flags,
    version_ref,
)


def register(app: typer.Typer) -> None:
    app.command("classify")(classify_command)


# What each option of the other mode would have done, and why it cannot (see HttpScorer, EngineScorer).
_IN_PROCESS_ONLY = {"repository": "--repository", "version": "--version", "threads": "--threads"}
_WHY_NOT_THROUGH_A_SERVER = {
    "--repository": "the server scores from its own repository",
    "--version": "requests name no version, so the server answers with the one it serves for the scenario "
    "(the alias in its config, production by default)",
    "--threads": "the server's replicas set their own ONNX Runtime threads",
}
_WITH_URL_ONLY = {"api_key": "--api-key", "concurrency": "--concurrency", "retry_for": "--retry-for"}


def refuse_ignored_flags(ctx: typer.Context, url: str | None) -> None:
    """Refuse (UsageError, exit 2) an option the user typed that the chosen mode would ignore: an
    in-process option (--repository, --version, --threads) with --url or LABELWISE_URL, --api-key,
    --concurrency or --retry-for without a URL. Values from environment variables (LABELWISE_REPOSITORY,
    LABELWISE_API_KEY), exported for other commands as well, are never refused."""
    if url is not None:
        given = typed_flags(ctx, _IN_PROCESS_ONLY)
        if not given:
            return
        verb, them = applies_and_pronoun(given)
        if given_on_command_line(ctx, "url"):
            through, fix = f"--url {url}", "drop --url"
        else:
            through, fix = f"LABELWISE_URL={url} set", "unset LABELWISE_URL"
        why = "; ".join(_WHY_NOT_THROUGH_A_SERVER[flag] for flag in given)
        raise UsageError(
            f"{', '.join(given)} {verb} to in-process scoring only, not through a server ({through}): {why}. "
            f"Drop {them}, or {fix} to score in this process"
        )
    given = typed_flags(ctx, _WITH_URL_ONLY)
    if given:
        verb, them = applies_and_pronoun(given)
        raise UsageError(
            f"{', '.join(given)} {verb} to scoring through a server (--url) only: without --url the "
            f"file is scored in this process, which sends no requests. Drop {them}, or add --url (or set "
            "LABELWISE_URL) to score through a server"
        )


def classify_command(
    ctx: typer.Context,
    scenario: str = typer.Option(..., "--scenario", "-s", help="Scenario to score with."),
    input_path: Path = typer.Option(
        ..., "--input", "-i", help="File to score: .csv, .jsonl (.ndjson) or .parquet, with a text column."
    ),
    output: str = typer.Option(  # as typed: a Path would drop the trailing slash of a folder
        ...,
        "--output",
        "-o",
        metavar="<path>",
        help="Where rows go (.jsonl, .csv or .parquet): row, label, score, version per input row, in "
        "input order. An existing partial output is resumed; see --overwrite.",
    ),
    text_column: str = typer.Option("text", "--text-column", help="Column (or JSON field) holding the text."),
    url: str | None = typer.Option(
        None,
        "--url",
        envvar="LABELWISE_URL",
        help="Score through a running server at this URL; without it, in this process on --repository.",
    ),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        envvar="LABELWISE_API_KEY",
        help="Bearer key for --url (typed without --url: refused; LABELWISE_API_KEY alone is not).",
        show_default=False,
    ),
    repository: Path | None = typer.Option(
        None,
        "--repository",
        "-r",
        parser=repository_path,
        envvar="LABELWISE_REPOSITORY",
        help="Model repository for in-process scoring: a folder or s3://BUCKET/PREFIX (default "
        "./var/model-repository); refused with --url.",
    ),
    version: str = typer.Option(
        "production",
        "--version",
        "-v",
        parser=version_ref,
        help="In-process: alias, 'latest' or version number to score with (refused with --url: the server "
        "answers with the version it serves).",
    ),
    threads: int = typer.Option(
        0,
        "--threads",
        help="In-process: ONNX Runtime threads (0: one, as a replica with num_cpus 1); refused with --url.",
    ),
    concurrency: int = typer.Option(
        4, "--concurrency", help="With --url: requests in flight at once (refused without it)."
    ),
    retry_for: float | None = typer.Option(
        None,
        "--retry-for",
        metavar="SECONDS",
        help="With --url: how long to keep trying a server that refuses connections (one being "
        "restarted) before failing; 0 fails at the first refusal. Default 30 (refused without --url).",
        show_default=False,
    ),
    batch_rows: int = typer.Option(512, "--batch-rows", help="Rows scored (and written) per step."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --output instead of resuming it."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar on stderr."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    verbose: bool = typer.Option(False, "--verbose", help="Log what the engine does (loads, refusals)."),
) -> None:
    """Score every row of a file: labels and scores in input order, resumable, with the throughput."""
    import logging

    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    else:  # a failed load is reported once, as the command's error line, not also as a log line
        logging.getLogger("labelwise.serving").addHandler(logging.NullHandler())
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from labelwise.file_scoring import (
        EngineScorer,
        HttpScorer,
        ScoringInterrupted,
        check_url,
        file_format,
        left_as_it_was,
        score_file,
    )

    refuse_ignored_flags(ctx, url)
    file_format(input_path, "--input")
    output_path = output_file(output, "--output")
    file_format(output_path, "--output")
    if concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {concurrency}")
    if not 0 <= threads <= MAX_INTRA_OP_THREADS:
        raise UsageError(f"--threads must be 0 (one thread) to {MAX_INTRA_OP_THREADS}, got {threads}")
    if retry_for is not None and not retry_for >= 0:  # NaN included
        raise UsageError(f"--retry-for must be 0 seconds or more, got {retry_for:g}")
    if url is not None:
        url = check_url(url)
    if url is not None:
        # --retry-for only when given: HttpScorer's default is the client's (30 s)
        retrying = {"retry_for": retry_for} if retry_for is not None else {}

        def make_scorer() -> HttpScorer:
            return HttpScorer(url, scenario, api_key=api_key, concurrency=concurrency, **retrying)

    else:

        def make_scorer() -> EngineScorer:  # type: ignore[misc]
            return EngineScorer(repository, scenario, version=version, threads=threads)

    console = Console(stderr=True)
    bar = Progress(
        TextColumn(f"[cyan]{scenario}[/cyan]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TimeRemainingColumn(),
        console=console,
        disable=not progress,
        transient=False,
    )
    task = bar.add_task("classify", total=None)

    with contextlib.ExitStack() as shown:

        def on_progress(done: int, total: int | None) -> None:
            if not bar.live.is_started:  # from the first progress on: a refused input shows no bar
                shown.enter_context(bar)
            bar.update(task, completed=done, total=max(total, done) if total is not None else None)

        try:
            summary = score_file(
                input_path,
                output_path,
                scenario,
                make_scorer,
                text_column=text_column,
                batch_rows=batch_rows,
                overwrite=overwrite,
                on_progress=on_progress,
            )
        except KeyboardInterrupt as exc:
            # Ctrl-C: typer exited 130 saying nothing, and a partial JSONL or CSV output looks like a
            # finished one. Say what is there and how to go on: score_file says it once the output may
            # have changed; before that, the output is as it was.
            shown.close()  # the bar stops before the line
            left = str(exc) if isinstance(exc, ScoringInterrupted) else left_as_it_was(output_path)
            typer.echo(f"error: interrupted: {left}", err=True)
            raise typer.Exit(130) from None
        done = summary.rows_scored + summary.rows_skipped
        bar.update(task, completed=done, total=done)  # the row count was an estimate (newlines)
    if json_output:
        typer.echo(json.dumps(summary.as_dict()))
        return
    skipped = f"; {summary.rows_skipped} already in the output" if summary.rows_skipped else ""
    if summary.rows_scored == 0 and summary.rows_skipped == 0:  # not "already holds": it holds none
        typer.echo(f"nothing to score: {input_path} holds no rows; {output_path} holds none either")
        return
    if summary.rows_scored == 0:
        typer.echo(f"nothing to score: {output_path} already holds every row{skipped}")
        return
    typer.echo(
        f"scored {summary.rows_scored} rows in {summary.seconds:.2f} s ({summary.rows_per_s:.0f} rows/s)"
        f"{skipped} -> {output_path}"
    )
