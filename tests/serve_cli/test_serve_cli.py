"""`labelwise serve` as a process: direct ingress answers on the asked port, and a stop signal ends Ray."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from labelwise.cli import app
from model_repository import ModelRepository

from .conftest import SCENARIO

ROOT = Path(__file__).resolve().parents[2]
LOCAL_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "ORT_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_direct_ingress_refuses_several_ingress_replicas(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"repository": str(tmp_path), "num_replicas": 2}), encoding="utf-8")
    result = CliRunner().invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == 2
    assert "--proxy" in result.output


@pytest.mark.integration
def test_serve_answers_on_its_port_and_sigint_stops_ray(
    one_scenario_repo: ModelRepository, tmp_path: Path
) -> None:
    psutil = pytest.importorskip("psutil")
    port = _free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "repository": str(one_scenario_repo.root),
                "scenarios": [{"name": SCENARIO}],
                "max_concurrent_batches": 2,  # the non-default path: two @serve.batch calls at once
            }
        ),
        encoding="utf-8",
    )
    # Ray's unix sockets live under its temp dir: pytest's tmp_path is too long a path for them.
    ray_dir = tempfile.mkdtemp(prefix="lw-ray-t-")
    env = {**os.environ, **LOCAL_ENV, "LABELWISE_RAY_TEMP_DIR": ray_dir}
    log = open(tmp_path / "serve.log", "w", encoding="utf-8")  # noqa: SIM115 - the child writes it
    proc = subprocess.Popen(
        [sys.executable, "-m", "labelwise.cli", "serve", "--config", str(config), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    seen: dict[int, object] = {}

    def remember_tree() -> None:
        try:
            root = psutil.Process(proc.pid)
            for p in [root, *root.children(recursive=True)]:
                seen.setdefault(p.pid, p)
        except psutil.NoSuchProcess:
            pass

    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            remember_tree()
            with contextlib.suppress(httpx.HTTPError):
                ready = httpx.get(f"{url}/readyz", timeout=5).status_code == 200
            if ready:
                break
            time.sleep(0.5)
        assert ready, (tmp_path / "serve.log").read_text(errors="replace")[-3000:]
        remember_tree()

        body = {"scenario": SCENARIO, "texts": ["a", "b"]}
        response = httpx.post(f"{url}/v1/classify", json=body, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["version"] == 1 and len(body["results"]) == 2
        assert {r["label"] for r in body["results"][0]} == {"sports", "politics", "science"}

        # Direct ingress: the replica itself listens on the port, on loopback; no proxy in between.
        listeners = [
            (p, c)
            for p in seen.values()
            if p.is_running()
            for c in p.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        ]
        assert listeners, "nothing of the server's tree listens on the port"
        for p, c in listeners:
            assert c.laddr.ip == "127.0.0.1"
            assert "ServeReplica" in " ".join(p.cmdline()) or "ServeReplica" in p.name()

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0
        # Ray's GCS, raylet, agents and workers were children of `labelwise serve`: none may outlive it.
        left = psutil.wait_procs([p for pid, p in seen.items() if pid != proc.pid], timeout=20)[1]
        assert not left, [p.pid for p in left]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for p in seen.values():
            try:
                if p.is_running():
                    p.kill()
            except psutil.NoSuchProcess:
                pass
        log.close()
        shutil.rmtree(ray_dir, ignore_errors=True)
