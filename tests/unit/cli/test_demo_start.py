"""How the demo and `labelwise serve` start: a port in use is refused before anything runs, a damaged
published version is retrained rather than served, a refused scenario ends the wait at once, and a
Ctrl-C while Ray starts reaches the caller with Ray stopped."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from labelwise import demo
from model_repository import ModelRepository, UsageError
from serving.local_ray import free_loopback_port
from serving.ports import check_port_free
from tests.conftest import write_rows

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(params=["plain", "reuseport"])
def listener(request: pytest.FixtureRequest) -> Iterator[int]:
    """A socket listening on a free loopback port: a plain server, or one bound as labelwise's replicas
    bind (SO_REUSEPORT), which a second SO_REUSEPORT bind would join instead of failing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if request.param == "reuseport":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", free_loopback_port()))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def test_a_port_in_use_is_refused(listener: int) -> None:
    with pytest.raises(UsageError, match=rf"127\.0\.0\.1:{listener} is in use.*another --port"):
        check_port_free("127.0.0.1", listener)
    check_port_free("127.0.0.1", 0)  # any free port: nothing to check
    check_port_free("127.0.0.1", free_loopback_port())


def test_a_held_port_refuses_another_serves_check_and_admits_this_runs_replicas() -> None:
    """`labelwise serve` only checked the port: a second serve started while the first's Ray came up
    passed the check, and both servers' replicas bound the port (SO_REUSEPORT), splitting its traffic."""
    from serving.ports import hold_port, release_held_ports

    port = free_loopback_port()
    hold_port("127.0.0.1", port)
    try:
        with pytest.raises(UsageError, match=f"127.0.0.1:{port} is in use"):
            check_port_free("127.0.0.1", port)  # what a second serve runs first
        with pytest.raises(UsageError, match="is in use"):
            hold_port("127.0.0.1", port)
        # this run's replica binds beside the held socket, as Ray's servers do (SO_REUSEPORT), and gets
        # the connections: the held socket never listens
        with socket.socket() as replica:
            replica.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            replica.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            replica.bind(("127.0.0.1", port))
            replica.listen()
            for _ in range(5):
                with socket.create_connection(("127.0.0.1", port), timeout=2):
                    conn, _addr = replica.accept()
                    conn.close()
    finally:
        release_held_ports()
    check_port_free("127.0.0.1", port)  # released with the server's stop


def test_the_demo_refuses_a_port_in_use_before_training(listener: int, tmp_path: Path) -> None:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "labelwise.demo", "--port", str(listener), "--repository", str(tmp_path / "r"),
         "--log-file", str(tmp_path / "demo.log")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"127.0.0.1:{listener} is in use" in done.stderr and "LABELWISE_DEMO_PORT" in done.stderr
    assert "training" not in done.stdout and not (tmp_path / "r").exists()
    assert time.monotonic() - start < 60


class _Client:
    """The two calls the wait makes, answering as a server whose scenario was refused."""

    def __init__(self, error: str | None, ready_after: int = 10**9) -> None:
        self.error, self.calls, self.ready_after = error, 0, ready_after

    def ready(self) -> bool:
        self.calls += 1
        return self.calls > self.ready_after

    def scenarios(self) -> list[SimpleNamespace]:
        return [
            SimpleNamespace(name="support_ticket", version=None, last_error=self.error),
            SimpleNamespace(name="review_sentiment", version=1, last_error=None),
        ]


def test_the_wait_ends_at_once_on_a_refused_scenario() -> None:
    refusal = "REFUSED v1: support_ticket v1 failed verification: file 'onnx/model.int8.onnx' does not match"
    start = time.monotonic()
    problem = demo.wait_until_ready(_Client(refusal), timeout_s=60)
    assert problem == f"support_ticket was refused: {refusal}"
    assert time.monotonic() - start < 5
    assert demo.wait_until_ready(_Client(None, ready_after=2), timeout_s=60) is None
    late = demo.wait_until_ready(_Client("loading failed: disk busy"), timeout_s=1)
    assert late is not None and late.startswith("scenarios did not load within 1s; support_ticket: loading")


def test_a_damaged_published_version_is_retrained_not_served(
    tiny_roberta_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training
    from training import custom_scenario, make_train_config, train_and_publish

    repo = ModelRepository(tmp_path / "repo")
    for name, (labels, strategy) in demo.DEMO_SCENARIOS.items():
        data = tmp_path / "data" / name
        rows = [(f"{label} message number {i}", label) for i in range(4) for label in labels]
        write_rows(data / "train.csv", rows)
        write_rows(data / "validation.csv", rows[: 2 * len(labels)])
        config = make_train_config(custom_scenario(name, list(labels), data, max_length_tokens=16), strategy,
                                   base_model=str(tiny_roberta_dir), output_dir=tmp_path / "runs" / name,
                                   max_steps=1, batch_size=8)  # fmt: skip
        manifest = train_and_publish(config, repo, export_precisions=["fp32"])
        repo.set_alias(name, "production", manifest.version)
    graph = next((repo.version_path("support_ticket", 1) / "onnx").glob("*.onnx"))
    graph.write_bytes(graph.read_bytes()[:-4] + b"\0\0\0\0")  # four bytes changed: the sha256 differs

    trained: list[str] = []

    def no_training(config: object, **_kw: object) -> None:
        trained.append(config.scenario.name)  # type: ignore[attr-defined]
        raise KeyboardInterrupt  # stop there: what the demo would train is the point

    monkeypatch.setattr(training, "train", no_training)
    said: list[str] = []
    monkeypatch.setattr(demo, "_log", said.append)
    with pytest.raises(KeyboardInterrupt):
        demo.train_scenarios(repo.root, epochs=1)
    assert trained == ["support_ticket"]
    said_first = "support_ticket: production fails verification (support_ticket v1: "
    assert any(line.startswith(said_first) for line in said)


def test_ctrl_c_while_ray_starts_reaches_the_caller_with_ray_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    import serving.local_ray as local_ray
    from labelwise.server import StopServing, run_server

    stopped: list[bool] = []

    def interrupted(**_kw: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(local_ray, "start_local_ray", interrupted)
    monkeypatch.setattr(local_ray, "stop_local_ray", lambda: stopped.append(True))
    with pytest.raises(KeyboardInterrupt):
        run_server({}, "127.0.0.1", free_loopback_port(), block=False)
    assert stopped == [True]

    # A stop signal that lands inside Ray's core (ray.get during serve.start) comes out of Ray as a
    # SystemError caused by what the handler raised (seen with SIGINT to the demo's process group): it is
    # the same stop, not a failure with a SystemError message.
    def wrapped_by_ray(**_kw: object) -> None:
        try:
            raise StopServing("SIGINT")
        except StopServing as stop:
            raise SystemError("<built-in method __new__> returned a result with an exception set") from stop

    monkeypatch.setattr(local_ray, "start_local_ray", wrapped_by_ray)
    with pytest.raises(StopServing, match="SIGINT"):
        run_server({}, "127.0.0.1", free_loopback_port(), block=False)
    assert stopped == [True, True]

    # A real failure stays one.
    def fails(**_kw: object) -> None:
        raise SystemError("boom")

    monkeypatch.setattr(local_ray, "start_local_ray", fails)
    with pytest.raises(SystemError, match="boom"):
        run_server({}, "127.0.0.1", free_loopback_port(), block=False)
