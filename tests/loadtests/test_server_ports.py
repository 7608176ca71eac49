"""A server the bench starts gets its own port: a port already taken (a server an earlier, killed bench left
running) is refused before anything is measured, not measured in its place."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from loadtests.errors import BenchError
from loadtests.processes import ServerProcess, port_taken, start_server, stop_server, wait_server_ready
from tests.conftest import http_stub


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something listens on, as a stale server would."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_taken_port_is_refused_before_the_server_starts(
    listening: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[object] = []
    monkeypatch.setattr(subprocess, "Popen", lambda *args, **kwargs: started.append(args))
    with pytest.raises(BenchError) as refused:
        start_server(
            "labelwise serve", [sys.executable, "-c", "pass"], f"http://127.0.0.1:{listening}",
            tmp_path / "serve.log",
        )  # fmt: skip
    message = str(refused.value)
    assert f"127.0.0.1:{listening} is in use" in message
    assert "An earlier bench's server may still run there" in message
    assert started == []  # nothing was started to measure


class _ReadyOnceGone(BaseHTTPRequestHandler):
    """Answers /readyz 200 once the server under test (`gone`) has exited: another process answering
    for a server that gave up, in that order whatever the machine's load."""

    gone: subprocess.Popen[bytes] | None = None

    def do_GET(self) -> None:
        assert self.gone is not None
        self.gone.wait(timeout=30)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


def test_a_server_that_exits_while_another_answers_its_probe_is_refused(tmp_path: Path) -> None:
    """Another process answers /readyz on the port; the server started there has given up meanwhile."""
    proc = subprocess.Popen(["sleep", "0.3"])
    _ReadyOnceGone.gone = proc
    log = tmp_path / "serve.log"
    log.write_text("error: 127.0.0.1 port is in use\n")
    with http_stub(_ReadyOnceGone) as url:
        server = ServerProcess("labelwise serve", url, proc, log)
        try:
            with pytest.raises(BenchError, match=r"exited with code 0 while .*/readyz answered"):
                wait_server_ready(server, 10)
        finally:
            stop_server(server)


def test_the_bench_refuses_a_taken_port_before_it_trains(
    listening: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one-scenario memory server's port (--port + 3) is checked first, not after the main loads."""
    import loadtests.bench as bench

    port = listening - bench.MEMORY_PORT_OFFSET
    if port_taken("127.0.0.1", port) is not None:
        pytest.skip(f"port {port} is taken too")

    def train(*_args: object, **_kwargs: object) -> None:
        pytest.fail("the bench trained before it checked its ports")

    monkeypatch.setattr(bench, "prepare_bench_models", train)
    options = bench.BenchOptions(
        out_dir=tmp_path, port=port, seed_baseline=False, infinity=False, same_precision=False
    )
    with pytest.raises(BenchError, match=f"127.0.0.1:{listening} is in use"):
        bench.run_bench(options, say=lambda _msg: None)


def test_gpu_bench_serves_on_a_free_port_unless_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from loadtests import gpu_bench

    plans: list[gpu_bench.Plan] = []

    def measured(plan: gpu_bench.Plan, say: object) -> None:
        plans.append(plan)
        raise BenchError("stopped here: only the plan is looked at")

    monkeypatch.setattr(gpu_bench, "run", measured)
    assert gpu_bench.main(["--dry-run", "--out", str(tmp_path)]) == 1
    assert gpu_bench.main(["--dry-run", "--out", str(tmp_path), "--port", "18131"]) == 1
    chosen, told = plans
    assert chosen.port != 8131 and told.port == 18131
    assert port_taken("127.0.0.1", chosen.port) is None and port_taken("127.0.0.1", chosen.port + 1) is None
