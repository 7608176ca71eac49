"""`labelwise doctor` reads its config as `labelwise serve` does (the same plan, the same refusals): it
no longer says ready for a config that serve refuses before Ray starts. Serve runs as a process here
(and stops at a port the test holds, or earlier at the refusal): Ray never starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import labelwise.server as server
from labelwise.cli import app
from serving.local_ray import LOCAL_ENV, free_loopback_port

ROOT = Path(__file__).resolve().parents[3]
BUILD_APP = "serving.app:build_app"
DIRECT_INGRESS_REFUSAL = "direct ingress needs a fixed number of ingress replicas"

pytest.importorskip("onnxruntime")
pytest.importorskip("ray.serve")


@pytest.fixture
def held_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_loopback_port()))
        sock.listen()
        yield sock.getsockname()[1]


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELWISE_")}
    return subprocess.run(
        [sys.executable, "-m", "labelwise.cli", "serve", *args],
        cwd=ROOT,
        env={**env, **LOCAL_ENV},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _doctor(*args: str, **env: str) -> object:
    return CliRunner().invoke(app, ["doctor", *args], env=env or None)


def _error(output: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith("error: ")]
    return line


def test_an_autoscaled_config_is_refused_by_doctor_as_by_serve_unless_behind_the_proxy(
    tmp_path: Path, held_port: int
) -> None:
    # Before: doctor exited 0 ("ready") for the config serve refuses.
    config = tmp_path / "auto.yaml"
    config.write_text(yaml.safe_dump({"repository": str(tmp_path), "num_replicas": "auto"}), encoding="utf-8")
    served = _serve("--config", str(config), "--port", str(held_port))
    assert served.returncode == 2 and DIRECT_INGRESS_REFUSAL in served.stderr, served.stderr
    doctor = _doctor("--config", str(config))
    assert doctor.exit_code == 2, doctor.output
    assert _error(doctor.output) == _error(served.stderr)
    # --proxy, as serve takes it: autoscaling is allowed behind Serve's proxy, and diagnosed.
    served = _serve("--config", str(config), "--port", str(held_port), "--proxy")
    assert served.returncode == 2 and f"127.0.0.1:{held_port} is in use" in served.stderr, served.stderr
    doctor = _doctor("--config", str(config), "--proxy")
    assert doctor.exit_code == 0, doctor.output
    assert "autoscaled replicas" in doctor.output


def test_an_empty_repository_is_refused_by_doctor_as_by_serve(tmp_path: Path) -> None:
    # Before: doctor diagnosed the current folder (typer makes "" into Path('.')).
    served = _serve("-r", "")
    assert served.returncode == 2, served.stderr
    doctor = _doctor("-r", "")
    assert doctor.exit_code == 2, doctor.output
    assert _error(doctor.output) == _error(served.stderr)
    assert "--repository is empty" in _error(doctor.output)
    # LABELWISE_REPOSITORY="" is refused too (click leaves it to ServingConfig, which refuses it).
    doctor = _doctor(LABELWISE_REPOSITORY="")
    assert doctor.exit_code == 2 and "empty" in _error(doctor.output), doctor.output


def test_without_config_doctor_reads_the_serve_config_serve_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: doctor read ServingConfig's defaults where serve read the chart's file. The chart's file
    # holds no setting that would show the difference, so another one stands in for it here.
    chart = tmp_path / "serve-config.yaml"
    app_entry = {"name": "labelwise", "route_prefix": "/", "import_path": BUILD_APP}
    app_entry["args"] = {"repository": str(tmp_path), "num_replicas": "auto"}
    chart.write_text(yaml.safe_dump({"applications": [app_entry]}), encoding="utf-8")
    monkeypatch.setattr(server, "default_serve_config", lambda: chart)
    doctor = _doctor()
    assert doctor.exit_code == 2, doctor.output
    assert DIRECT_INGRESS_REFUSAL in doctor.output
    doctor = _doctor("--proxy")
    assert doctor.exit_code == 0, doctor.output
    assert "autoscaled replicas" in doctor.output  # the file's num_replicas, not the default 1


def test_doctor_and_serve_agree_on_a_config_that_serves(tmp_path: Path, held_port: int) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"repository": str(tmp_path), "num_replicas": 1}), encoding="utf-8")
    doctor = _doctor("--config", str(config))
    assert doctor.exit_code == 0, doctor.output
    served = _serve("--config", str(config), "--port", str(held_port))
    assert served.returncode == 2 and f"127.0.0.1:{held_port} is in use" in served.stderr, served.stderr
