"""`labelwise serve|promote`: ray and serving are imported inside each command, never at start-up."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from model_repository import ModelRepository, RepositoryError


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
    app.command("promote")(promote_command)


# The one Serve config: the chart renders it, the Docker image ships it, `labelwise serve` reads it.
CHART_SERVE_CONFIG = Path("helm") / "labelwise" / "files" / "serve-config.yaml"
DEFAULT_APP_NAME = "labelwise"
DEFAULT_ROUTE_PREFIX = "/"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


@dataclass
class ServeFile:
    """What `labelwise serve` takes from a Serve config: the app's args, name, route and listen address."""

    args: dict[str, Any] = field(default_factory=dict)
    app_name: str = DEFAULT_APP_NAME
    route_prefix: str = DEFAULT_ROUTE_PREFIX
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    source: Path | None = None


def default_serve_config() -> Path | None:
    """The chart's serve-config.yaml beside the package (a checkout or editable install), else None:
    an installed wheel has no chart, and ServingConfig's defaults apply."""
    for root in (Path(__file__).resolve().parents[1], Path.cwd()):
        candidate = root / CHART_SERVE_CONFIG
        if candidate.is_file():
            return candidate
    return None


def load_serve_file(config: Path | None) -> ServeFile:
    """A Serve deploy file (http_options + the first application), or a flat mapping of ServingConfig
    fields; None gives the defaults."""
    import yaml

    if config is None:
        return ServeFile()
    try:
        raw = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"{config}: cannot read the Serve config ({exc})") from exc
    if not isinstance(raw, dict):
        raise typer.BadParameter(f"{config}: expected a Serve config or a mapping of ServingConfig fields")
    if "applications" not in raw:
        return ServeFile(args=raw, source=config)
    apps = raw.get("applications") or []
    if not isinstance(apps, list) or not apps or not isinstance(apps[0], dict):
        raise typer.BadParameter(f"{config}: applications must list at least one application")
    app = apps[0]
    http = raw.get("http_options") or {}
    args = app.get("args") or {}
    if not isinstance(args, dict):
        raise typer.BadParameter(f"{config}: applications[0].args must be a mapping of ServingConfig fields")
    return ServeFile(
        args=dict(args),
        app_name=str(app.get("name", DEFAULT_APP_NAME)),
        route_prefix=str(app.get("route_prefix", DEFAULT_ROUTE_PREFIX)),
        host=str(http.get("host", DEFAULT_HOST)),
        port=int(http.get("port", DEFAULT_PORT)),
        source=config,
    )


def load_serving_args(config: Path | None, **overrides: Any) -> dict[str, Any]:
    """ServingConfig fields from a Serve config file (or flat YAML) plus the flags that were given."""
    args = load_serve_file(config).args
    args.update({k: v for k, v in overrides.items() if v is not None})
    return args


def serve_command(
    repository: Path | None = typer.Option(None, "--repository", "-r", help="Model repository root."),
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Serve config (a `serve deploy` file or flat ServingConfig fields); default: the chart's "
        "helm/labelwise/files/serve-config.yaml when present, else ServingConfig's defaults.",
    ),
    host: str | None = typer.Option(None, help="Address the HTTP proxy binds (default: the config's)."),
    port: int | None = typer.Option(None, help="HTTP port (default: the config's, else 8000)."),
    ingress_mode: str | None = typer.Option(None, help="combined (default) or separate."),
    direct_ingress: bool = typer.Option(
        True,
        "--direct-ingress/--proxy",
        help="direct: the ingress replica answers HTTP on host:port itself (Ray Serve's direct ingress, "
        "no proxy hop; measured faster, see docs/benchmarks.md); proxy: Serve's HTTP proxy forwards to "
        "the replicas (what a cluster runs). Direct needs a single ingress replica.",
    ),
) -> None:
    """Start a local Ray on loopback and serve every configured scenario until Ctrl-C."""
    from pydantic import ValidationError

    from serving import ServingConfig

    if config is not None and not config.is_file():
        raise typer.BadParameter(f"{config} does not exist", param_hint="--config")
    serve_file = load_serve_file(config if config is not None else default_serve_config())
    args = {**serve_file.args}
    args.update(
        {
            k: v
            for k, v in {
                "repository": str(repository) if repository else None,
                "ingress_mode": ingress_mode,
            }.items()
            if v is not None
        }
    )
    try:
        serving_config = ServingConfig(**args)
    except ValidationError as exc:
        raise typer.BadParameter(f"serving config ({serve_file.source or 'defaults'}): {exc}") from exc
    if direct_ingress and not single_ingress_replica(serving_config):
        raise typer.BadParameter(
            "direct ingress serves HTTP from one ingress replica: set num_replicas: 1 (ingress_mode "
            "combined) or use ingress_mode separate, or pass --proxy",
            param_hint="--direct-ingress",
        )
    run_server(
        args,
        host or serve_file.host,
        port or serve_file.port,
        app_name=serve_file.app_name,
        route_prefix=serve_file.route_prefix,
        direct_ingress=direct_ingress,
    )


def single_ingress_replica(config: Any) -> bool:
    """Whether the app has exactly one ingress replica (what direct ingress on one port needs)."""
    return config.ingress_mode == "separate" or config.num_replicas == 1


def run_server(
    args: dict[str, Any],
    host: str,
    port: int,
    block: bool = True,
    app_name: str = DEFAULT_APP_NAME,
    route_prefix: str = DEFAULT_ROUTE_PREFIX,
    direct_ingress: bool = False,
) -> None:
    """Start Ray and the app; with block, serve until SIGINT/SIGTERM/SIGHUP, then stop Ray entirely."""
    # Ray's GCS, raylet and workers are children of this process: stop them on every way out, including
    # SIGTERM (kill, docker stop, systemd), which would otherwise end this process without cleanup.
    stop_signals = _raise_on_stop_signals() if block else None
    from ray import serve

    from serving.app import build_app
    from serving.local_ray import start_local_ray, stop_local_ray

    try:
        start_local_ray(host=host, port=port, direct_ingress=direct_ingress)
        serve.run(build_app(args), name=app_name, route_prefix=route_prefix, blocking=False)
        base = f"http://{host}:{port}{route_prefix.rstrip('/')}"
        how = "direct ingress" if direct_ingress else "Serve proxy"
        typer.echo(f"labelwise serving on {base} ({how}; docs: {base}/docs); Ctrl-C stops it")
        if not block:
            return
        while True:
            time.sleep(1)
    except _StopServing as stop:
        typer.echo(f"stopping ({stop})")
    except KeyboardInterrupt:
        typer.echo("stopping")
    except BaseException:
        stop_local_ray()
        raise
    finally:
        if stop_signals is not None:
            _restore_signals(stop_signals)
    if block:
        _stop_quietly(stop_local_ray)


class _StopServing(BaseException):
    """Raised in the main thread by a stop signal (BaseException: no `except Exception` swallows it)."""


def _raise_on_stop_signals() -> dict[int, Any]:
    import signal

    def _handler(signum: int, _frame: Any) -> None:
        # Further signals during the shutdown are ignored: a second Ctrl-C must not cut it short and
        # leave Ray's processes behind.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        raise _StopServing(signal.Signals(signum).name)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, _handler)
    return previous


def _restore_signals(previous: dict[int, Any]) -> None:
    import signal

    for sig, handler in previous.items():
        signal.signal(sig, signal.SIG_IGN if handler is None else handler)


def _stop_quietly(stop: Any) -> None:
    import signal

    # Keep stop signals away while Ray shuts down (serve.shutdown, then ray.shutdown ends GCS/raylet).
    held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        stop()
    finally:
        _restore_signals(held)


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
