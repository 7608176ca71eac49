"""`labelwise serve` on a config the machine cannot run: it exits 1 with Serve's reason, never waits on."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from model_repository import ModelRepository

from .conftest import SCENARIO
from .serve_process import ServeProcess

pytestmark = pytest.mark.integration


def _run_to_exit(server: ServeProcess, timeout_s: float) -> tuple[int, float]:
    assert server.proc is not None
    start = time.monotonic()
    code = server.proc.wait(timeout=timeout_s)
    return code, time.monotonic() - start


def test_a_cuda_provider_without_cuda_exits_1_naming_the_provider(
    one_scenario_repo: ModelRepository, tmp_path: Path
) -> None:
    pytest.importorskip("psutil")
    args = {
        "repository": str(one_scenario_repo.root),
        "scenarios": [{"name": SCENARIO}],
        "ort_providers": ["CUDAExecutionProvider"],
    }
    with ServeProcess(tmp_path, args) as server:
        code, took = _run_to_exit(server, timeout_s=180)
        log = server.log_tail(6000)
        print(f"\nexit {code} after {took:.0f} s")
        assert code == 1, log
        assert took < 120, f"{took:.0f} s"
        assert "CUDAExecutionProvider" in log and "did not start" in log
        assert not server.survivors(timeout_s=10), log  # Ray stopped with it


def test_a_gpu_the_node_lacks_is_reported_and_the_start_ends(
    one_scenario_repo: ModelRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("psutil")
    monkeypatch.setenv("LABELWISE_SERVE_START_TIMEOUT_S", "45")
    args = {
        "repository": str(one_scenario_repo.root),
        "scenarios": [{"name": SCENARIO}],
        "num_gpus": 1,
        "ort_providers": ["CPUExecutionProvider"],
    }
    with ServeProcess(tmp_path, args) as server:
        code, took = _run_to_exit(server, timeout_s=180)
        log = server.log_tail(6000)
        print(f"\nexit {code} after {took:.0f} s")
        assert code == 1, log
        # Serve's own reason, printed while it waited and repeated in the final error.
        assert "GPU" in log and "not running after 45 s" in log, log
        assert not server.survivors(timeout_s=10), log
