"""`labelwise serve` as functions: read a Serve config, check it, start Ray and the app on loopback.

ray and serving.app are imported inside `run_server`, never at import time.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_repository.errors import UsageError

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


@dataclass
class ServePlan:
    """A checked `labelwise serve` run: the app's ServingConfig fields and where it listens."""

    args: dict[str, Any]
    host: str
    port: int
    app_name: str = DEFAULT_APP_NAME
    route_prefix: str = DEFAULT_ROUTE_PREFIX
    direct_ingress: bool = False


def default_serve_config() -> Path | None:
    """The chart's serve-config.yaml beside the package (a checkout or editable install), else None:
    an installed wheel has no chart, and ServingConfig's defaults apply."""
    for root in (Path(__file__).resolve().parents[1], Path.cwd()):
        candidate = root / CHART_SERVE_CONFIG
        if candidate.is_file():
            return candidate
    return None


def load_serve_file(config: Path | None) -> ServeFile:
    """A Serve deploy file (checked by Ray's own ServeDeploySchema: http_options, then the first
    application), or a flat mapping of ServingConfig fields; None gives the defaults. A file that cannot
    be used raises UsageError naming it. `deployments:` and `logging_config:` are validated too, but
    only `serve deploy` (and the chart) apply them: a local run says so in a warning."""
    import logging

    import yaml

    if config is None:
        return ServeFile()
    try:
        raw = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{config}: cannot read the Serve config ({exc})") from exc
    if not isinstance(raw, dict):
        raise UsageError(f"{config}: expected a Serve config or a mapping of ServingConfig fields")
    if "applications" not in raw:
        return ServeFile(args=raw, source=config)
    from pydantic import ValidationError

    from .extras import require

    require("ray.serve")
    from ray.serve.schema import ServeDeploySchema

    try:
        schema = ServeDeploySchema.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise UsageError(f"{config}: not a valid Serve config ({problems})") from None
    if not schema.applications:
        raise UsageError(f"{config}: applications must list at least one application")
    app = schema.applications[0]
    ignored = [key for key in ("deployments", "logging_config") if key in app.model_fields_set]
    ignored += ["logging_config"] if "logging_config" in schema.model_fields_set else []
    if ignored:
        logging.getLogger("labelwise").warning(
            "%s: %s applied by `serve deploy` and the chart, not by `labelwise serve` (set replicas and "
            "resources with the ServingConfig args)",
            config,
            " and ".join(sorted(set(ignored))),
        )
    http = schema.http_options
    # Ray's default host is 0.0.0.0; a local run listens on loopback unless the file says otherwise.
    host = http.host if "host" in http.model_fields_set else DEFAULT_HOST
    return ServeFile(
        args=dict(app.args),
        app_name=app.name,
        route_prefix=app.route_prefix or DEFAULT_ROUTE_PREFIX,
        host=str(host),
        port=int(http.port),
        source=config,
    )


def load_serving_args(config: Path | None, **overrides: Any) -> dict[str, Any]:
    """ServingConfig fields from a Serve config file (or flat YAML) plus the flags that were given."""
    args = load_serve_file(config).args
    args.update({k: v for k, v in overrides.items() if v is not None})
    return args


def single_ingress_replica(config: Any) -> bool:
    """Whether the app has exactly one ingress replica (what direct ingress on one port needs)."""
    return config.ingress_mode == "separate" or config.num_replicas == 1


def plan_server(
    config: Path | None = None,
    *,
    repository: Path | None = None,
    ingress_mode: str | None = None,
    host: str | None = None,
    port: int | None = None,
    direct_ingress: bool = True,
) -> ServePlan:
    """Read the Serve config (None: the chart's, else the defaults), apply the flags given and validate
    the result as a ServingConfig; anything wrong raises UsageError before Ray starts."""
    from pydantic import ValidationError

    from serving import ServingConfig

    if config is not None and not config.is_file():
        raise UsageError(f"--config {config} does not exist")
    serve_file = load_serve_file(config if config is not None else default_serve_config())
    args = {**serve_file.args}
    if repository:
        args["repository"] = str(repository)
    if ingress_mode is not None:
        args["ingress_mode"] = ingress_mode
    try:
        serving_config = ServingConfig(**args)
    except ValidationError as exc:
        raise UsageError(f"serving config ({serve_file.source or 'defaults'}): {exc}") from exc
    if "num_cpus" not in args and "LABELWISE_NUM_CPUS" not in os.environ:
        # The whole machine by default: the local Ray node has every core this process may use, and
        # the classifier replicas share them (each runs num_cpus ORT threads). docs/serving.md.
        args["num_cpus"] = serving_config.num_cpus = local_replica_cpus(serving_config, local_cores())
    if direct_ingress and not single_ingress_replica(serving_config):
        raise UsageError(
            "direct ingress serves HTTP from one ingress replica: set num_replicas: 1 (ingress_mode "
            "combined) or use ingress_mode separate, or pass --proxy"
        )
    return ServePlan(
        args=args,
        host=host or serve_file.host,
        port=port or serve_file.port,
        app_name=serve_file.app_name,
        route_prefix=serve_file.route_prefix,
        direct_ingress=direct_ingress,
    )


def local_cores() -> int:
    """Cores this process may run on (its CPU affinity, which a container's cpuset narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def local_replica_cpus(config: Any, cores: int) -> float:
    """CPUs (and so ORT threads) per classifier replica when the config names none, on `cores` cores:
    the cores split evenly over a fixed number of replicas, less what a separate ingress reserves;
    at least 1. An autoscaled deployment keeps 1 CPU per replica, so that scaling out has room."""
    if config.num_replicas == "auto":
        return 1.0
    free = cores - (config.ingress_num_cpus if config.ingress_mode == "separate" else 0.0)
    return float(max(1, int(free // config.num_replicas)))


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
        if stop_signals is not None:
            # ray.init puts its own SIGTERM handler in (sys.exit from wherever the main thread is):
            # ours again, so SIGTERM takes the same stop path as Ctrl-C.
            _raise_on_stop_signals()
        serve.run(build_app(args), name=app_name, route_prefix=route_prefix, blocking=False)
        base = f"http://{host}:{port}{route_prefix.rstrip('/')}"
        how = "direct ingress" if direct_ingress else "Serve proxy"
        cpus = args.get("num_cpus", "default")
        print(
            f"labelwise serving on {base} ({how}, {cpus} CPUs and ORT threads per replica; docs: "
            f"{base}/docs); Ctrl-C stops it",
            flush=True,
        )
        if not block:
            return
        while True:
            time.sleep(1)
    except _StopServing as stop:
        print(f"stopping ({stop})", flush=True)
    except KeyboardInterrupt:
        print("stopping", flush=True)
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
