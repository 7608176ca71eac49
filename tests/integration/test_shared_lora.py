"""lora_mode shared on a real Serve app (127.0.0.1): LoRA versions from the real pipeline share one graph.

A second app (`/shared`) beside the session's app when that one is up (same Ray, same proxy), else
on its own local Ray. Tests run in file order on one app.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from model_repository import ModelRepository

from .published import SHARED_LORA, Reference, labels_of, publish

pytestmark = pytest.mark.integration

APP_NAME = "labelwise-shared"
PREFIX = "/shared"
SERVED = ["ask_lora", "tone_lora", "risk_lora"]
REFUSED = "wide_lora"
TEXTS = ["The film was great today.", "My order was awful again.", "The flight was listed by noon.", "ok"]


@dataclass
class SharedApp:
    client: httpx.Client
    url: str
    repo: ModelRepository
    tiny_dir: Path
    work_dir: Path
    references: dict[tuple[str, int], Reference] = field(default_factory=dict)

    def wait_for(self, predicate, timeout_s: float, what: str):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")

    def scenarios(self) -> dict[str, dict]:
        return {s["name"]: s for s in self.client.get("/v1/scenarios").json()["scenarios"]}

    def metric(self, name: str) -> dict[str, float]:
        out = {}
        for line in self.client.get("/metrics").text.splitlines():
            if line.startswith(name):
                key, _, value = line.rpartition(" ")
                out[key[len(name) :]] = float(value)
        return out


@pytest.fixture(scope="module")
def shared_app(
    request: pytest.FixtureRequest, tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedApp]:
    pytest.importorskip("ray.serve")
    import ray
    from ray import serve

    from serving.app import build_app
    from serving.local_ray import start_local_ray, stop_local_ray

    repo = ModelRepository(tmp_path_factory.mktemp("shared-repo"))
    work = tmp_path_factory.mktemp("shared-runs")
    refs = {}
    for seed, name in enumerate([*SERVED, REFUSED], start=21):
        refs[(name, 1)] = publish(repo, name, tiny_roberta_dir, work, seed)
        repo.set_alias(name, "production", 1)
    own_ray = not ray.is_initialized()
    if own_ray:
        from .conftest import _free_port

        port = _free_port()
        start_local_ray(port=port, num_cpus=2)
        base_url = f"http://127.0.0.1:{port}"
    else:  # the session's app is up: one more app on its proxy
        base_url = request.getfixturevalue("served").url
    app = build_app(
        {
            "repository": str(repo.root),
            "scenarios": [{"name": n} for n in [*SERVED, REFUSED]],
            "lora_mode": "shared",
            "max_batch_size": 32,
            "batch_wait_timeout_s": 0.05,
            "reload_poll_interval_s": 0.25,
            "num_cpus": 0.5,
        }
    )
    serve.run(app, name=APP_NAME, route_prefix=PREFIX, blocking=False)
    client = httpx.Client(base_url=base_url + PREFIX, timeout=30)
    shared = SharedApp(client, base_url + PREFIX, repo, tiny_roberta_dir, work, refs)

    def _loaded() -> bool:
        try:
            return all(shared.scenarios()[n]["version"] == 1 for n in SERVED)
        except (httpx.HTTPError, KeyError, ValueError):
            return False

    try:
        shared.wait_for(_loaded, 120, "the shared LoRA scenarios to load")
        yield shared
    finally:
        client.close()
        serve.delete(APP_NAME)
        if own_ray:
            stop_local_ray()


def _check(answer: dict, reference: Reference, text: str) -> None:
    expected = reference.probs([text])[0]
    labels = reference.labels
    row = answer["results"][0]
    assert len(row) == len(labels)  # never the padding columns of a wider scenario
    got = {item["label"]: item["score"] for item in row}
    np.testing.assert_allclose([got[label] for label in labels], expected, atol=1e-4)
    assert row[0]["label"] == labels[int(np.argmax(expected))]


def _mixed_passes(app: SharedApp) -> float:
    """LoRA passes that carried rows of two or more scenario versions."""
    samples = app.metric("labelwise_forward_scenarios")
    count = sum(v for k, v in samples.items() if k.startswith("_count") and 'group="lora"' in k)
    single = sum(v for k, v in samples.items() if k.startswith("_bucket") and 'le="1.0"' in k and "lora" in k)
    return count - single


def test_concurrent_rows_of_different_lora_scenarios_share_passes_and_match_their_models(
    shared_app: SharedApp,
) -> None:
    mixed_before = _mixed_passes(shared_app)
    names = SERVED * 8
    answers: dict[int, httpx.Response] = {}
    barrier = threading.Barrier(len(names))

    def call(i: int) -> None:
        with httpx.Client(base_url=shared_app.url, timeout=30) as client:
            barrier.wait()
            answers[i] = client.post(
                "/v1/classify", json={"scenario": names[i], "texts": [TEXTS[i % len(TEXTS)]]}
            )

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(names))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, name in enumerate(names):
        assert answers[i].status_code == 200, answers[i].text
        body = answers[i].json()
        assert body["scenario"] == name and body["version"] == 1
        _check(body, shared_app.references[(name, 1)], TEXTS[i % len(TEXTS)])
    assert _mixed_passes(shared_app) > mixed_before  # rows of several scenarios in one forward pass


def test_an_adapter_the_graph_cannot_take_is_refused_and_the_others_keep_serving(
    shared_app: SharedApp,
) -> None:
    state = shared_app.scenarios()[REFUSED]
    assert state["version"] is None
    assert "LoRA rank 16" in state["last_error"] and "exceeds the graph's table rank 8" in state["last_error"]
    refused = shared_app.client.post("/v1/classify", json={"scenario": REFUSED, "texts": ["hi"]})
    assert refused.status_code == 503  # never another adapter's answer
    failures = shared_app.metric("labelwise_reload_failures_total")
    assert failures.get(f'{{scenario="{REFUSED}"}}', 0) >= 1
    ok = shared_app.client.post("/v1/classify", json={"scenario": "risk_lora", "texts": [TEXTS[1]]})
    assert ok.status_code == 200
    assert [r["label"] for r in ok.json()["results"][0]] != [] and set(labels_of("risk_lora")) == {
        r["label"] for r in ok.json()["results"][0]
    }


def test_promote_under_load_swaps_the_table_row_without_a_failed_request(shared_app: SharedApp) -> None:
    app = shared_app
    statuses: list[int] = []
    failures: list[str] = []
    versions: dict[str, set[int]] = {n: set() for n in ("ask_lora", "tone_lora")}
    stop = threading.Event()

    def load(name: str) -> None:
        with httpx.Client(base_url=app.url, timeout=30) as client:
            while not stop.is_set():
                try:
                    response = client.post("/v1/classify", json={"scenario": name, "texts": TEXTS[:2]})
                except httpx.HTTPError as exc:  # a dropped connection or a timeout is a failed request too
                    failures.append(repr(exc))
                    return  # failed already; a refused port would otherwise spin
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions[name].add(response.json()["version"])

    workers = [threading.Thread(target=load, args=(n,)) for n in ("ask_lora", "tone_lora") for _ in range(3)]
    for w in workers:
        w.start()
    try:
        app.references[("ask_lora", 2)] = publish(app.repo, "ask_lora", app.tiny_dir, app.work_dir, 77)
        app.repo.set_alias("ask_lora", "production", 2)
        app.wait_for(lambda: 2 in versions["ask_lora"], 60, "ask_lora v2 to answer under load")
        time.sleep(0.5)  # keep the load on across the swap
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert failures == []
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    assert versions["tone_lora"] == {1}
    for name, version in (("ask_lora", 2), ("tone_lora", 1)):
        body = app.client.post("/v1/classify", json={"scenario": name, "texts": [TEXTS[0]]}).json()
        assert body["version"] == version
        _check(body, app.references[(name, version)], TEXTS[0])
    # v1 and v2 really differ, so the check above tells the rows apart
    v1 = app.references[("ask_lora", 1)].probs(TEXTS)
    v2 = app.references[("ask_lora", 2)].probs(TEXTS)
    assert np.abs(v1 - v2).max() > 1e-3
    assert SHARED_LORA["ask_lora"][0] == "lora"
