"""One real Ray Serve app on 127.0.0.1 for the whole integration session, over tiny versions that the
real training + export pipeline published."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from model_repository import ModelRepository
from serving.local_ray import free_loopback_port

from .published import LATE_SCENARIO, SCENARIOS, Reference, publish


@dataclass
class ServedApp:
    url: str
    repo: ModelRepository
    tiny_dir: Path
    work_dir: Path
    references: dict[str, Reference]
    client: httpx.Client
    ray_metrics_url: str

    def publish(self, scenario: str, seed: int) -> Reference:
        """Train and publish the next version of scenario through the real pipeline."""
        return publish(self.repo, scenario, self.tiny_dir, self.work_dir, seed)

    def wait_for(self, predicate, timeout_s: float = 60.0, what: str = "condition"):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")

    def ray_metric(self, name: str, **tags: str) -> float:
        """Sum of one metric over every series in Ray's metrics export whose tags include `tags`."""
        total = 0.0
        for line in httpx.get(self.ray_metrics_url, timeout=10).text.splitlines():
            head, _, value = line.rpartition(" ")
            if not line.startswith(name + "{"):
                continue
            if all(f'{key}="{val}"' in head for key, val in tags.items()):
                total += float(value)
        return total

    def metric(self, name: str) -> dict[str, float]:
        """Samples of one metric from /metrics: {label-string: value}."""
        out = {}
        for line in self.client.get("/metrics").text.splitlines():
            if line.startswith(name):
                key, _, value = line.rpartition(" ")
                out[key[len(name) :]] = float(value)
        return out


_free_port = free_loopback_port  # below the ephemeral range: Ray's own sockets never take it


@pytest.fixture(scope="package")
def served(tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    pytest.importorskip("ray.serve")
    from ray import serve

    from serving.app import build_app
    from serving.local_ray import start_local_ray, stop_local_ray

    repo = ModelRepository(tmp_path_factory.mktemp("repo"))
    work_dir = tmp_path_factory.mktemp("integration-runs")
    refs = {
        name: publish(repo, name, tiny_roberta_dir, work_dir, seed)
        for seed, name in enumerate(SCENARIOS, start=1)
    }
    for name in SCENARIOS:
        repo.set_alias(name, "production", 1)

    port = _free_port()
    start_local_ray(port=port, num_cpus=2)
    import ray

    # Ray's per-node metrics export (the agent binds loopback here; 8080 on a cluster node).
    ray_metrics_url = f"http://127.0.0.1:{ray._private.worker.global_worker.node.metrics_export_port}/metrics"
    app = build_app(
        {
            "repository": str(repo.root),
            "scenarios": [{"name": n} for n in [*SCENARIOS, LATE_SCENARIO]],
            "max_batch_size": 32,
            "batch_wait_timeout_s": 0.05,
            "reload_poll_interval_s": 0.25,
            "max_texts_per_request": 8,
            "max_chars_per_text": 500,
            "num_cpus": 1,
        }
    )
    serve.run(app, name="labelwise", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, timeout=30)
    served_app = ServedApp(url, repo, tiny_roberta_dir, work_dir, refs, client, ray_metrics_url)

    def _up() -> bool:
        try:
            return client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        served_app.wait_for(_up, 120, "/healthz")
        yield served_app
    finally:
        client.close()
        stop_local_ray()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """test_object_store starts its own Ray with the S3 variables in the environment its replicas
    inherit: it runs first, before any other test starts the session's shared Ray."""
    first = [item for item in items if item.nodeid.startswith("tests/integration/test_object_store.py")]
    if first:
        items[:] = first + [item for item in items if item not in first]
