"""`labelwise export` and `labelwise export-bench`: training.export is imported inside each command.

An ExportError means nothing was published: versions are written whole or not at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from model_repository.passes import MAX_INTRA_OP_THREADS

from .options import VersionOpt, refuse_missing_repository, repository_path

RepositoryOption = typer.Option(
    None,
    "--repository",
    "-r",
    parser=repository_path,
    envvar="LABELWISE_REPOSITORY",
    help="Model repository: a folder or s3://BUCKET/PREFIX (default ./var/model-repository).",
)


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("export-bench")(export_bench)


def export(
    scenario: str = typer.Option(..., "--scenario", "-s", help="Scenario whose version is re-exported."),
    version: str = VersionOpt,
    precision: str = typer.Option(
        "fp32,int8",
        "--precision",
        "-p",
        help="Comma list of fp32, int8, fp16; the new version also keeps every precision its parent has. "
        "When the version already holds every one (and its graphs and base verify), nothing is published.",
    ),
    validation: Path | None = typer.Option(
        None,
        "--validation",
        help="Labeled file (.csv/.jsonl/.parquet, the scenario's columns) for parity; default: the rows the "
        "version's run validated on.",
    ),
    repository: Path | None = RepositoryOption,
) -> None:
    """Export an existing version to ONNX by publishing a NEW version whose manifest names its parent."""
    from labelwise.extras import require
    from model_repository import ModelRepository

    require("torch")
    refuse_missing_repository(repository)
    from training.errors import NothingToExportError
    from training.export.precisions import parse_precisions
    from training.export.reexport import reexport_version

    # Refused here naming the flag (the parent's precisions are all known); reexport_version says "fp16
    # alone: +fp32" only once the version resolves (one that does not exist is refused with nothing said
    # about the work).
    parse_precisions(precision, announce=False, flag="--precision")
    try:
        manifest = reexport_version(
            ModelRepository(repository), scenario, version, precision, validation, skip_unchanged=True
        )
    except NothingToExportError as exc:  # exit 0: it is there already (as classify: "nothing to score")
        typer.echo(str(exc))
        return
    summary = ", ".join(
        f"{e.precision} max|Δlogit|={e.parity.max_abs_logit_diff} agreement={e.parity.agreement}"
        for e in manifest.exports
        if e.parity is not None
    )
    typer.echo(f"published {scenario} v{manifest.version} (parent v{manifest.parent_version}): {summary}")


def export_bench(
    scenario: str = typer.Option(..., "--scenario", "-s", help="Scenario to benchmark."),
    version: str = VersionOpt,
    data: Path = typer.Option(..., "--data", help="CSV with a text column: real sentences to classify."),
    threads: int = typer.Option(
        2, min=0, max=MAX_INTRA_OP_THREADS, help="ONNX Runtime intra-op threads (0: its default)."
    ),
    rows: int = typer.Option(512, min=1, help="Sentences per measurement."),
    repository: Path | None = RepositoryOption,
) -> None:
    """In-process ONNX Runtime throughput (seq/s) per precision at batch 1, 8 and 32, dynamic padding, of
    what serving runs: the version's graph, or for a frozen version the shared base encoder + its head."""
    from labelwise.extras import require
    from model_repository import ModelRepository, UsageError

    require("onnxruntime")
    if not data.is_file():  # before the repository is opened and any graph loads
        what = "is not a file" if data.exists() else "does not exist"
        raise UsageError(f"--data {data} {what}: give a CSV with a text column")
    refuse_missing_repository(repository)
    from training.export.bench import run_bench

    run_bench(
        ModelRepository(repository),
        scenario,
        version,
        data,
        threads=threads,
        rows=rows,
        open_session=_serving_session,
    )


def _serving_session(graph: Path, threads: int) -> Any:
    """The CPU session a serving replica runs `graph` in (serving.engine.runner.OnnxGraph: its session
    options, and the graph with SkipLayerNormalization unfused), so export-bench times what serving pays."""
    from serving.engine.runner import OnnxGraph

    return OnnxGraph(graph, ["CPUExecutionProvider"], threads).session
