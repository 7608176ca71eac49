"""`labelwise repo …`: inspect and check the model repository (labelwise.catalog does the work)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from labelwise.catalog import (
    MovedVersionError,
    check_reserved_aliases,
    list_scenarios,
    show_version,
    verify_version,
)
from model_repository import ModelRepository

from .options import refuse_missing_repository, repository_path, version_ref

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
    "latest",
    parser=version_ref,
    help="A version number, an alias (e.g. production) or 'latest' (the highest published).",
)


def register(app: typer.Typer) -> None:
    app.add_typer(repo_app, name="repo")


@repo_app.command("list")
def list_command(repository: Path | None = RepositoryOption, json_output: bool = JsonOption) -> None:
    """List scenarios, their versions and aliases."""
    refuse_missing_repository(repository)
    rows = list_scenarios(ModelRepository(repository))
    if not rows:
        _refuse_a_folder_inside_a_repository(repository)
    if json_output:
        typer.echo(json.dumps({"scenarios": [asdict(row) for row in rows]}))
        return
    # a problem names a path: folded onto more lines rather than cut with "…" (the file to move away)
    table = Table("scenario", "versions", Column("aliases", overflow="fold"))
    for row in rows:
        aliases = ", ".join(
            f"{k}→{v}" + (" (not published)" if k in row.unpublished else "") for k, v in row.aliases.items()
        )
        # escaped: Rich reads `[...]` in a repository path (a problem names it) as markup
        table.add_row(row.scenario, " ".join(map(str, row.versions)), escape(row.problem or aliases))
    _console.print(table)


def _refuse_a_folder_inside_a_repository(repository: Path | None) -> None:
    """A local --repository with no scenario that is itself a scenario's folder (its _aliases, or version
    folders holding a manifest), a version's (a manifest), or another folder inside a repository (its
    _bases, a scenario's _aliases, a version's onnx/, up to three levels down): refused (UsageError, exit 2)
    naming the repository it is in. `repo list` printed an empty table for it, exit 0."""
    from model_repository import UsageError
    from model_repository.layout import MANIFEST_FILE

    if repository is None or not repository.is_dir():
        return
    folder = repository.resolve()
    if (folder / MANIFEST_FILE).is_file():
        what, root = "a version's folder", folder.parent.parent
    elif _is_scenario_folder(folder):
        what, root = "a scenario's folder", folder.parent
    else:
        holding = (a for a in folder.parents[:3] if any(map(_is_scenario_folder, _folders(a))))
        root = next(holding, None)
        if root is None:
            return
        what = "a folder inside a repository"
    raise UsageError(f"--repository {repository} is {what}, not a repository; the repository is {root}")


def _folders(parent: Path) -> list[Path]:
    try:
        return [p for p in parent.iterdir() if p.is_dir()]
    except OSError:  # a parent this user may not list
        return []


def _is_scenario_folder(folder: Path) -> bool:
    """Its _aliases folder, or a numbered version folder holding a manifest."""
    from model_repository.layout import ALIASES_DIR, MANIFEST_FILE, is_number

    return (folder / ALIASES_DIR).is_dir() or any(
        is_number(p.name) and (p / MANIFEST_FILE).is_file() for p in _folders(folder)
    )


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
    """Re-hash every file of a version; then fail (exit 1) naming alias files called all digits or
    'latest', which are never read."""
    refuse_missing_repository(repository)
    repo = ModelRepository(repository)
    manifest = verify_version(repo, scenario, version)
    _console.print(f"[green]OK[/green] {scenario} v{manifest.version}: {len(manifest.files)} files verified")
    check_reserved_aliases(repo, scenario)
