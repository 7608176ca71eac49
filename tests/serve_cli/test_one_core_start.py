"""`labelwise serve` on one core (its CPU affinity; a container's cpuset or quota does the same): Ray's node
gets the one CPU the plan sized the replica for, not Ray's own count of the machine; the start line says
what runs; a listed scenario that cannot resolve is named at start and answered 503 with its reason."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from model_repository import ModelRepository

from .conftest import SCENARIO
from .serve_process import ServeProcess

pytestmark = pytest.mark.integration


@pytest.mark.slow  # a serve on a one-core machine, 23 s of CI: make test-all
def test_a_one_core_serve_runs_ray_on_that_core_and_says_what_runs(
    one_scenario_repo: ModelRepository, tmp_path: Path
) -> None:
    pytest.importorskip("psutil")
    core = min(os.sched_getaffinity(0))
    args = {
        "repository": str(one_scenario_repo.root),
        "scenarios": [{"name": SCENARIO}, {"name": "not_published"}],
    }
    with ServeProcess(tmp_path, args, cpus={core}) as server:
        started = server.wait_for_line("labelwise serving on", timeout_s=240)
        assert "(direct ingress; 1 replica x 1 CPU: 1 pass worker x 1 ORT thread; Ray node: 1 CPU;" in started
        log = server.log_tail(50_000)
        warned = log.index("scenario not_published: cannot resolve 'production'")
        assert warned < log.index("labelwise serving on"), log  # said before Ray started

        def classify(scenario: str) -> httpx.Response:
            return httpx.post(
                f"{server.url}/v1/classify", json={"scenario": scenario, "texts": ["a"]}, timeout=30
            )

        for _ in range(120):
            if classify(SCENARIO).status_code == 200:
                break
            time.sleep(1)  # the version loads after the app runs
        assert classify(SCENARIO).status_code == 200, server.log_tail()
        for _ in range(
            60
        ):  # the poll that loaded it notes the other's error next, or a poll later (2 s apart)
            refused = classify("not_published")
            assert refused.status_code == 503
            message = refused.json()["error"]["message"]
            if not message.endswith("not loaded yet"):
                break
            time.sleep(1)
        assert message.startswith("scenario 'not_published' is not loaded: cannot resolve 'production'"), (
            message
        )
        assert "no published version" in message

        code, _ = server.stop(signal.SIGINT, timeout_s=60)
        assert code == 0, server.log_tail()
        assert not server.survivors(timeout_s=10), server.log_tail()
