"""`labelwise repo …`: inspect and check the model repository (labelwise.catalog does the work)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from labelwise.catalog import MovedVersionError, list_scenarios, show_version, verify_version
from model_repository import ModelRepository

from .options import refuse_missing_repository, repository_path

repo_app = typer.Typer(help="Inspect and verify the model repository.", no_args_is_help=True)
_console = Console()
RepositoryOption = typer.Option(
    None,
    "--repository",
    "-r",
    parser=repository_path,
    envvar="LABELWISE_REPOSITORY",
    help="Model repository: a folder or s3://BUCKET/PREFIX (default ./var/model-repository).",
)
JsonOption = typer.Option(False, "--json", help="Print JSON (for scripts) instead of a table.")
VersionArgument = typer.Argument(
    "latest", help="A version number, an alias (e.g. production) or 'latest' (the highest published)."
)


def register(app: typer.Typer) -> None:
    app.add_typer(repo_app, name="repo")


@repo_app.command("list")
def list_command(repository: Path | None = RepositoryOption, json_output: bool = JsonOption) -> None:
    """List scenarios, their versions and aliases."""
    refuse_missing_repository(repository)
    rows = list_scenarios(ModelRepository(repository))
    if json_output:
        typer.echo(json.dumps({"scenarios": [asdict(row) for row in rows]}))
        return
    table = Table("scenario", "versions", "aliases")
    for row in rows:
        aliases = ", ".join(
            f"{k}→{v}" + (" (not published)" if k in row.unpublished else "") for k, v in row.aliases.items()
        )
        table.add_row(row.scenario, " ".join(map(str, row.versions)), row.problem or aliases)
    _console.print(table)


@repo_app.command("show")
def show_command(
    scenario: str,
    version: str = VersionArgument,
    repository: Path | None = RepositoryOption,
    json_output: bool = typer.Option(False, "--json", help="Print the manifest as one line of JSON."),
) -> None:
    """Print a version's manifest (indented JSON; --json: one line).

    A folder whose manifest names another scenario or version (a copied folder) prints what it holds,
    then fails (exit 1) naming the mismatch, as `repo verify` and `promote` refuse it."""
    refuse_missing_repository(repository)
    try:
        manifest = show_version(ModelRepository(repository), scenario, version)
    except MovedVersionError as exc:
        typer.echo(exc.manifest.model_dump_json(indent=None if json_output else 2))
        raise
    typer.echo(manifest.model_dump_json(indent=None if json_output else 2))


@repo_app.command("verify")
def verify_command(
    scenario: str, version: str = VersionArgument, repository: Path | None = RepositoryOption
) -> None:
    """Re-hash every file of a version."""
    refuse_missing_repository(repository)
    manifest = verify_version(ModelRepository(repository), scenario, version)
    _console.print(f"[green]OK[/green] {scenario} v{manifest.version}: {len(manifest.files)} files verified")
