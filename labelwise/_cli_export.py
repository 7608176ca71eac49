"""`labelwise export` and `labelwise export-bench`: training.export is imported inside each command."""

from __future__ import annotations

from pathlib import Path

import typer

RepositoryOption = typer.Option(
    None, "--repository", "-r", help="Root folder (default: $LABELWISE_REPOSITORY)."
)


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("export-bench")(export_bench)


def export(
    scenario: str = typer.Option(..., "--scenario", "-s", help="Scenario whose version is re-exported."),
    version: str = typer.Option("latest", "--version", "-v", help="Version number, alias or 'latest'."),
    precision: str = typer.Option("fp32,int8", "--precision", "-p", help="Comma list of fp32, int8, fp16."),
    validation: Path | None = typer.Option(
        None, "--validation", help="CSV (text,label) for parity; default: the version's validation file."
    ),
    repository: Path | None = RepositoryOption,
) -> None:
    """Export an existing version to ONNX by publishing a NEW version whose manifest names its parent."""
    from model_repository import ModelRepository

    from .extras import require

    require("torch")
    from training.export import ExportError, parse_precisions
    from training.export.reexport import reexport_version

    try:
        parse_precisions(precision)
        manifest = reexport_version(ModelRepository(repository), scenario, version, precision, validation)
    except ExportError as exc:
        typer.secho(f"export failed, nothing published: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    summary = ", ".join(
        f"{e.precision} max|Δlogit|={e.parity.max_abs_logit_diff} agreement={e.parity.agreement}"
        for e in manifest.exports
        if e.parity is not None
    )
    typer.echo(f"published {scenario} v{manifest.version} (parent v{manifest.parent_version}): {summary}")


def export_bench(
    scenario: str = typer.Option(..., "--scenario", "-s", help="Scenario to benchmark."),
    version: str = typer.Option("latest", "--version", "-v", help="Version number, alias or 'latest'."),
    data: Path = typer.Option(..., "--data", help="CSV with a text column: real sentences to classify."),
    threads: int = typer.Option(2, help="ONNX Runtime intra-op threads."),
    rows: int = typer.Option(512, help="Sentences per measurement."),
    repository: Path | None = RepositoryOption,
) -> None:
    """In-process ONNX Runtime throughput (seq/s) per precision at batch 1, 8 and 32, dynamic padding."""
    from model_repository import ModelRepository

    from .extras import require

    require("onnxruntime")
    from training.export.bench import run_bench

    run_bench(ModelRepository(repository), scenario, version, data, threads=threads, rows=rows)
