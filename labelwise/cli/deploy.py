"""`labelwise deploy`: submit a Serve config to a running cluster (labelwise.server does the work)."""

from __future__ import annotations

from pathlib import Path

import typer

from labelwise.server import deploy_to_cluster
from model_repository.errors import UsageError


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy_command)


def deploy_command(
    address: str = typer.Option(
        ...,
        "--address",
        "-a",
        envvar="RAY_DASHBOARD_ADDRESS",
        help="The cluster: its dashboard (http://HOST:8265), or ray://HOST:10001, HOST:6379 or auto, "
        "through which the dashboard is found.",
    ),
    config: Path = typer.Option(
        ...,
        "--config",
        "-c",
        help="Serve config (a `serve deploy` file, e.g. helm/labelwise/files/serve-config.yaml, or flat "
        "ServingConfig fields for one app named labelwise).",
    ),
    timeout_s: float = typer.Option(
        300, "--timeout-s", help="Seconds to wait for the apps to settle; 0 prints the status at once."
    ),
    host: str | None = typer.Option(
        None,
        "--host",
        help="Where Serve's HTTP proxies listen, in place of the config's http_options.host (the shipped "
        "file's 127.0.0.1 is for a local run: 0.0.0.0 on a cluster). Serve applies it when it starts there.",
    ),
) -> None:
    """Submit a Serve config declaratively (like `serve deploy`: the file is the whole declared state, and
    apps an earlier config deployed that it no longer names are deleted) and print each app's status;
    exit 1 when one fails to deploy or does not settle in time."""
    # nan: never past the deadline, and not above 0 either, so the wait never ended; -5 passed as 0 does
    if not timeout_s >= 0:
        raise UsageError(f"--timeout-s {timeout_s}: give seconds, e.g. 300 (0 prints the status at once)")
    for status in deploy_to_cluster(config, address, timeout_s=timeout_s, host=host):
        typer.echo("\n".join(status.lines()))
