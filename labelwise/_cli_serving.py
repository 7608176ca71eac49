"""`labelwise serve|promote`: ray and serving are imported inside each command, never at start-up."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from model_repository import ModelRepository, RepositoryError


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
    app.command("promote")(promote_command)


def load_serving_args(config: Path | None, **overrides: Any) -> dict[str, Any]:
    """ServingConfig fields from a YAML file (flat, or a Serve deploy file's first app `args`) plus flags."""
    import yaml

    args: dict[str, Any] = {}
    if config is not None:
        raw = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        if not isinstance(raw, dict):
            raise typer.BadParameter(f"{config}: expected a mapping of ServingConfig fields")
        if "applications" in raw:  # a `serve deploy` file: take the labelwise app's args
            raw = (raw["applications"][0] or {}).get("args", {}) or {}
        args.update(raw)
    args.update({k: v for k, v in overrides.items() if v is not None})
    return args


def serve_command(
    repository: Path | None = typer.Option(None, "--repository", "-r", help="Model repository root."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML of ServingConfig fields."),
    host: str = typer.Option("127.0.0.1", help="Address the HTTP proxy binds."),
    port: int = typer.Option(8000, help="HTTP port."),
    ingress_mode: str | None = typer.Option(None, help="combined (default) or separate."),
) -> None:
    """Start a local Ray on loopback and serve every configured scenario until Ctrl-C."""
    from pydantic import ValidationError

    from serving import ServingConfig

    args = load_serving_args(
        config, repository=str(repository) if repository else None, ingress_mode=ingress_mode
    )
    try:
        ServingConfig(**args)
    except ValidationError as exc:
        raise typer.BadParameter(f"serving config: {exc}") from exc
    run_server(args, host, port)


def run_server(args: dict[str, Any], host: str, port: int, block: bool = True) -> None:
    from ray import serve

    from serving._ray_local import start_local_ray, stop_local_ray
    from serving.app import build_app

    start_local_ray(host=host, port=port)
    serve.run(build_app(args), name="labelwise", route_prefix="/", blocking=False)
    typer.echo(
        f"labelwise serving on http://{host}:{port} (docs: http://{host}:{port}/docs); Ctrl-C stops it"
    )
    if not block:
        return
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        typer.echo("stopping")
    finally:
        stop_local_ray()


def promote_command(
    scenario: str = typer.Option(..., "--scenario", "-s", help="Scenario name."),
    version: int = typer.Option(..., "--version", "-v", help="Version to point the alias at."),
    alias: str = typer.Option("production", "--alias", "-a", help="Alias to switch."),
    repository: Path | None = typer.Option(None, "--repository", "-r", help="Model repository root."),
) -> None:
    """Point an alias at a version (verified first); serving replicas pick it up on their next poll."""
    repo = ModelRepository(repository)
    try:
        before = repo.aliases(scenario).get(alias)
        repo.set_alias(scenario, alias, version)
    except RepositoryError as exc:
        typer.secho(f"refused: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{scenario}: {alias} {before} -> {version}")
