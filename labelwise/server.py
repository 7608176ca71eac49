"""`labelwise serve` and `labelwise deploy` as functions: read a Serve config, check it, then start Ray and
the app on loopback (`run_server`), deploy the app onto a running cluster through ray.init
(`serve_on_cluster`), or submit the config to the cluster's dashboard like `serve deploy`
(`deploy_to_cluster`).

ray and serving.app are imported inside the functions, never at import time.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from model_repository.errors import EXIT_RUNTIME, LabelwiseError, UsageError, validation_problems
from model_repository.storage import parse_root
from training.errors import not_a_file

# The one Serve config: the chart renders it, the Docker image ships it, `labelwise serve` reads it.
CHART_SERVE_CONFIG = Path("helm") / "labelwise" / "files" / "serve-config.yaml"
DEFAULT_APP_NAME = "labelwise"
DEFAULT_ROUTE_PREFIX = "/"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_START_TIMEOUT_S = 300.0
START_TIMEOUT_ENV = "LABELWISE_SERVE_START_TIMEOUT_S"

logger = logging.getLogger("labelwise")


@dataclass
class ServeFile:
    """What `labelwise serve` takes from a Serve config: the app's args, name, route and listen address."""

    args: dict[str, Any] = field(default_factory=dict)
    app_name: str = DEFAULT_APP_NAME
    route_prefix: str = DEFAULT_ROUTE_PREFIX
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    source: Path | None = None
    # Whether the file names http_options.host (else `host` is a local run's loopback default).
    host_set: bool = False
    # The file's proxy_location where it names one: a cluster run's default (a local run has no proxies).
    proxy_location: str | None = None


@dataclass
class ServePlan:
    """A checked `labelwise serve` run: the app's ServingConfig fields and where it listens."""

    args: dict[str, Any]
    host: str
    port: int
    app_name: str = DEFAULT_APP_NAME
    route_prefix: str = DEFAULT_ROUTE_PREFIX
    direct_ingress: bool = False
    ingress_replicas: int = 1
    proxy_location: str | None = None  # the Serve config's, for a cluster run that names none
    # The validated ServingConfig of args (the LABELWISE_* variables applied), for checks before Ray starts.
    config: Any = field(default=None, compare=False, repr=False)


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
    if config is None:
        return ServeFile()
    raw = _read_serve_yaml(config)
    if "applications" not in raw:
        return ServeFile(args=raw, source=config)
    schema = _deploy_schema(raw, config)
    app = schema.applications[0]
    _check_unapplied(schema, config)
    http = schema.http_options
    # Ray's default host is 0.0.0.0; a local run listens on loopback unless the file says otherwise.
    host_set = "host" in http.model_fields_set
    return ServeFile(
        args=dict(app.args),
        app_name=app.name,
        route_prefix=app.route_prefix or DEFAULT_ROUTE_PREFIX,
        host=str(http.host if host_set else DEFAULT_HOST),
        port=int(http.port),
        source=config,
        host_set=host_set,
        proxy_location=_text(schema.proxy_location) if "proxy_location" in schema.model_fields_set else None,
    )


def _check_unapplied(schema: Any, config: Path) -> None:
    """The one place that decides what of a deploy file a local run leaves out. What it cannot apply and
    must not drop unsaid: TLS (it would serve plain HTTP), the app's runtime_env (its LABELWISE_API_KEY
    would leave /v1 open) and another app's import_path are refused (UsageError naming the key); other
    http_options keys, `deployments:` and `logging_config:` (applied by `serve deploy` and the chart) and
    applications after the first, warned of."""
    http_set = schema.http_options.model_fields_set
    tls = sorted(key for key in http_set if key.startswith("ssl_"))
    if tls:
        raise UsageError(
            f"{config}: http_options.{', http_options.'.join(tls)}: `labelwise serve` serves plain HTTP and "
            "cannot apply TLS; remove it (terminate TLS in front of it), or deploy with `labelwise deploy`"
        )
    app = schema.applications[0]
    if app.runtime_env:
        raise UsageError(
            f"{config}: applications[0].runtime_env: `labelwise serve` does not apply it (its env_vars "
            "would be dropped); set LABELWISE_* variables in this shell (an API key: LABELWISE_API_KEY, "
            "never in a Serve config), or deploy with `labelwise deploy`"
        )
    if app.import_path != SERVING_IMPORT_PATH:
        raise UsageError(
            f"{config}: applications[0].import_path {app.import_path}: `labelwise serve` serves only "
            f"{SERVING_IMPORT_PATH}"
        )
    unused = sorted(http_set - {"host", "port"})
    if unused:
        logger.warning(
            "%s: http_options.%s not applied by `labelwise serve` (only host and port)",
            config,
            ", http_options.".join(unused),
        )
    ignored = {key for key in ("deployments", "logging_config") if key in app.model_fields_set}
    ignored |= {"logging_config"} if "logging_config" in schema.model_fields_set else set()
    if ignored:
        logger.warning(
            "%s: %s applied by `serve deploy` and the chart, not by `labelwise serve` (set replicas and "
            "resources with the ServingConfig args)",
            config,
            " and ".join(sorted(ignored)),
        )
    if len(schema.applications) > 1:
        logger.warning(
            "%s: only the first application (%s) is served by `labelwise serve`; not %s",
            config,
            app.name,
            ", ".join(other.name for other in schema.applications[1:]),
        )


def load_serving_args(config: Path | None, **overrides: Any) -> dict[str, Any]:
    """ServingConfig fields from a Serve config file (or flat YAML) plus the flags that were given."""
    args = load_serve_file(config).args
    args.update({k: v for k, v in overrides.items() if v is not None})
    return args


def ingress_replicas(config: Any) -> int | None:
    """How many replicas serve HTTP: the one ingress of `ingress_mode: separate`, else num_replicas;
    None when autoscaled (direct ingress binds one port per replica, so it needs the number)."""
    if config.ingress_mode == "separate":
        return 1
    return None if config.num_replicas == "auto" else int(config.num_replicas)


def _set(args: dict[str, object], field: str) -> bool:
    """Whether the Serve config or a LABELWISE_* env var sets a ServingConfig field."""
    return field in args or f"LABELWISE_{field.upper()}" in os.environ


def _config_source(exc: Any, args: dict[str, Any], source: Any) -> str:
    """Where a refused ServingConfig came from: the file (or the defaults), and each LABELWISE_* variable
    that set a field the errors name (the file does not set it), so that a bad variable is not blamed on a
    file that never mentions the field."""
    from serving.config import ServingConfig

    prefix = ServingConfig.model_config.get("env_prefix", "")
    fields = {str(e["loc"][0]) for e in exc.errors() if e.get("loc")}
    variables = sorted(
        f"{prefix}{f.upper()}" for f in fields if f not in args and f"{prefix}{f.upper()}" in os.environ
    )
    where = f"serving config ({source or 'defaults'})"
    if variables:  # a JSON field (scenarios, autoscaling_config) is read from its variable as JSON
        where += f" with {', '.join(variables)} from the environment (JSON for a list or mapping)"
    return where


def plan_server(
    config: Path | None = None,
    *,
    repository: Path | None = None,
    repository_fallback: str | None = None,
    ingress_mode: str | None = None,
    host: str | None = None,
    port: int | None = None,
    direct_ingress: bool = True,
    local: bool = True,
    settings: dict[str, Any] | None = None,
) -> ServePlan:
    """Read the Serve config (None: the chart's, else the defaults), apply the flags given and validate
    the result as a ServingConfig; anything wrong raises UsageError before Ray starts. local: the app
    runs on this machine's own Ray, so a config without num_cpus gets its cores (not with --address:
    a cluster's replicas get the config's num_cpus). settings: ServingConfig fields that replace the
    file's (e.g. the demo's scenarios), applied before the flags. repository_fallback: the repository where
    the file names none (LABELWISE_REPOSITORY, which a config file's `repository` beats as it beats every
    LABELWISE_* variable), kept in the app's args so that a cluster's replicas get it too."""
    from pydantic import ValidationError

    from serving import ServingConfig
    from serving.config import repository_url_only
    from serving.local_ray import local_cores

    if config is not None and not config.is_file():
        raise UsageError(f"--config {config} {not_a_file(config)}")
    serve_file = load_serve_file(config if config is not None else default_serve_config())
    args = {**serve_file.args, **(settings or {})}
    if repository:
        # An object-store URL as parse_root reads it (the CLI hands a Path: `s3://b/p` arrives as `s3:/b/p`);
        # a local path given here, absolute for a cluster: its replicas resolve a relative one on their nodes.
        root = parse_root(repository)
        args["repository"] = os.path.abspath(root) if isinstance(root, Path) and not local else str(root)
    elif repository_fallback and "repository" not in args:
        args["repository"] = repository_fallback
    refuse_empty_host(host)
    if ingress_mode is not None:
        # the flag's value refused as the flag, not as the Serve config's field (the file may not name it)
        modes = get_args(ServingConfig.model_fields["ingress_mode"].annotation)
        if ingress_mode not in modes:
            raise UsageError(f"--ingress-mode {ingress_mode}: use {' or '.join(modes)}")
        args["ingress_mode"] = ingress_mode
    try:
        # For a cluster, only the replicas open an object store: this machine may lack its package and keys.
        with contextlib.nullcontext() if local else repository_url_only():
            serving_config = ServingConfig(**args)
    except ValidationError as exc:
        raise UsageError(f"{_config_source(exc, args, serve_file.source)}: {exc}") from exc
    if local:
        plan_local_sizing(args, serving_config, local_cores())
    replicas = ingress_replicas(serving_config)
    if (
        local
        and replicas == 1
        and serving_config.ingress_mode == "combined"
        and not _set(args, "ray_metrics_export")
    ):
        # One replica answers every request and serves /metrics itself: Ray's copy of the same figures
        # would only cost request-loop time (its recording ~10 % of the loop in a py-spy profile, and
        # the metrics agent's CPU). Set ray_metrics_export to keep it.
        args["ray_metrics_export"] = serving_config.ray_metrics_export = False
    if direct_ingress and replicas is None:
        raise UsageError(
            "direct ingress needs a fixed number of ingress replicas (they share the port): set "
            "num_replicas to a number, or pass --proxy to autoscale behind Serve's proxy"
        )
    listen_port = port if port is not None else serve_file.port
    if not 1 <= listen_port <= 65535:
        where = "--port" if port is not None else f"{serve_file.source}: http_options.port"
        raise UsageError(f"{where} {listen_port}: use a TCP port from 1 to 65535")
    if host:
        listen_host = host
    elif local or serve_file.host_set:
        listen_host = serve_file.host
    else:
        # A file that names no host, on a cluster: Ray's default, as `labelwise deploy` leaves it.
        listen_host = RAY_DEFAULT_HOST
    if not local and not host:
        warn_loopback_on_cluster(listen_host, f"{serve_file.source or 'the default Serve config'}")
    return ServePlan(
        args=args,
        host=listen_host,
        port=listen_port,
        app_name=serve_file.app_name,
        route_prefix=serve_file.route_prefix,
        direct_ingress=direct_ingress,
        ingress_replicas=replicas or 1,
        proxy_location=serve_file.proxy_location,
        config=serving_config,
    )


def refuse_empty_host(host: str | None) -> None:
    """`--host ""` (or only spaces) is refused (UsageError, exit 2): serve took the file's host instead,
    saying nothing, and deploy sent the cluster an empty address to listen on."""
    if host is not None and not host.strip():
        raise UsageError("--host is empty: give the address to listen on, e.g. 127.0.0.1 or 0.0.0.0")


def served_url(host: str, port: int, route_prefix: str = "/") -> str:
    """The base URL the start message gives: an IPv6 literal in brackets (RFC 3986: `--host ::1` printed
    http://::1:8000, which no client can use)."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}{route_prefix.rstrip('/')}"


# Where Serve's proxies listen on a cluster when the Serve config names no host (Ray's own default).
RAY_DEFAULT_HOST = "0.0.0.0"


def is_loopback_host(host: str) -> bool:
    import ipaddress

    name = host.strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def warn_loopback_on_cluster(host: str, source: str) -> None:
    """A warning where a cluster's Serve proxies would listen on loopback (the shipped file's 127.0.0.1,
    meant for a local run): reachable only from inside each node. Not refused: an operator may mean it
    (a sidecar, a node-local client)."""
    if is_loopback_host(host):
        logger.warning(
            "%s: http_options.host %s on a cluster: Serve's proxies will answer only on each node's own "
            "loopback, unreachable from the network (where Serve starts there now); pass --host 0.0.0.0 "
            "to open them",
            source,
            host,
        )


def plan_local_sizing(args: dict[str, Any], serving_config: Any, cores: int) -> None:
    """Size the replicas of a local run on `cores` cores, in args and serving_config alike: num_cpus,
    batch slots and ORT threads where neither the config nor a LABELWISE_* variable sets them, then fit
    them to the cores (fit_local_cores). `labelwise serve` and `labelwise doctor` both use it."""
    sized_here = not _set(args, "num_cpus")
    if sized_here:
        # The whole machine by default: the local Ray node has every core this process may use, and
        # the classifier replicas share them (num_cpus ORT threads each, unless the two sharing slots
        # below split them). docs/serving.md.
        args["num_cpus"] = serving_config.num_cpus = local_replica_cpus(serving_config, cores)
        if args["num_cpus"] >= 2 and not _set(args, "max_concurrent_batches"):
            # Two batches at once on a replica with the whole machine: one batch's tokenizer and HTTP
            # work overlap the other's ORT pass. Measured (MiniLM int8, 2 cores, wrk, one-text
            # requests): c=32 199 req/s and p99 276 ms against 133 and 329 with one batch at a time;
            # c=8 148 against 136 (docs/benchmarks.md).
            args["max_concurrent_batches"] = serving_config.max_concurrent_batches = 2
            if not _set(args, "share_waiting_rows") and not _set(args, "ort_intra_op_threads"):
                # ... and each slot runs its share of the rows waiting on half the cores, so that the two
                # passes do not fight for the same cores (2 cores, interleaved A/B, 4 rounds: one text
                # +5 % at c=8, +7 % at c=32 with p99 158 ms against 229, 32 texts +21 %; docs/serving.md).
                args["share_waiting_rows"] = serving_config.share_waiting_rows = True
                threads = max(1, int(args["num_cpus"]) // 2)
                args["ort_intra_op_threads"] = serving_config.ort_intra_op_threads = threads
                if threads == 1:
                    # Single-threaded passes: one pass worker per core. A worker takes its next batch
                    # itself as its pass ends (no wait for the request loop), so a third worker on 2
                    # cores only time-slices them: 32-text requests at c=4, served/ceiling median 0.94
                    # with 2 workers (9 interleaved loads), 0.91 with 3 (6), 0.90 with the asyncio
                    # slots before (9); one text at c=8 and c=32 the same within noise
                    # (docs/serving.md, "Pass workers").
                    workers = int(args["num_cpus"])
                    args["max_concurrent_batches"] = serving_config.max_concurrent_batches = workers
    fit_local_cores(args, serving_config, cores, sized_here)


def fit_local_cores(args: dict[str, Any], config: Any, cores: int, sized_here: bool) -> None:
    """Make sure the replicas Ray starts first (and a separate ingress) fit the `cores` CPUs of the local
    Ray node (serving.local_ray.start_local_ray gives it exactly that many), or Ray would never schedule
    some of them and the start would wait until it times out. CPUs the plan sized itself (sized_here)
    shrink to an even share, with a warning; num_cpus from the config or LABELWISE_NUM_CPUS that does not
    fit is refused (UsageError)."""
    if config.num_replicas == "auto":
        autoscaling = config.autoscaling_config or {}
        initial = autoscaling.get("initial_replicas")
        replicas = int(initial if initial is not None else autoscaling.get("min_replicas", 1))
    else:
        replicas = int(config.num_replicas)
    ingress = config.ingress_num_cpus if config.ingress_mode == "separate" else 0.0
    needed = replicas * config.num_cpus + ingress
    if needed <= cores + 1e-9:
        return
    # Ray takes fractions of a CPU (to 0.0001): an even share, rounded down to 0.01 so that it fits.
    share = math.floor((cores - ingress) / replicas * 100) / 100 if replicas else 0.0
    plural = "s" if replicas != 1 else ""
    if sized_here and share > 0:
        args["num_cpus"] = config.num_cpus = share
        logger.warning(
            "%s replica%s on %s cores: %s CPUs each%s (set num_cpus to choose)",
            replicas,
            plural,
            cores,
            f"{share:g}",
            f", beside the ingress's {ingress:g}" if ingress else "",
        )
        return
    asked = f"{replicas} replica{plural} x num_cpus {config.num_cpus:g}" + (
        f" + ingress_num_cpus {ingress:g}" if ingress else ""
    )
    fix = (
        f"lower num_replicas, or set num_cpus to {share:g} or less (fractions are allowed)"
        if share > 0
        else "lower ingress_num_cpus"
    )
    raise UsageError(
        f"{asked} = {needed:g} CPUs, more than this machine's {cores} cores: Ray would never start the "
        f"replicas beyond them; {fix}"
    )


def local_replica_cpus(config: Any, cores: int) -> float:
    """CPUs (and so ORT threads) per classifier replica when the config names none, on `cores` cores:
    the cores split evenly over a fixed number of replicas, less what a separate ingress reserves;
    at least 1. An autoscaled deployment keeps 1 CPU per replica, so that scaling out has room."""
    if config.num_replicas == "auto":
        return 1.0
    free = cores - (config.ingress_num_cpus if config.ingress_mode == "separate" else 0.0)
    return float(max(1, int(free // config.num_replicas)))


# How doctor and a local serve word what a replica would refuse at start.
REPLICA_REFUSAL = "a replica would refuse to start"


def engine_choice(config: Any) -> tuple[list[str], list[str]]:
    """The ONNX Runtime providers and the precision order a replica of this ServingConfig takes on this
    machine, by the replica's own rules (choose_providers, precision_order); what a replica would refuse
    to start with raises (ModelLoadError). `labelwise doctor` reports it, a local `labelwise serve`
    refuses it before Ray starts."""
    from serving.engine import choose_providers, precision_order

    providers = choose_providers(config.ort_providers, config.num_gpus)
    return providers, precision_order(config.precision, providers)


def refuse_what_replicas_refuse(config: Any) -> None:
    """For a local serve, whose replicas run on this machine: the refusal a replica would raise at start
    (CUDA asked for where this ONNX Runtime has none, fp16 without a GPU), as `labelwise doctor` words it,
    a UsageError (exit 2) before Ray starts, instead of replica tracebacks and exit 1 half a minute later."""
    try:
        engine_choice(config)
    except ImportError:  # no onnxruntime here (MissingExtraError, exit 2, names the extra)
        raise
    except Exception as exc:  # as doctor catches it
        raise UsageError(f"{REPLICA_REFUSAL}: {exc}") from None


def run_server(
    args: dict[str, Any],
    host: str,
    port: int,
    block: bool = True,
    app_name: str = DEFAULT_APP_NAME,
    route_prefix: str = DEFAULT_ROUTE_PREFIX,
    direct_ingress: bool = False,
    start_timeout_s: float | None = None,
    ingress_replicas: int = 1,
) -> None:
    """Start Ray and the app; with block, serve until SIGINT/SIGTERM/SIGHUP, then stop Ray entirely.

    While the app starts, what Serve says of a deployment that is not coming up (replicas pending for
    resources: a GPU the node does not have, say; a constructor that fails) is printed as it changes,
    and a start that takes over start_timeout_s (None: LABELWISE_SERVE_START_TIMEOUT_S, else 300 s) fails
    with the last of it (ServeStartError, exit 1)."""
    if start_timeout_s is None:
        start_timeout_s = start_timeout_from_env()
    from serving.ports import hold_port

    # Before Ray starts: the servers bind with SO_REUSEPORT, so a second one on a port in use would not
    # fail but share its connections with whatever listens there. The port stays held until this returns
    # (a serve started meanwhile is refused), its own replicas binding beside the held socket.
    hold_port(host, port)
    # Ray's GCS, raylet and workers are children of this process: stop them on every way out, including
    # SIGTERM (kill, docker stop, systemd), which would otherwise end this process without cleanup.
    stop_signals = raise_on_stop_signals() if block else None
    from ray import serve

    from serving.app import build_app
    from serving.local_ray import start_local_ray, stop_local_ray

    try:
        # ray.init would put its own SIGTERM handler in (sys.exit(15) from wherever the main thread is):
        # start_local_ray keeps it out, holds a stop signal while ray.init runs and hands it to ours as
        # ray.init returns, before Serve starts, so SIGTERM takes the same stop path as Ctrl-C.
        start_local_ray(
            host=host, port=port, direct_ingress=direct_ingress, ingress_replicas=ingress_replicas
        )
        with _start_watch(app_name, start_timeout_s):
            try:
                serve.run(build_app(args), name=app_name, route_prefix=route_prefix, blocking=False)
            except RuntimeError as exc:  # DEPLOY_FAILED: a replica constructor kept raising
                raise ServeStartError(f"the app did not start: {exc}") from None
        import ray

        from serving import ServingConfig

        base = served_url(host, port, route_prefix)
        how = "direct ingress" if direct_ingress else "Serve proxy"
        node = _count(ray.cluster_resources().get("CPU", 0), "CPU")
        print(
            f"labelwise serving on {base} ({how}; {replica_sizing(ServingConfig(**args))}; Ray node: "
            f"{node}; docs: {base}/docs); Ctrl-C stops it",
            flush=True,
        )
        if not block:
            return
        while True:
            time.sleep(1)
    except BaseException as exc:
        stop = stop_request(exc)
        if stop is None:
            stop_local_ray()
            raise
        print(f"stopping ({stop})" if str(stop) else "stopping", flush=True)
        if not block:
            # The caller goes on after a non-blocking start: it must hear of the Ctrl-C, with Ray stopped.
            _stop_quietly(stop_local_ray)
            raise stop from None
    finally:
        if stop_signals is not None:
            _restore_signals(stop_signals)
    if block:
        _stop_quietly(stop_local_ray)


def start_timeout_from_env() -> float:
    """LABELWISE_SERVE_START_TIMEOUT_S in seconds (unset: 300); anything else than a number above 0 is a
    UsageError, raised before Ray starts."""
    raw = os.environ.get(START_TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_START_TIMEOUT_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise UsageError(
            f"{START_TIMEOUT_ENV}={raw!r}: expected seconds, a number above 0 (unset: "
            f"{DEFAULT_START_TIMEOUT_S:g})"
        )
    return seconds


def replica_sizing(config: Any) -> str:
    """What the classifier replicas run, as the plan set it (ServingConfig): replicas x CPUs, pass
    workers x ORT threads, and a separate ingress's CPUs."""
    if config.num_replicas == "auto":
        replicas = "autoscaled replicas"
    else:
        replicas = _count(config.num_replicas, "replica")
    workers = _count(config.max_concurrent_batches, "pass worker")
    threads = _count(config.ort_threads, "ORT thread")
    sizing = f"{replicas} x {_count(config.num_cpus, 'CPU')}: {workers} x {threads}"
    if config.ingress_mode == "separate":
        sizing += f", ingress {_count(config.ingress_num_cpus, 'CPU')}"
    return sizing


def _count(number: float, noun: str) -> str:
    return f"{number:g} {noun}{'' if number == 1 else 's'}"


def stop_request(exc: BaseException) -> StopServing | KeyboardInterrupt | None:
    """The Ctrl-C or stop signal behind exc, if any. A signal that lands while Ray's C++ core waits (its
    `check_signals`, during ray.get) comes out as a SystemError whose cause is what our handler raised.
    A SIGTERM that meets Ray's own handler, `sys.exit(15)` (a Ray whose ray.init start_local_ray cannot
    keep it out of), is the same stop."""
    import signal

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, StopServing | KeyboardInterrupt):
            return current
        if isinstance(current, SystemExit) and current.code == signal.SIGTERM:
            return StopServing(signal.SIGTERM.name)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class ServeStartError(LabelwiseError):
    """The Serve app did not come up: its deployment failed, or it was still not running at the timeout."""

    exit_code = EXIT_RUNTIME


class _StartTimedOut(BaseException):
    """Raised in the main thread (by SIGUSR1 from the start watch) to end a serve.run that waits on."""


@contextlib.contextmanager
def _start_watch(app_name: str, timeout_s: float) -> Iterator[None]:
    """Print Serve's deployment messages while the app starts; past timeout_s, end the start."""
    import signal
    import threading

    from ray import serve

    done = threading.Event()
    said: list[str] = []

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while not done.wait(2.0):
            try:
                app = serve.status().applications.get(app_name)
            except Exception:  # the controller may still be starting; ask again
                continue
            for name, deployment in (app.deployments if app else {}).items():
                message = f"{name}: {deployment.status}: {deployment.message}"
                if deployment.message and message not in said:
                    said.append(message)
                    print(f"[serve] {message}", flush=True)
            if time.monotonic() > deadline and not done.is_set():
                signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
                return

    def timed_out(_signum: int, _frame: Any) -> None:
        raise _StartTimedOut

    previous = signal.signal(signal.SIGUSR1, timed_out)
    watcher = threading.Thread(target=watch, name="labelwise-start-watch", daemon=True)
    watcher.start()
    try:
        yield
    except _StartTimedOut:
        last = said[-1] if said else "Serve gave no reason"
        raise ServeStartError(
            f"the app was not running after {timeout_s:g} s; last from Serve: {last}"
        ) from None
    finally:
        done.set()
        signal.signal(signal.SIGUSR1, previous)


class StopServing(BaseException):
    """Raised in the main thread by a stop signal (BaseException: no `except Exception` swallows it)."""


def raise_on_stop_signals() -> dict[int, Any]:
    import signal

    def _handler(signum: int, _frame: Any) -> None:
        # Further signals during the shutdown are ignored: a second Ctrl-C must not cut it short and
        # leave Ray's processes behind.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        raise StopServing(signal.Signals(signum).name)

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


# --- A running Ray cluster: `labelwise serve --address` and `labelwise deploy` -------------------------

# How long reaching a cluster may take before the command gives up (the issue asks for under 30 s).
CLUSTER_CONNECT_TIMEOUT_S = 10.0
SERVING_IMPORT_PATH = "serving.app:build_app"
_DEFAULT_PORTS = {"ray": 10001, "http": 80, "https": 443, "": 6379}
_SETTLED = {"RUNNING", "DEPLOY_FAILED", "UNHEALTHY"}


@dataclass
class ClusterStatus:
    """One application's status on a cluster, as Serve reports it, and the lines `labelwise` prints."""

    app_name: str
    status: str
    message: str = ""
    deployments: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        head = f"{self.app_name}: {self.status}" + (f" ({self.message})" if self.message else "")
        return [head, *(f"  {name}: {text}" for name, text in self.deployments.items())]


def cluster_endpoint(address: str) -> tuple[str, int] | None:
    """Host and port a cluster address points at: `ray://HOST[:10001]` (Ray Client), `HOST:PORT` (the
    GCS), `http(s)://HOST:PORT` (the dashboard). None for `auto`, which Ray resolves itself."""
    from urllib.parse import urlsplit

    if address == "auto":
        return None
    scheme = address.split("://", 1)[0] if "://" in address else ""
    if scheme not in _DEFAULT_PORTS:
        raise UsageError(
            f"--address {address}: expected ray://HOST:10001, HOST:6379 (the GCS), http://HOST:8265 "
            "(the dashboard) or auto"
        )
    try:
        parts = urlsplit(address if scheme else f"gcs://{address}")
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise UsageError(f"--address {address}: {exc}") from None
    if not host:
        raise UsageError(f"--address {address}: no host")
    return host, port or _DEFAULT_PORTS[scheme]


def check_reachable(address: str, timeout_s: float = CLUSTER_CONNECT_TIMEOUT_S) -> None:
    """Open (and close) a TCP connection to the address's port, so that a wrong or firewalled address fails
    within timeout_s with a clear message instead of in Ray's own, much longer, retries."""
    import socket

    endpoint = cluster_endpoint(address)
    if endpoint is None:
        return
    try:
        with socket.create_connection(endpoint, timeout=timeout_s):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise LabelwiseError(
            f"cannot reach the Ray cluster at {address} ({reason} after at most {timeout_s:g} s): is the "
            "cluster running and the port open to this machine?"
        ) from None


def connect_cluster(address: str) -> Any:
    """ray.init onto a running cluster (never a new local one); the connection's context, whose
    `dashboard_url` names the cluster's dashboard."""
    import os
    import warnings

    check_reachable(address)
    # Ray Client tries 3 times, waiting 5, 10 and 15 s for a channel to an accepting but silent port: 2 s
    # first keeps the whole try under 30 s (read when ray is first imported).
    os.environ.setdefault("RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S", "2")
    import ray

    try:
        with warnings.catch_warnings():  # Ray Client's own timeout warning: the error below says it
            warnings.simplefilter("ignore")
            return ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    except (ConnectionError, RuntimeError, TimeoutError, ValueError) as exc:
        raise LabelwiseError(f"cannot connect to the Ray cluster at {address}: {exc}") from None


def serve_on_cluster(
    plan: ServePlan, address: str, proxy_location: str | None = None, timeout_s: float = 300
) -> ClusterStatus:
    """Deploy the app of a checked plan onto the running cluster at address; return once it runs.

    The app stays on the cluster after this returns (Serve's controller is a detached actor); the plan's
    host, port and proxy_location only apply when Serve is not running there yet. The cluster's nodes
    need labelwise installed (the chart's image has it): the app's code is imported there, not shipped.
    An app not running after timeout_s raises, with Serve's status of it; it stays deploying there."""
    import threading

    from ray import serve

    from serving.app import build_app
    from serving.config import repository_url_only

    # --proxy-location, else the Serve config's (it was dropped without a word), else Serve's EveryNode
    proxy_location = proxy_location_name(proxy_location or plan.proxy_location or "EveryNode")
    connect_cluster(address)
    import ray

    outcome: list[BaseException | None] = []

    def _run() -> None:
        try:
            # serve.run waits until every deployment is healthy, or raises when the app fails to deploy.
            with repository_url_only():  # the replicas open the store, not this driver
                app = build_app(plan.args)
            serve.run(app, name=plan.app_name, route_prefix=plan.route_prefix)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    try:
        serve.start(proxy_location=proxy_location, http_options={"host": plan.host, "port": plan.port})
        runner = threading.Thread(target=_run, name="labelwise-serve-run", daemon=True)
        runner.start()
        runner.join(timeout_s)
        app = serve.status().applications.get(plan.app_name)
        status = _cluster_status(plan.app_name, app)
    finally:
        ray.shutdown()  # this driver only: the app keeps running on the cluster
    if outcome and outcome[0] is not None:
        # Serve's own reason (a replica's constructor error, say) is in the status, not in the exception
        why = "; ".join(status.lines())
        raise LabelwiseError(
            f"deploying {plan.app_name} onto {address} failed: {outcome[0]}" + (f" ({why})" if why else "")
        )
    if not outcome:
        raise LabelwiseError(f"not running after {timeout_s:g} s: " + "; ".join(status.lines()))
    return status


def proxy_location_name(value: str) -> str:
    """Serve's proxy location, named case-insensitively (EveryNode, HeadOnly, Disabled), or UsageError:
    checked before the cluster is contacted."""
    from ray.serve.config import ProxyLocation

    names = {location.value.lower(): location.value for location in ProxyLocation}
    try:
        return names[value.lower()]
    except KeyError:
        raise UsageError(
            f"--proxy-location {value}: use one of {', '.join(names.values())} (any case)"
        ) from None


def _cluster_status(app_name: str, app: Any) -> ClusterStatus:
    """A ClusterStatus from Serve's ApplicationStatusOverview (serve.status) or ApplicationDetails (the
    dashboard's details); None: the app is not on the cluster."""
    from collections import Counter

    if app is None:
        return ClusterStatus(app_name, "NOT_STARTED")
    deployments = {}
    for name, deployment in app.deployments.items():
        states = getattr(deployment, "replica_states", None)
        if states is None:  # DeploymentDetails lists the replicas themselves
            states = Counter(_text(replica.state) for replica in deployment.replicas)
        replicas = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
        text = f"{_text(deployment.status)} ({replicas or 'no replicas'})"
        deployments[name] = text + (f": {deployment.message}" if deployment.message else "")
    return ClusterStatus(app_name, _text(app.status), app.message or "", deployments)


def _text(value: Any) -> str:
    return str(getattr(value, "value", value))


def read_deploy_config(config: Path) -> dict[str, Any]:
    """A Serve deploy file, checked by Ray's ServeDeploySchema and each labelwise app's args by
    ServingConfig, as the JSON `serve deploy` sends; a flat mapping of ServingConfig fields becomes one
    app named labelwise. Anything wrong raises UsageError before the cluster is contacted."""
    from pydantic import ValidationError

    from serving.config import FileServingConfig, repository_url_only

    if not config.is_file():
        raise UsageError(f"--config {config} {not_a_file(config)}")
    raw = _read_serve_yaml(config)
    if "applications" not in raw:
        app = {
            "name": DEFAULT_APP_NAME,
            "route_prefix": DEFAULT_ROUTE_PREFIX,
            "import_path": SERVING_IMPORT_PATH,
        }
        raw = {"applications": [{**app, "args": raw}]}
    schema = _deploy_schema(raw, config)
    for app in schema.applications:
        if app.import_path == SERVING_IMPORT_PATH:
            _refuse_key_in_config(config, app)
            _warn_node_relative_repository(config, app)
            try:
                # The file alone: the cluster's replicas do not see this machine's LABELWISE_* variables.
                # And the URL of an object store alone: the replicas open it with their own keys.
                with repository_url_only():
                    serving_config = FileServingConfig(**app.args)
            except ValidationError as exc:
                raise UsageError(f"{config}: application {app.name}: {exc}") from None
            _check_deployments(config, app, serving_config)
    payload = schema.model_dump(mode="json", exclude_unset=True)
    for sent, app in zip(payload["applications"], schema.applications, strict=True):
        sent.setdefault("name", app.name)  # Serve's default ("default"), named: the status is read by name
    return payload


def _refuse_key_in_config(config: Path, app: Any) -> None:
    """An API key in a deploy file (its args, or LABELWISE_API_KEY in its runtime_env) goes to the cluster
    as written: `serve config` and the dashboard show it to anyone who can read them. UsageError naming
    where to put it instead, before the cluster is contacted."""
    env_vars = (app.runtime_env or {}).get("env_vars") or {}
    if "api_key" in app.args:
        where = "args.api_key"
    elif "LABELWISE_API_KEY" in env_vars:
        where = "runtime_env.env_vars.LABELWISE_API_KEY"
    else:
        return
    raise UsageError(
        f"{config}: application {app.name}: {where}: a key in the Serve config is shown by "
        "`serve config` and the Ray dashboard; set LABELWISE_API_KEY in the environment of every "
        "node's `ray start` instead (the chart: apiKey, from a Secret)"
    )


def _warn_node_relative_repository(config: Path, app: Any) -> None:
    """A local repository path is opened by each replica on its own node: a relative one from the folder
    `ray start` ran in there, not from here. Warned of (a cluster may be laid out for it)."""
    repository = app.args.get("repository")
    if repository is None:
        logger.warning(
            "%s: application %s names no repository: each replica reads LABELWISE_REPOSITORY from its node's "
            "environment, else ./var/model-repository in the folder its node's `ray start` ran in",
            config,
            app.name,
        )
    elif _is_relative_path(repository):
        logger.warning(
            "%s: application %s: repository %s is relative: each replica resolves it in the folder its "
            "node's `ray start` ran in, not here (give an absolute path every node has, or an object-store "
            "URL)",
            config,
            app.name,
            repository,
        )


def _is_relative_path(repository: Any) -> bool:
    """Whether a config's repository is a relative local folder (not an object-store URL or `file://` path,
    read as parse_root reads them); a value parse_root refuses is left to the config's own checks."""
    try:
        root = parse_root(str(repository))
    except LabelwiseError:
        return False
    return isinstance(root, Path) and not root.is_absolute()


def _check_deployments(config: Path, app: Any, serving_config: Any) -> None:
    """A `deployments:` entry must name a deployment build_app makes for these args (serving.app
    deployment_names), or Serve refuses the whole config on the cluster, after the upload: UsageError
    naming it and the app's deployments, before the cluster is contacted. Its autoscaling_config is checked
    as the app's own (serving.config.check_autoscaling_config)."""
    from serving.app import deployment_names
    from serving.config import check_autoscaling_config

    names = deployment_names(serving_config)
    unknown = [entry.name for entry in app.deployments if entry.name not in names]
    if unknown:
        raise UsageError(
            f"{config}: application {app.name}: deployments names {', '.join(map(repr, unknown))}, which "
            f"this app does not have; its deployments are {', '.join(map(repr, names))} (with "
            f"ingress_mode {serving_config.ingress_mode})"
        )
    for entry in app.deployments:
        # Ray's DeploymentSchema takes any mapping here: Serve refuses a bad one on the cluster, after the
        # upload, and ignores a key it does not know (a max_replica typo left max_replicas at 1)
        if isinstance(entry.autoscaling_config, dict):
            try:
                check_autoscaling_config(entry.autoscaling_config)
            except ValueError as exc:
                where = f"{config}: application {app.name}: deployments {entry.name}"
                raise UsageError(f"{where}: {exc}") from None


def _read_serve_yaml(config: Path) -> dict[str, Any]:
    """The YAML mapping of a Serve config file (a deploy file or flat ServingConfig fields), or UsageError."""
    import yaml

    try:
        raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"{config}: cannot read the Serve config ({exc})") from exc
    if raw is None:  # an empty file: the defaults (`[]` or `0` is not a config, and is refused below)
        raw = {}
    if not isinstance(raw, dict):
        raise UsageError(f"{config}: expected a Serve config or a mapping of ServingConfig fields")
    return raw


def _deploy_schema(raw: dict[str, Any], source: Path) -> Any:
    from pydantic import ValidationError

    from .extras import require

    require("ray.serve")
    from ray.serve.schema import ServeDeploySchema

    try:
        schema = ServeDeploySchema.model_validate(raw)
    except ValidationError as exc:
        problems = validation_problems(exc, name=lambda loc: ".".join(map(str, loc)) or "file", limit=5)
        raise UsageError(f"{source}: not a valid Serve config ({problems})") from None
    if not schema.applications:
        raise UsageError(f"{source}: applications must list at least one application")
    # ServeDeploySchema takes any route_prefix; serve.run (after Ray started) and the cluster's controller
    # (after the upload) refuse one without a leading '/', with a trailing '/' or a '{': refused here first.
    try:
        from ray.serve._private.utils import validate_route_prefix
    except ImportError:  # a Ray that keeps it elsewhere: Ray's own refusal comes later, as before
        return schema
    for index, app in enumerate(schema.applications):
        try:
            validate_route_prefix(app.route_prefix)
        except ValueError as exc:
            raise UsageError(
                f"{source}: not a valid Serve config (applications.{index}.route_prefix: {exc})"
            ) from None
    return schema


def dashboard_address(address: str) -> str:
    """The dashboard URL of the cluster at address: an http(s) URL as it is; for ray://, a GCS address or
    auto, the one the cluster reports through a short ray.init."""
    if address.startswith(("http://", "https://")):
        cluster_endpoint(address)  # no host, a bad port: a usage error before anything is contacted
        return address.rstrip("/")
    import ray

    try:
        url = connect_cluster(address).dashboard_url
    finally:
        ray.shutdown()
    if not url:
        raise LabelwiseError(f"the Ray cluster at {address} runs no dashboard: `labelwise deploy` needs it")
    return url if "://" in url else f"http://{url}"


def deploy_to_cluster(
    config: Path, address: str, timeout_s: float = 300, poll_s: float = 1.0, host: str | None = None
) -> list[ClusterStatus]:
    """`serve deploy` for labelwise: PUT the checked config on the cluster's dashboard (Ray's
    ServeSubmissionClient), then wait up to timeout_s (0: not at all) for each app to settle (RUNNING,
    DEPLOY_FAILED or UNHEALTHY) and return their statuses. Like `serve deploy`, the config is the whole
    declared state: apps an earlier config deployed and this one no longer names are deleted (an app put
    there by `labelwise serve --address` stays unless named). host: where Serve's proxies listen, in
    place of the file's http_options.host (the shipped file's 127.0.0.1 is a local run's)."""
    refuse_empty_host(host)
    payload = read_deploy_config(config)
    if host is not None:
        payload.setdefault("http_options", {})["host"] = host
    else:
        warn_loopback_on_cluster(payload.get("http_options", {}).get("host", RAY_DEFAULT_HOST), str(config))
    url = dashboard_address(address)
    check_reachable(url)
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient
    from ray.exceptions import AuthenticationError
    from ray.serve.schema import ServeInstanceDetails

    # Ray's clients send RAY_AUTH_TOKEN only where their own RAY_AUTH_MODE is `token`; a token exported
    # for a token-auth cluster is meant to be sent, so it is, whatever the local mode says.
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        client = ServeSubmissionClient(url, headers=headers)
        client.deploy_applications(payload)
    except AuthenticationError as exc:  # a token-auth cluster: say which variable to set
        raise LabelwiseError(
            f"deploying {config} to {url} failed: the cluster asks for a token "
            f"({'the exported RAY_AUTH_TOKEN was refused' if token else 'export RAY_AUTH_TOKEN'}): {exc}"
        ) from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise LabelwiseError(f"deploying {config} to {url} failed: {exc}") from None
    sent = {app["name"]: app for app in payload["applications"]}
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            details = ServeInstanceDetails(**client.get_serve_details())
        except (ConnectionError, RuntimeError) as exc:
            raise LabelwiseError(f"reading the Serve status from {url} failed: {exc}") from None
        statuses = [_cluster_status(name, details.applications.get(name)) for name in sent]
        # An app is settled once Serve applied this config to it (its deployed args are the ones sent).
        applied = all(
            name in details.applications
            and (details.applications[name].deployed_app_config or None) is not None
            and details.applications[name].deployed_app_config.args == sent[name].get("args", {})
            for name in sent
        )
        if applied and all(s.status in _SETTLED for s in statuses):
            break
        if time.monotonic() >= deadline:
            if timeout_s > 0:
                raise LabelwiseError(
                    f"not settled after {timeout_s:g} s: "
                    + "; ".join(line for s in statuses for line in s.lines())
                )
            break
        time.sleep(poll_s)
    _warn_serve_options_kept(payload, details, str(config))
    failed = [s for s in statuses if s.status in {"DEPLOY_FAILED", "UNHEALTHY"}]
    if failed:
        raise LabelwiseError("; ".join(line for s in failed for line in s.lines()))
    return statuses


def _warn_serve_options_kept(payload: dict[str, Any], details: Any, source: str) -> None:
    """Serve applies http_options and proxy_location only when it starts on the cluster: a deploy that
    changes them is accepted and leaves Serve as it was. Warned of, naming what still runs."""
    wanted = payload.get("http_options") or {}
    running = details.http_options
    kept = [
        f"http_options.{key} {wanted[key]} (Serve's is {getattr(running, key)})"
        for key in ("host", "port")
        if key in wanted and running is not None and str(getattr(running, key)) != str(wanted[key])
    ]
    location = _text(details.proxy_location) if details.proxy_location is not None else None
    if "proxy_location" in payload and location is not None and location != payload["proxy_location"]:
        kept.append(f"proxy_location {payload['proxy_location']} (Serve's is {location})")
    if kept:
        logger.warning(
            "%s: %s not applied: Serve applies these only when it starts on the cluster (`serve shutdown`, "
            "then deploy again, to change them)",
            source,
            "; ".join(kept),
        )
