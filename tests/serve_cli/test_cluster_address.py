"""`labelwise serve --address` and `labelwise deploy` against addresses where no cluster answers: one clear
line and exit 1 within 30 s; a malformed address or config is a usage error (exit 2) before any contact."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from labelwise.server import read_deploy_config
from model_repository.errors import UsageError
from tests.conftest import http_stub

from .serve_process import LOCAL_ENV, ROOT, free_port

SHIPPED = ROOT / "helm" / "labelwise" / "files" / "serve-config.yaml"


def _labelwise(
    *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "labelwise.cli", *args],
        cwd=ROOT,
        env={**os.environ, **LOCAL_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, time.monotonic() - start


@pytest.fixture
def flat_config(tmp_path: Path) -> Path:
    config = tmp_path / "serving.yaml"
    config.write_text(yaml.safe_dump({"repository": str(tmp_path), "num_replicas": 2}), encoding="utf-8")
    return config


@pytest.mark.parametrize(
    "command, address",
    [
        ("serve", "ray://127.0.0.1:{port}"),
        ("serve", "127.0.0.1:{port}"),
        ("deploy", "http://127.0.0.1:{port}"),
    ],
    ids=["serve-ray-client", "serve-gcs", "deploy-dashboard"],
)
def test_an_unreachable_address_fails_clearly_within_30s(
    flat_config: Path, command: str, address: str
) -> None:
    address = address.format(port=free_port())  # nothing listens there
    done, took = _labelwise(command, "--address", address, "--config", str(flat_config))
    assert done.returncode == 1, done.stdout + done.stderr
    assert took < 30, f"{took:.1f} s"
    lines = done.stderr.strip().splitlines()
    assert lines == [lines[-1]] and lines[-1].startswith(f"error: cannot reach the Ray cluster at {address}")
    assert "Traceback" not in done.stderr


def test_a_malformed_address_is_a_usage_error(flat_config: Path) -> None:
    done, _ = _labelwise("serve", "--address", "tcp://head:6379", "--config", str(flat_config))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "ray://HOST:10001" in done.stderr


def test_deploy_checks_the_config_before_contacting_the_cluster(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"ingress_mode": "sideways"}), encoding="utf-8")
    # The address would fail with exit 1: exit 2 shows the config was refused first.
    done, _ = _labelwise("deploy", "--address", f"http://127.0.0.1:{free_port()}", "--config", str(bad))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "ingress_mode" in done.stderr


def test_a_flat_config_deploys_as_one_labelwise_app(flat_config: Path) -> None:
    payload = read_deploy_config(flat_config)
    (app,) = payload["applications"]
    assert app["name"] == "labelwise" and app["import_path"] == "serving.app:build_app"
    assert app["args"]["num_replicas"] == 2
    with pytest.raises(UsageError, match="does not exist"):
        read_deploy_config(flat_config.with_name("missing.yaml"))


def test_deploy_checks_the_file_not_this_machines_labelwise_variables(
    flat_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cluster's replicas never see this shell's LABELWISE_*: a variable here must neither break a
    # good file nor stand in for a field the file lacks.
    monkeypatch.setenv("LABELWISE_MAX_BATCH_SIZE", "0")
    payload = read_deploy_config(flat_config)
    assert "max_batch_size" not in payload["applications"][0]["args"]
    monkeypatch.setenv("LABELWISE_MAX_BATCH_SIZE", "32")
    bad = flat_config.with_name("bad-batch.yaml")
    bad.write_text(yaml.safe_dump({"max_batch_size": 0}), encoding="utf-8")
    with pytest.raises(UsageError, match="max_batch_size"):
        read_deploy_config(bad)


class _Dashboard(http.server.BaseHTTPRequestHandler):
    """Serve's REST API as `labelwise deploy` uses it: the PUT config kept, an empty Serve instance read."""

    deployed: list[dict] = []

    def do_PUT(self) -> None:
        self.deployed.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self._answer({})

    def do_GET(self) -> None:
        import ray

        if self.path.endswith("/version"):
            self._answer({"ray_version": ray.__version__, "version": "4", "ray_commit": "test"})
        else:
            self._answer({"applications": {}, "proxies": {}, "proxy_location": "EveryNode"})

    def _answer(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("host", [None, "0.0.0.0"])
def test_deploy_host_replaces_the_shipped_files_loopback(host: str | None) -> None:
    """The shipped Serve config listens on 127.0.0.1 (a local run); on a cluster `--host 0.0.0.0` is what
    reaches Serve, the rest of the file as it is."""
    _Dashboard.deployed = []
    with http_stub(_Dashboard) as url:
        args = ["--host", host] if host else []
        done, _ = _labelwise("deploy", "--address", url, "--config", str(SHIPPED), "--timeout-s", "0", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    (sent,) = _Dashboard.deployed
    assert sent["http_options"] == {"host": host or "127.0.0.1", "port": 8000}
    assert sent["applications"] == read_deploy_config(SHIPPED)["applications"]


class _TokenDashboard(_Dashboard):
    """The same API behind Ray's token authentication: 401 without `Authorization: Bearer <token>`."""

    token = "s3cret-token"
    seen: list[str | None] = []

    def _authorized(self) -> bool:
        self.seen.append(self.headers.get("Authorization"))
        if self.headers.get("Authorization") == f"Bearer {self.token}":
            return True
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def do_PUT(self) -> None:
        if self._authorized():
            super().do_PUT()

    def do_GET(self) -> None:
        if self._authorized():
            super().do_GET()


def test_deploy_sends_the_exported_ray_auth_token() -> None:
    """docs/scale-out.md: export RAY_AUTH_TOKEN and deploy to a token-auth cluster. Ray's own client sends
    it only under RAY_AUTH_MODE=token; labelwise deploy sends it whenever it is exported."""
    _TokenDashboard.deployed, _TokenDashboard.seen = [], []
    with http_stub(_TokenDashboard) as url:
        env = {"RAY_AUTH_TOKEN": _TokenDashboard.token}
        done, _ = _labelwise(
            "deploy", "--address", url, "--config", str(SHIPPED), "--timeout-s", "0", env=env
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(_TokenDashboard.deployed) == 1
    assert set(_TokenDashboard.seen) == {f"Bearer {_TokenDashboard.token}"}


@pytest.mark.parametrize("token", [None, "a-wrong-token"])
def test_deploy_without_the_right_token_fails_in_one_line(token: str | None) -> None:
    with http_stub(_TokenDashboard) as url:
        env = {"RAY_AUTH_TOKEN": token} if token else {}
        done, _ = _labelwise(
            "deploy", "--address", url, "--config", str(SHIPPED), "--timeout-s", "0", env=env
        )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "RAY_AUTH_TOKEN" in done.stderr.strip().splitlines()[-1]


class _RunningDashboard(_Dashboard):
    """A cluster where Serve already runs: on port 18801, proxies on the head only."""

    def do_GET(self) -> None:
        if self.path.endswith("/version"):
            super().do_GET()
        else:
            running = {"host": "0.0.0.0", "port": 18801}
            self._answer(
                {"applications": {}, "proxies": {}, "proxy_location": "HeadOnly", "http_options": running}
            )


def test_a_deploy_that_changes_serves_port_or_proxies_says_they_stay() -> None:
    """Serve applies http_options and proxy_location only when it starts: the deploy printed RUNNING and
    exited 0 while the cluster kept its old port, and the file's port refused connections."""
    _RunningDashboard.deployed = []
    with http_stub(_RunningDashboard) as url:
        done, _ = _labelwise("deploy", "--address", url, "--config", str(SHIPPED), "--timeout-s", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    warning = done.stderr
    assert "http_options.port 8000 (Serve's is 18801)" in warning, warning
    assert "proxy_location EveryNode (Serve's is HeadOnly)" in warning and "serve shutdown" in warning, (
        warning
    )
