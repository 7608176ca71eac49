"""`labelwise repo …`: inspect and check the model repository."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from model_repository import ModelRepository, RepositoryError

repo_app = typer.Typer(help="Inspect and verify the model repository.", no_args_is_help=True)
_console = Console()
RepositoryOption = typer.Option(
    None, "--repository", "-r", help="Root folder (default: $LABELWISE_REPOSITORY)."
)


def register(app: typer.Typer) -> None:
    app.add_typer(repo_app, name="repo")


@repo_app.command("list")
def list_scenarios(repository: Path | None = RepositoryOption) -> None:
    """List scenarios, their versions and aliases."""
    repo = ModelRepository(repository)
    table = Table("scenario", "versions", "aliases")
    for scenario in repo.list_scenarios():
        aliases = ", ".join(f"{k}→{v}" for k, v in repo.aliases(scenario).items())
        table.add_row(scenario, " ".join(map(str, repo.list_versions(scenario))), aliases)
    _console.print(table)


@repo_app.command("show")
def show(
    scenario: str, version: str = typer.Argument("latest"), repository: Path | None = RepositoryOption
) -> None:
    """Print a version's manifest."""
    repo = ModelRepository(repository)
    try:
        manifest = repo.load_manifest(scenario, repo.resolve(scenario, version))
    except RepositoryError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(manifest.model_dump_json(indent=2))


@repo_app.command("verify")
def verify(
    scenario: str, version: str = typer.Argument("latest"), repository: Path | None = RepositoryOption
) -> None:
    """Re-hash every file of a version."""
    repo = ModelRepository(repository)
    try:
        number = repo.resolve(scenario, version)
        manifest = repo.verify(scenario, number)
    except RepositoryError as exc:
        _console.print(f"[red]FAILED[/red] {exc}")
        raise typer.Exit(1) from exc
    _console.print(f"[green]OK[/green] {scenario} v{number}: {len(manifest.files)} files verified")
