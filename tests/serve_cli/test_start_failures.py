"""`labelwise serve` on a config the machine cannot run: what a replica would refuse here (CUDA, a GPU this
machine's ONNX Runtime cannot use) is refused before Ray starts, exit 2 in doctor's words
(tests/serve_cli/test_serve_lifecycle_mends.py has fp16 and the CUDA provider); an app that does not come
up in time ends with exit 1 and Serve's last word, never waits on."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from model_repository import ModelRepository

from .conftest import SCENARIO
from .serve_process import ServeProcess

pytestmark = pytest.mark.integration


def _run_to_exit(server: ServeProcess, timeout_s: float) -> tuple[int, float]:
    """Its exit code and run time; the processes of its tree are remembered meanwhile (survivors())."""
    assert server.proc is not None
    start = time.monotonic()
    while server.proc.poll() is None and time.monotonic() - start < timeout_s:
        server.remember_tree()
        time.sleep(0.2)
    code = server.proc.wait(timeout=5)
    return code, time.monotonic() - start


def test_a_gpu_this_onnx_runtime_cannot_use_is_refused_before_ray_starts(
    one_scenario_repo: ModelRepository, tmp_path: Path
) -> None:
    """It started Ray and waited for a GPU the node lacks (or exited 1 with replica tracebacks): the
    replicas run on this machine, whose ONNX Runtime has no CUDA provider, so it is refused at once."""
    pytest.importorskip("psutil")
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("checks a machine whose ONNX Runtime has no CUDA provider")
    args = {"repository": str(one_scenario_repo.root), "scenarios": [{"name": SCENARIO}], "num_gpus": 1}
    with ServeProcess(tmp_path, args) as server:
        code, _took = _run_to_exit(server, timeout_s=180)
        log = server.log_tail(6000)
        assert code == 2, log
        assert "a replica would refuse to start: num_gpus=1 but CUDAExecutionProvider is not available" in log
        assert "Started Serve" not in log and not server.ray_temp_folders(), log  # Ray never started


# CI time (30 minutes on the 2-core box): in `make test-all`, not `make test`.
@pytest.mark.slow
def test_an_app_not_running_at_the_start_timeout_ends_the_start(
    one_scenario_repo: ModelRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start watch (it prints what Serve says of a deployment that is not coming up) ends a start that
    outlasts LABELWISE_SERVE_START_TIMEOUT_S: exit 1 with Serve's last word, Ray stopped. 1 s: no app
    here is running within the watch's first look (2 s), a replica's process and model load take longer."""
    pytest.importorskip("psutil")
    monkeypatch.setenv("LABELWISE_SERVE_START_TIMEOUT_S", "1")
    args = {"repository": str(one_scenario_repo.root), "scenarios": [{"name": SCENARIO}]}
    with ServeProcess(tmp_path, args) as server:
        code, _took = _run_to_exit(server, timeout_s=180)
        log = server.log_tail(6000)
        assert code == 1, log
        assert "the app was not running after 1 s; last from Serve:" in log, log
        assert not server.survivors(timeout_s=10), log  # Ray stopped with it
        assert not server.ray_temp_folders()
