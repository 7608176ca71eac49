"""A bench ended by SIGTERM while it stops a server still ends that server's whole tree, a second SIGTERM
does not cut its cleanup short, and `make gpu-bench` ended by SIGTERM stops the server it started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from loadtests.processes import terminated_as_exit

from .conftest import EXIT_ON_SIGINT, _free_port

# A server slow to honour SIGINT (as Ray's shutdown can be), with a child of its own.
DRIVER = """
import signal, sys, time
from pathlib import Path
from loadtests.processes import start_server, stop_server, terminated_as_exit
# A run started in the background (`nohup make test &`, as CI may be) inherits SIGINT ignored, and bash
# cannot trap a signal ignored when it started: the server would never begin its slow stop.
signal.signal(signal.SIGINT, signal.SIG_DFL)
cmd = ["bash", "-c", "trap 'sleep 20; exit 0' INT; sleep 300 & wait; wait"]
server = start_server("slow to stop", cmd, "http://127.0.0.1:" + sys.argv[1], Path("server.log"))
time.sleep(0.5)
print(server.proc.pid, flush=True)
with terminated_as_exit():
    stop_server(server, grace_s=30)
"""


def _alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
    return out


def test_sigterm_while_a_server_stops_still_ends_its_tree(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(_free_port())], stdout=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    tree: list[int] = []
    try:
        server = psutil.Process(int(proc.stdout.readline()))  # type: ignore[union-attr]
        # Until stop_server has sent SIGINT and the trap's `sleep 20` runs (the bench then waits on it):
        # bash, its sleep 300 and that sleep 20. A loaded machine (a CI run) takes its time to get there.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            tree = [server.pid, *(p.pid for p in server.children(recursive=True))]
            if len(tree) >= 3:
                break
            time.sleep(0.05)
        assert len(tree) >= 3, f"the server never reached its slow stop: {tree}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 143
        deadline = time.monotonic() + 5
        while _alive(tree) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _alive(tree) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _alive(tree):
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()


def test_a_second_sigterm_does_not_cut_the_cleanup_short() -> None:
    cleaned = False
    with pytest.raises(SystemExit) as ended, terminated_as_exit():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # e.g. a parent that repeats itself while servers stop
            time.sleep(0.2)
            cleaned = True
    assert ended.value.code == 143 and cleaned


# gpu_bench with its HTTP step as through_http runs it: a server in its own session, stopped in `finally`.
GPU_BENCH = """
import sys, time
from loadtests import gpu_bench
from loadtests.processes import start_server, stop_server

STAND_IN = sys.argv[3]

def run(plan, say):
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    # A server stand-in that SIGINT ends, told only once it handles SIGINT: where the test run ignores SIGINT
    # (CI starts pytest in the background) the child inherits that, and the stop sat out its 30 s grace.
    up = plan.out_dir / "stand-in-up"
    cmd = [sys.executable, "-c", STAND_IN, str(up)]
    server = start_server("labelwise serve", cmd, f"http://127.0.0.1:{plan.port}", plan.out_dir / "serve.log")
    try:  # the pid is told inside it: a SIGTERM that lands as print() returns is still in the try
        deadline = time.monotonic() + 30
        while not up.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        print(server.proc.pid, flush=True)
        time.sleep(300)  # the HTTP loads
    finally:
        stop_server(server)

gpu_bench.run = run
sys.exit(gpu_bench.main(["--dry-run", "--out", sys.argv[1], "--port", sys.argv[2]]))
"""
# The server stand-in (its third argument): SIGINT ends it (EXIT_ON_SIGINT), and it says when it is up.
GPU_BENCH_STAND_IN = (
    f"{EXIT_ON_SIGINT}; import pathlib, time; pathlib.Path(sys.argv[1]).touch(); time.sleep(300)"
)


def test_sigterm_stops_the_server_gpu_bench_started(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", GPU_BENCH, str(tmp_path / "out"), str(_free_port()), GPU_BENCH_STAND_IN],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    server: list[int] = []
    try:
        server.append(int(proc.stdout.readline()))  # type: ignore[union-attr]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
        assert _alive(server) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _alive(server):
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
