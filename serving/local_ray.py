"""Start a local, loopback-only Ray and Serve for `labelwise serve`, the demo and the tests."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from model_repository.errors import UsageError
from model_repository.layout import why_not_a_folder

from .api.request_id import RAY_MIDDLEWARES_PATH
from .direct_ingress import APP_DIRECT_ENV, SHARED_PORT_ENV, swap_replica_function
from .direct_ingress import ENV as REBIND_ENV

logger = logging.getLogger("labelwise.serving")

LOCAL_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "ORT_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # Ray starts its workers at nice 15 so that its own daemons keep the CPU on a busy node. Locally the
    # replica IS the service: at nice 15 it yields to every other process on the machine (a test run, an
    # editor), which docs/benchmarks.md measured as lost throughput. Normal priority, like any server.
    "RAY_worker_niceness": "0",
    # Serve's controller runs its control loop every 0.1 s by default: idle, a local serve's Ray tree used
    # 0.12-0.13 cores of the 2-core box, the controller 0.04 and the GCS it polls 0.02 of it. Once a
    # second it used 0.089 (controller 0.016, GCS 0.01), CPU the replica gets back under load. A local
    # serve has fixed replicas and no autoscaling; a crashed replica is noticed at most a second later.
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "1",
    # Each replica and router also hands its cached Serve metrics to Ray's metrics every 0.1 s, on the
    # replica's event loop (2 % of that loop's samples at c=32). Ray exports metrics every 10 s anyway.
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000",
    # Ray's HTTP servers (the proxy, a replica's direct ingress) echo the caller's X-Request-Id as it came;
    # this middleware, outside Ray's, leaves a sane one for Ray to echo: the id in the log (request_id.py).
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": RAY_MIDDLEWARES_PATH,
}

# Settings for a loopback-only Ray on a developer's machine: they must never reach an image or a cluster,
# where Ray needs its normal addressing and auth. LABELWISE_LOCAL_ONLY_ENV=0 (the Dockerfile sets it)
# leaves them out; HF_HUB_OFFLINE is one too, which only the tests set.
LOCAL_ONLY_ENV = "LABELWISE_LOCAL_ONLY_ENV"
LOCAL_ONLY_KEYS = frozenset(
    {"RAY_USAGE_STATS_ENABLED", "RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "ORT_DISABLE_TELEMETRY"}
)


def local_only_env_wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether LOCAL_ONLY_KEYS apply: yes unless LABELWISE_LOCAL_ONLY_ENV is 0/false/no."""
    value = (os.environ if environ is None else environ).get(LOCAL_ONLY_ENV, "1")
    return value.strip().lower() not in {"0", "false", "no"}


def ray_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The LOCAL_ENV entries start_local_ray sets: all of them, or only the Ray tuning ones where
    LABELWISE_LOCAL_ONLY_ENV opts out."""
    if local_only_env_wanted(environ):
        return dict(LOCAL_ENV)
    return {key: value for key, value in LOCAL_ENV.items() if key not in LOCAL_ONLY_KEYS}


# Where a replica's inter-deployment gRPC server listens (set by start_local_ray, read in each replica by
# keep_replica_grpc_local). Ray 2.60 binds it on every interface ("[::]:0") whatever the node's address:
# on a loopback-only node that is a port on the machine's network that unpickles what it is sent, with no
# API key in front of it. Locally the node is 127.0.0.1, which is where Ray reaches the replica.
REPLICA_GRPC_HOST_ENV = "LABELWISE_REPLICA_GRPC_HOST"
_GRPC_MARK = "_labelwise_grpc_host"


def keep_replica_grpc_local() -> bool:
    """In a replica of a local serve (REPLICA_GRPC_HOST_ENV set): bind Ray's inter-deployment gRPC server
    on that host instead of every interface; True when applied. Elsewhere (a cluster), Ray's own binding."""
    host = os.environ.get(REPLICA_GRPC_HOST_ENV)
    if not host:
        return False

    def on_host(add_port: Any) -> Any:
        def add_port_on_host(server: object, address: str) -> int:
            _, _, port = address.rpartition(":")  # "[::]:0": any port, on `host` only
            return add_port(server, f"{host}:{port}")

        return add_port_on_host

    return swap_replica_function(
        "add_port_to_grpc_server",
        on_host,
        _GRPC_MARK,
        "this Ray has no add_port_to_grpc_server: a replica's gRPC server keeps Ray's address",
    )


# How long an ingress replica keeps answering after it was told to stop, in direct-ingress mode. Ray's
# default (30 s) lets a cluster's load balancer drain it; a local server has no load balancer, and
# 30 s would hold every Ctrl-C for half a minute.
_LOCAL_DRAIN_S = "1"


def free_loopback_port(host: str = "127.0.0.1") -> int:
    """A port free on host (127.0.0.1 unless named) below the kernel's ephemeral range.

    A port the kernel hands out for bind(0) is an ephemeral one, and Ray's own processes (GCS, raylet,
    workers) bind and connect on ephemeral ports while it starts: one of them can take the port before
    Serve's proxy or a direct-ingress replica binds it (seen in CI: "Failed to bind to address"). Ports
    below the range are only ever taken by an explicit bind."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default range starts here; other systems: IANA's 49152 is above it
    candidates = range(max(1024, low - 12000), max(1224, low - 10))
    for port in random.Random().sample(candidates, min(200, len(candidates))):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {host} in {candidates.start}..{candidates.stop - 1}")


# LABELWISE_RAY_FULL_HEAD=1 keeps every process Ray starts by default (the autoscaler monitor, the log
# monitor, the API server behind `ray job` and the state API) and pandas in Serve's processes.
FULL_HEAD_ENV = "LABELWISE_RAY_FULL_HEAD"
# Modules Serve's processes import only because they are installed: ray.serve._private.utils imports
# pandas (and pandas pyarrow) to JSON-encode DataFrames a handler might return. labelwise's handlers
# return none, and the two cost ~35 MB in each of the driver, controller, proxy and replica.
UNUSED_IN_SERVING = ("pandas",)


def keep_unused_modules_out() -> None:
    """Make `import pandas` fail in this process, so that Ray Serve takes its no-pandas path.

    Ray runs this in every worker before it loads an actor (runtime_env `worker_process_setup_hook`);
    `labelwise serve` runs it first thing (a process that only serves); a driver that also trains (the demo,
    the tests) keeps pandas. A module already imported stays."""
    for name in UNUSED_IN_SERVING:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]  # the import system's "not available"


def full_head_requested() -> bool:
    return os.environ.get(FULL_HEAD_ENV, "").strip().lower() in {"1", "true", "yes"}


@contextlib.contextmanager
def _lean_head() -> Iterator[None]:
    """While ray.init starts a new local node: no autoscaler monitor (one fixed node: nothing to scale),
    no log monitor (log_to_driver is off: nobody reads what it forwards), no API server (no dashboard,
    no job submission; Serve runs through the Python API): 173 MB PSS (docs/serving.md, "What a local
    serve runs").

    Ray 2.60 has these switches on RayParams (`ray start --no-monitor --include-log-monitor=false`) but not
    on ray.init; the switches are applied for the length of the call only, and a Ray whose internals
    differ starts its normal set, with a warning."""
    try:
        from ray._private import node as node_module
        from ray._private import parameter
    except ImportError:  # pragma: no cover - another Ray layout
        logger.warning("local Ray: cannot trim the head node's processes on this Ray version")
        yield
        return
    params_init = parameter.RayParams.__init__
    start_api_server = getattr(node_module.Node, "start_api_server", None)
    if start_api_server is None or not hasattr(node_module.Node, "start_head_processes"):
        logger.warning("local Ray: cannot trim the head node's processes on this Ray version")
        yield
        return

    def lean_params_init(self: object, *args: object, **kwargs: object) -> None:
        params_init(self, *args, **kwargs)
        self.no_monitor = True  # type: ignore[attr-defined]
        self.include_log_monitor = False  # type: ignore[attr-defined]

    def no_api_server(self: object, **_kwargs: object) -> None:
        self._webui_url = None  # type: ignore[attr-defined]

    parameter.RayParams.__init__ = lean_params_init  # type: ignore[method-assign]
    node_module.Node.start_api_server = no_api_server  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        parameter.RayParams.__init__ = params_init  # type: ignore[method-assign]
        node_module.Node.start_api_server = start_api_server  # type: ignore[method-assign]


def direct_ingress_env(port: int, replicas: int = 1) -> dict[str, str]:
    """Environment for Ray Serve's direct ingress with `replicas` ingress replicas listening on `port`.

    Ray 2.60 (experimental): an ingress replica runs its own HTTP server on a port the controller
    hands out from [MIN, MAX); the range holds one port per replica starting at the one the user asked
    for. One replica binds that port as handed out; with several, every replica binds the user's port
    with SO_REUSEPORT (direct_ingress.py) and the kernel spreads the connections over them: one HTTP
    process per replica, and no proxy hop. Serve still starts its proxy on the head node;
    start_local_ray moves it to a spare port."""
    return {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + max(1, replicas)),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": _LOCAL_DRAIN_S,
        # Ray keeps a released port out of use for 150 s, so that a load balancer in front of several
        # apps never sends one app's traffic to another's new replica. With a one-port range that
        # turned a killed replica into 157 s of outage (its replacement had no port to bind). A local
        # server has one app and no balancer: the port goes back at once, and the replacement takes it.
        "RAY_SERVE_PORT_QUARANTINE_S": "0",
        # ...and may bind it while the dead one's connections are still in TIME_WAIT (direct_ingress.py).
        REBIND_ENV: "1",
        # The port every ingress replica binds, whichever one of the range the controller handed out.
        SHARED_PORT_ENV: str(port),
    }


def local_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may use: its CPU affinity (which a container's cpuset narrows), capped by a CPU
    quota (`docker run --cpus`, a Kubernetes CPU limit: a CFS quota, which leaves the affinity whole).
    A quota counts whole cores, as Ray counts the CPUs of its node: 2.5 CPUs are 2."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup)
    return max(1, min(cores, int(quota))) if quota is not None else cores


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs a CFS quota allows this container (cgroup v2 cpu.max, else v1 cpu.cfs_quota_us over
    cpu.cfs_period_us); None when there is no quota or no such file."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else float(quota) / float(period)
    except (OSError, ValueError):
        pass
    for folder in (root / "cpu", root / "cpu,cpuacct"):
        try:
            quota_us = float((folder / "cpu.cfs_quota_us").read_text())
            period_us = float((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    return None


def start_local_ray(
    host: str = "127.0.0.1",
    port: int = 8000,
    num_cpus: int | None = None,
    direct_ingress: bool = False,
    ingress_replicas: int = 1,
) -> Path:
    """ray.init bound to 127.0.0.1 with its own temp dir, no dashboard; then Serve on host:port.

    num_cpus: the node's CPUs; None: local_cores(), the count `labelwise serve` sizes its replicas by
    (Ray's own count ignores the CPU affinity and truncates a quota under 1 CPU to 0, where no replica
    would ever be scheduled). direct_ingress: the ingress replicas (ingress_replicas of them) serve HTTP
    on host:port themselves (no proxy hop); otherwise Serve's proxy listens there and forwards to the
    replicas."""
    env = ray_env()
    env[REPLICA_GRPC_HOST_ENV] = "127.0.0.1"  # the node's address (below): no replica port on the network
    proxy_port = port
    ingress_env = direct_ingress_env(port, ingress_replicas) if direct_ingress else {}
    if direct_ingress:
        env.update(ingress_env)
        env[APP_DIRECT_ENV] = os.environ.get(APP_DIRECT_ENV, "1")  # direct_ingress.straight_to_app
        # Serve's spare proxy binds host (0.0.0.0 in the image), so the port must be free there.
        proxy_port = free_loopback_port(host.strip("[]"))
    for key, value in env.items():
        os.environ.setdefault(key, value)
    # These must win over anything inherited: the replica and the controller read them at import.
    os.environ.update(ingress_env)
    import ray
    from ray import serve

    temp_dir = _ray_temp_dir()
    if not ray.is_initialized():
        full = full_head_requested()
        runtime_env: dict[str, object] = {"env_vars": {k: os.environ[k] for k in env}}
        if not full:
            runtime_env["worker_process_setup_hook"] = f"{__name__}.keep_unused_modules_out"
        with (
            _socket_paths_too_long_refused(temp_dir),
            _stop_signals_held(),
            contextlib.nullcontext() if full else _lean_head(),
        ):
            ray.init(
                address="local",
                _node_ip_address="127.0.0.1",
                _temp_dir=str(temp_dir),
                include_dashboard=False,
                num_cpus=num_cpus if num_cpus is not None else local_cores(),
                logging_level="WARNING",
                log_to_driver=False,
                configure_logging=True,
                runtime_env=runtime_env,
            )
    serve.start(http_options={"host": host, "port": proxy_port, "location": "HeadOnly"})
    return temp_dir


_STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextlib.contextmanager
def _stop_signals_held() -> Iterator[None]:
    """While ray.init starts the node: a stop signal (SIGTERM, SIGINT, SIGHUP) the caller handles in
    Python (`labelwise serve`, the demo: each stops Ray the way Ctrl-C does) is held until ray.init
    returns, then handed to the caller's handler, before Serve starts; a second one while held is handed
    over at once (an impatient Ctrl-C still ends a start that hangs). A stop in the middle of ray.init
    would leave what Ray started but does not yet know of (its dashboard and runtime-env agents, alive
    for about a minute) or abort in Ray's C++ core (rc 134). ray.init's own SIGTERM handler (sys.exit(15)
    from wherever the main thread is) is kept out meanwhile; the crash handler Ray's C++ core puts on
    SIGTERM may still print "*** SIGTERM received" before it hands the signal on. A caller without its
    own handlers keeps Ray's behaviour."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    callers = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}
    held = {sig: handler for sig, handler in callers.items() if callable(handler)}
    if not held:
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: object) -> None:
        if pending:
            held[signum](signum, frame)
        pending.append(signum)

    try:
        from ray._private import utils as ray_utils
    except ImportError:  # pragma: no cover - another Ray layout
        ray_utils = None
    ray_sets = getattr(ray_utils, "set_sigterm_handler", None)
    for sig in held:
        signal.signal(sig, hold)
    if ray_sets is not None and signal.SIGTERM in held:
        ray_utils.set_sigterm_handler = lambda _handler: None  # type: ignore[union-attr]
    try:
        yield
    finally:
        if ray_sets is not None:
            ray_utils.set_sigterm_handler = ray_sets  # type: ignore[union-attr]
        for sig, handler in held.items():
            signal.signal(sig, handler)
    if pending:
        signal.raise_signal(pending[0])  # the caller's handler, now that Ray knows all it started


# The folder start_local_ray made for Ray's files (None: the user named one, or none was made).
_owned_temp_root: Path | None = None
TEMP_DIR_ENV = "LABELWISE_RAY_TEMP_DIR"
# Ray refuses a unix socket path longer than this (validate_socket_filepath: 108 bytes on Linux, 104 on
# macOS, less the NUL).
_AF_UNIX_MAX = (104 if sys.platform == "darwin" else 108) - 1
# What Ray puts under its temp dir for its longest socket: session_<date>_<pid>/sockets/plasma_store.
_SESSION_SAMPLE = "session_2026-01-01_00-00-00_000000_"
_LONGEST_SOCKET = "sockets/plasma_store"
# mkdtemp's name: the prefix and 8 random characters.
_OWNED_PREFIX = "lw-ray-"
_OWNED_SAMPLE = _OWNED_PREFIX + "x" * 8


def socket_path_room(temp_dir: Path) -> tuple[int, int]:
    """(bytes of Ray's longest unix socket path under temp_dir, the most Ray allows)."""
    longest = Path(os.path.abspath(temp_dir)) / f"{_SESSION_SAMPLE}{os.getpid()}" / _LONGEST_SOCKET
    return len(os.fsencode(longest)), _AF_UNIX_MAX


_SHORTER = (
    f"set {TEMP_DIR_ENV} to a short folder (e.g. /tmp/lw-ray), or use a shorter TMPDIR (RAY_TMPDIR where set)"
)


def _check_socket_room(temp_dir: Path, named_by: str) -> None:
    """UsageError (before anything is made or started) when Ray's sockets would not fit under temp_dir:
    Ray itself would fail with a traceback ("AF_UNIX path length cannot exceed 107 bytes")."""
    length, most = socket_path_room(temp_dir)
    if length > most:
        over = f"{length - most} byte{'s' if length - most != 1 else ''}"
        raise UsageError(
            f"Ray's temp folder {temp_dir} ({named_by}) is {over} too long for Ray's unix sockets (their "
            f"paths may have at most {most} bytes): {_SHORTER}"
        )


@contextlib.contextmanager
def _socket_paths_too_long_refused(temp_dir: Path) -> Iterator[None]:
    """Ray's own refusal of a socket path (a LABELWISE_RAY_TEMP_DIR too deep: Ray checks it before it
    starts a process) as a UsageError instead of its traceback."""
    try:
        yield
    except OSError as exc:
        if "AF_UNIX path length" not in str(exc):
            raise
        raise UsageError(
            f"Ray's temp folder {temp_dir} is too long for Ray's unix sockets: {_SHORTER}"
        ) from None


def _ray_temp_dir() -> Path:
    """Ray's temp dir: LABELWISE_RAY_TEMP_DIR when set (kept), else `ray/` inside a new 0700 folder in
    RAY_TMPDIR (where set, as Ray itself reads it) or the system's temp folder (TMPDIR). A folder whose
    sockets would be too long for Ray is refused before it is made, or before Ray makes anything in it
    (UsageError).

    Ray makes its temp dir world-writable (0777, for several users on one node): the 0700 folder
    around it keeps other local users out, and stop_local_ray removes it (an exit that skips it, too:
    atexit)."""
    global _owned_temp_root
    given = os.environ.get(TEMP_DIR_ENV)
    if given:  # as given (Ray's own refusal of it is turned into a UsageError: start_local_ray)
        # Refused before Ray makes its session folders in it; a relative one (Ray's socket paths are
        # then relative too) is left to Ray's own check.
        if os.path.isabs(given):
            _check_socket_room(Path(given), TEMP_DIR_ENV)
        # A file on its path failed as Ray's mkdir did (FileExistsError / NotADirectoryError, exit 1).
        why = why_not_a_folder(Path(given))
        if why is not None:
            raise UsageError(f"{TEMP_DIR_ENV} {why}: set it to a folder (e.g. /tmp/lw-ray), or unset it")
        return Path(given)
    ray_tmpdir = os.environ.get("RAY_TMPDIR")
    root = Path(ray_tmpdir or tempfile.gettempdir())
    _check_socket_room(root / _OWNED_SAMPLE / "ray", "RAY_TMPDIR" if ray_tmpdir else "TMPDIR")
    try:
        _owned_temp_root = Path(tempfile.mkdtemp(prefix=_OWNED_PREFIX, dir=root))  # mode 0700
    except OSError as exc:
        raise UsageError(
            f"cannot make Ray's temp folder in {root} ({exc.strerror or exc}): set {TEMP_DIR_ENV}, or "
            "RAY_TMPDIR or TMPDIR, to a folder of yours"
        ) from None
    _register_exit_cleanup()
    return _owned_temp_root / "ray"


_exit_cleanup_registered = False


def _register_exit_cleanup() -> None:
    global _exit_cleanup_registered
    if not _exit_cleanup_registered:
        atexit.register(_remove_at_exit)
        _exit_cleanup_registered = True


def _remove_at_exit() -> None:
    """At interpreter exit, a temp folder stop_local_ray did not remove (an exception that bypassed it,
    a SystemExit from Ray's own SIGTERM handler): Ray stopped first (its own atexit hook would run after
    this one), then the folder removed."""
    if _owned_temp_root is None:
        return
    ray = sys.modules.get("ray")
    with contextlib.suppress(Exception):
        if ray is not None and ray.is_initialized():
            ray.shutdown()
    _remove_owned_temp_root()


def _remove_owned_temp_root() -> None:
    global _owned_temp_root
    if _owned_temp_root is not None:
        shutil.rmtree(_owned_temp_root, ignore_errors=True)
        _owned_temp_root = None


def stop_local_ray() -> None:
    """serve.shutdown (drains the replicas), ray.shutdown (ends GCS, raylet and workers), then remove
    the temp folder start_local_ray made. Serve's drain is skipped, or cut short, where Ray's node goes
    down under it (_shutdown_serve)."""
    import ray

    from .ports import release_held_ports

    try:
        if ray.is_initialized():
            _shutdown_serve()
    finally:
        ray.shutdown()
        _remove_owned_temp_root()
        release_held_ports()  # the port `labelwise serve` held while it served


# How long Serve's controller may take to stop every replica (Serve's own serve.shutdown bound).
SERVE_SHUTDOWN_TIMEOUT_S = 30.0


class _NodeWatch:
    """Whether the local Ray node is going down under this process (a stop signal sent to the whole
    process group reached its GCS and raylet too): its GCS or raylet exited, an agent of its raylet
    exited (the raylet ends with its agents), or its GCS refuses connections. A GCS or raylet told to
    stop may take 20 s to exit; its agents exit at once."""

    def __init__(self) -> None:
        self.node = None
        self.agents: list[object] = []
        try:
            from ray._private import ray_constants
            from ray._private import worker as worker_module
        except ImportError:  # pragma: no cover - another Ray layout
            return
        self.node = getattr(worker_module, "_global_node", None)
        self.core = {ray_constants.PROCESS_TYPE_GCS_SERVER, ray_constants.PROCESS_TYPE_RAYLET}
        raylets = getattr(self.node, "all_processes", {}).get(ray_constants.PROCESS_TYPE_RAYLET, [])
        try:
            import psutil

            for info in raylets:
                raylet = psutil.Process(info.process.pid)
                group = os.getpgid(raylet.pid)
                # Its agents (ray::DashboardAgent, ray::RuntimeEnvAgent) share its process group; its
                # workers (the controller, replicas: they end in a normal drain) have their own.
                self.agents += [
                    child
                    for child in raylet.children()
                    if os.getpgid(child.pid) == group and "Agent" in " ".join(child.cmdline())
                ]
        except Exception:  # no psutil, or the raylet already gone (then ended() says so)
            self.agents = []

    def ended(self) -> str | None:
        """Why the node is going down, or None while it runs (or where this Ray cannot be watched)."""
        dead = getattr(self.node, "dead_processes", None)
        if dead is None:
            return None
        exited = sorted({kind for kind, _process in dead() if kind in self.core})
        if exited:
            return f"{' and '.join(exited)} exited"
        if any(_ended(agent) for agent in self.agents):
            return "the raylet's agents exited"
        if not _accepts_connections(getattr(self.node, "_gcs_address", None)):
            return "the GCS closed its port"
        return None


def _ended(process: object) -> bool:
    try:
        import psutil

        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE  # type: ignore[attr-defined]
    except Exception:  # NoSuchProcess: reaped
        return True


def _accepts_connections(address: str | None) -> bool:
    """Whether something listens at HOST:PORT (True where it cannot be told: no address, a slow answer)."""
    if not address:
        return True
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
            return True
    except ConnectionRefusedError:
        return False
    except (OSError, ValueError):
        return True


class _DrainCut(Exception):
    """Serve's stop is no longer waited on: the node went down under it, or it took too long."""


def _watched_get(ref: Any, watch: _NodeWatch, deadline: float) -> Any:
    """ray.get(ref) in steps that watch the node (_DrainCut where it goes down or the deadline passes
    first); None where the actor answering ends itself (the controller, as it stops)."""
    import ray

    while True:
        ready, _ = ray.wait([ref], timeout=0.25)
        if ready:
            with contextlib.suppress(ray.exceptions.RayActorError):
                return ray.get(ref)
            return None
        why = watch.ended()
        if why:
            raise _DrainCut(f"Ray's node went down while Serve drained ({why}): drain cut short")
        if time.monotonic() > deadline:
            raise _DrainCut(f"Serve's controller did not stop within {SERVE_SHUTDOWN_TIMEOUT_S:g} s")


def _shutdown_serve() -> None:
    """What serve.shutdown does (Serve's controller drains and stops every replica: a second or two
    locally), after deleting the apps (their replicas drained behind a standing proxy), waited on in steps
    that watch the node.

    A stop signal sent to the whole process group (systemd's KillMode=control-group, `kill -TERM -PGID`)
    reaches Ray's GCS, raylet and agents too: the node goes down under the controller, and serve.shutdown
    would wait its full 30 s on an answer that never comes (a ray.get that no signal interrupts). So the
    drain is skipped when the node is already going down (_NodeWatch), and the wait ends as soon as it
    is. A stop signal to this process alone (`kill PID`, docker stop; Ctrl-C, which Ray starts its
    processes blind to) drains as before. A Ray whose Serve client differs: plain serve.shutdown."""
    from ray import serve

    watch = _NodeWatch()
    why = watch.ended()
    if why:
        logger.warning("Ray's node is going down with this process (%s): no drain", why)
        return
    try:
        from ray.serve import context
    except ImportError:  # pragma: no cover - another Ray layout
        context = None
    client = getattr(context, "_global_client", None)
    current = getattr(context, "_cached_client_from_current_session", None)
    if client is None or current is None or not current() or not hasattr(client, "_controller"):
        serve.shutdown()
        return
    client.shutdown_cached_handles()
    controller = client._controller
    deadline = time.monotonic() + SERVE_SHUTDOWN_TIMEOUT_S
    # The apps first, while Serve's proxy stands: their replicas answer what they hold and the proxy
    # passes it on. The controller's own shutdown kills the proxy at once, and with it every connection
    # in flight through it (`--proxy`: all dropped unanswered); direct ingress answered them regardless.
    try:
        deployments = _watched_get(controller.list_deployment_ids.remote(), watch, deadline)
        if deployments:
            controller.delete_apps.remote(sorted({d.app_name for d in deployments}))
        while deployments:  # bounded: _watched_get gives up at the deadline
            time.sleep(0.25)
            deployments = _watched_get(controller.list_deployment_ids.remote(), watch, deadline)
        _watched_get(controller.graceful_shutdown.remote(), watch, deadline)
    except _DrainCut as cut:
        logger.warning("%s", cut)
    client._shutdown = True
    context._disconnect()  # type: ignore[union-attr]
