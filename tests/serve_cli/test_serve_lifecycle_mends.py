"""Review mends of how `labelwise serve` starts and stops, seen as an operator sees them:

- a SIGTERM while Ray starts (inside ray.init, in the window where Ray's C++ core handles SIGTERM, or
  while Serve starts) is the same clean stop as one later: "stopping (SIGTERM)", exit 0, no Ray process
  left (its dashboard and runtime-env agents lived on for a minute), the lw-ray-* folder removed. The
  signal is sent by the server to itself at a chosen point of Ray's start (a small harness wraps that
  point): the race itself cannot be hit deterministically from outside;
- a SIGTERM to the whole process group (systemd's KillMode=control-group, `kill -TERM -PGID`) ends the
  server in seconds, not after Serve's 30 s wait on a controller that went down with the group;
- a local serve refuses, before Ray starts and in doctor's words, what its replicas would refuse (fp16 or
  CUDA on a machine without them), instead of replica tracebacks and exit 1 half a minute later;
- Ray's temp folder goes under RAY_TMPDIR where set, and a TMPDIR too long for Ray's unix sockets is a
  one-line usage error instead of Ray's traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from model_repository import ModelRepository
from model_repository.errors import UsageError

from .conftest import SCENARIO
from .serve_process import LOCAL_ENV, ROOT, ServeProcess, free_port

# Run as `python harness.py POINT serve ARGS...`: sends this process a SIGTERM at POINT of Ray's start,
# then runs `labelwise serve ARGS...` as the console script would.
HARNESS = """
import os
import signal
import sys
import time


def sigterm_to_self():
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.5)  # the signal is handled here, inside Ray's start


point = sys.argv[1]
if point == "raylet-started":  # inside ray.init: the raylet and its agents run, ray.init has not returned
    from ray._private import node

    start_ray_processes = node.Node.start_ray_processes

    def started(self, *args, **kwargs):
        result = start_ray_processes(self, *args, **kwargs)
        sigterm_to_self()
        return result

    node.Node.start_ray_processes = started
elif point == "core-worker":  # inside ray.init: Ray's C++ core has put its crash handler on SIGTERM
    import ray._raylet

    core_worker = ray._raylet.CoreWorker

    def made(*args, **kwargs):
        worker = core_worker(*args, **kwargs)
        sigterm_to_self()
        return worker

    ray._raylet.CoreWorker = made
elif point == "serve-start":  # ray.init returned, Serve starts
    from ray import serve

    serve_start = serve.start

    def start(*args, **kwargs):
        sigterm_to_self()
        return serve_start(*args, **kwargs)

    serve.start = start
sys.argv = ["labelwise", *sys.argv[2:]]
from labelwise.cli import main

main()
"""


class SignalledServe(ServeProcess):
    """`labelwise serve` that sends itself a SIGTERM at `point` of Ray's start."""

    def __init__(self, workdir: Path, serving_args: dict[str, object], point: str) -> None:
        super().__init__(workdir, serving_args)
        self.point = point
        self.harness = workdir / "sigterm_harness.py"
        self.harness.write_text(HARNESS, encoding="utf-8")

    def command(self) -> list[str]:
        return [sys.executable, str(self.harness), self.point, "serve", "--config", str(self.config)]


def _one_scenario(repo: ModelRepository) -> dict[str, object]:
    return {"repository": str(repo.root), "scenarios": [{"name": SCENARIO}]}


def _group_left(pgid: int, timeout_s: float) -> list[str]:
    """Processes of the server's process group (Ray's GCS, raylet and agents are in it) still alive
    after up to timeout_s; zombies do not count."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while True:
        left = []
        for p in psutil.process_iter(["name", "status"]):
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                    left.append(f"{p.pid} {p.info['name']}")
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.5)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@pytest.mark.integration
# The earliest point in `make test` (its leak was the worst: Ray's agents alive for a minute); the two later
# points in `make test-all` (each a serve start, ~15 s of CI).
@pytest.mark.parametrize(
    "point",
    [
        "raylet-started",
        pytest.param("core-worker", marks=pytest.mark.slow),
        pytest.param("serve-start", marks=pytest.mark.slow),
    ],
)
def test_a_sigterm_while_ray_starts_stops_cleanly(
    one_scenario_repo: ModelRepository, tmp_path: Path, point: str
) -> None:
    # Before: rc 15 with Ray's agents alive for a minute (raylet-started), "*** SIGTERM received" and
    # Aborted, rc 134 (core-worker), rc 15 (serve-start).
    pytest.importorskip("psutil")
    with SignalledServe(tmp_path, _one_scenario(one_scenario_repo), point) as server:
        assert server.proc is not None
        pgid = server.proc.pid  # its own session: the group of everything it starts
        try:
            deadline = time.monotonic() + 180
            while server.proc.poll() is None and time.monotonic() < deadline:
                server.remember_tree()
                time.sleep(0.2)
            code = server.proc.wait(timeout=5)
            log = server.log_tail(6000)
            assert code == 0, log
            assert "stopping (SIGTERM)" in log, log
            assert "Traceback" not in log, log
            assert not _group_left(pgid, timeout_s=10), log
            assert not server.survivors(timeout_s=5), log
            assert not server.ray_temp_folders(), "the lw-ray-* folder was left"
        finally:
            _kill_group(pgid)


# CI time (30 minutes on the 2-core box): in `make test-all`, not `make test`.
@pytest.mark.slow
@pytest.mark.integration
def test_a_sigterm_to_the_whole_process_group_stops_in_seconds(
    one_scenario_repo: ModelRepository, tmp_path: Path
) -> None:
    # Before: 37 s, Serve waiting its full 30 s on a controller whose GCS and raylet had the signal too.
    pytest.importorskip("psutil")
    with ServeProcess(tmp_path, _one_scenario(one_scenario_repo)) as server:
        server.wait_ready()
        server.remember_tree()
        assert server.proc is not None
        pgid = server.proc.pid
        try:
            start = time.monotonic()
            os.killpg(pgid, signal.SIGTERM)  # what systemd's KillMode=control-group does
            code = server.proc.wait(timeout=90)
            took = time.monotonic() - start
            log = server.log_tail()
            assert code == 0, log
            assert "stopping (SIGTERM)" in log, log
            assert took < 20, f"stopped after {took:.0f} s:\n{log}"
            assert not server.survivors(timeout_s=10), log
            assert not _group_left(pgid, timeout_s=5), log
            assert not server.ray_temp_folders()
        finally:
            _kill_group(pgid)


# ---- refused before Ray starts ------------------------------------------------------------------------


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port something listens on: a serve that gets past its checks stops there (exit 2,
    "in use"), before Ray starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
        sock.listen()
        yield sock.getsockname()[1]


def _serve(
    tmp_path: Path, config: dict[str, object], *flags: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("LABELWISE_", "RAY_TMPDIR"))}
    environment.update({**LOCAL_ENV, **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "labelwise.cli", "serve", "--config", str(path), *flags],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize(
    "settings, reason",
    [
        ({"precision": "fp16"}, "precision fp16 on a replica without a GPU"),
        ({"ort_providers": ["CUDAExecutionProvider"]}, "ort_providers asks for CUDAExecutionProvider"),
    ],
    ids=["fp16", "cuda-provider"],
)
def test_a_local_serve_refuses_what_its_replicas_would_refuse_in_doctors_words(
    tmp_path: Path, held_port: int, settings: dict[str, object], reason: str
) -> None:
    # Before: Ray started and the serve exited 1 about 26 s later with replica tracebacks (here: the held
    # port's "in use", since the check did not exist).
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("checks a machine without CUDA")
    from typer.testing import CliRunner

    from labelwise.cli import app

    repo = tmp_path / "repo"
    repo.mkdir()
    ray_dir = tmp_path / "ray"
    config = {"repository": str(repo), **settings}
    done = _serve(tmp_path, config, "--port", str(held_port), env={"LABELWISE_RAY_TEMP_DIR": str(ray_dir)})
    assert done.returncode == 2, done.stderr
    line = _one_error_line(done.stderr)
    assert line.startswith("error: a replica would refuse to start: ") and reason in line, line
    assert not ray_dir.exists(), "Ray was started"
    # doctor says the same of the same file
    doctor = CliRunner().invoke(app, ["doctor", "--config", str(tmp_path / "serve.yaml")])
    assert doctor.exit_code == 2, doctor.output
    assert line in doctor.output.splitlines(), doctor.output


def test_a_tmpdir_too_long_for_rays_sockets_is_a_usage_error_before_anything_is_made(tmp_path: Path) -> None:
    # Before: Ray's traceback, "AF_UNIX path length cannot exceed 107 bytes".
    deep = tmp_path / ("d" * 60)
    deep.mkdir()
    repo = tmp_path / "repo"
    repo.mkdir()
    done = _serve(tmp_path, {"repository": str(repo)}, "--port", str(free_port()), env={"TMPDIR": str(deep)})
    assert done.returncode == 2, done.stderr
    line = _one_error_line(done.stderr)
    assert "too long for Ray's unix sockets" in line and "LABELWISE_RAY_TEMP_DIR" in line, line
    assert "TMPDIR" in line
    assert not list(deep.iterdir()), "a folder was made"


def test_a_labelwise_ray_temp_dir_too_long_is_refused_before_ray_makes_anything_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: Ray made session_*/{sockets,logs,runtime_resources} in it, then refused a socket path.
    from serving import local_ray

    deep = tmp_path / ("d" * 80)
    deep.mkdir()
    monkeypatch.setenv("LABELWISE_RAY_TEMP_DIR", str(deep))
    # start_local_ray asks for the folder before ray.init, which made its session folders there first
    with pytest.raises(UsageError, match=r"\(LABELWISE_RAY_TEMP_DIR\) is \d+ bytes too long"):
        local_ray._ray_temp_dir()
    assert not list(deep.iterdir())
    # A short one is used as given.
    monkeypatch.setenv("LABELWISE_RAY_TEMP_DIR", "/tmp/lw-ray")
    assert local_ray._ray_temp_dir() == Path("/tmp/lw-ray")


def test_rays_temp_folder_goes_under_RAY_TMPDIR_where_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving import local_ray

    short = Path(f"/tmp/lw-rt-{os.getpid()}")  # short enough for Ray's sockets, unlike pytest's tmp_path
    short.mkdir(exist_ok=True)
    try:
        monkeypatch.delenv("LABELWISE_RAY_TEMP_DIR", raising=False)
        monkeypatch.setenv("RAY_TMPDIR", str(short))
        monkeypatch.setenv("TMPDIR", str(tmp_path / ("d" * 80)))  # would be refused: not used
        temp_dir = local_ray._ray_temp_dir()
        assert temp_dir.parent.parent == short and temp_dir.parent.name.startswith("lw-ray-")
        assert oct(temp_dir.parent.stat().st_mode & 0o777) == oct(0o700)
        local_ray._remove_owned_temp_root()
        assert not temp_dir.parent.exists()
        # RAY_TMPDIR too long: refused by name, nothing made
        monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / ("d" * 80)))
        with pytest.raises(UsageError, match="RAY_TMPDIR"):
            local_ray._ray_temp_dir()
    finally:
        local_ray._remove_owned_temp_root()
        with contextlib.suppress(OSError):
            short.rmdir()
