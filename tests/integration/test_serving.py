"""A real Ray Serve app on 127.0.0.1 with real ONNX Runtime sessions, over real HTTP.

Tests run in file order on one shared app: readiness first (it publishes the late scenario).
"""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest

from .conftest import ServedApp
from .published import LATE_SCENARIO, SCENARIOS, labels_of

pytestmark = pytest.mark.integration

TEXTS = ["The film was great today.", "My order was awful again.", "The flight was listed by noon.", "ok"]


def _classify(app: ServedApp, scenario: str, texts: list[str], **extra) -> httpx.Response:
    return app.client.post("/v1/classify", json={"scenario": scenario, "texts": texts, **extra})


def test_readyz_is_503_until_every_configured_scenario_is_loaded(served: ServedApp) -> None:
    served.wait_for(
        lambda: served.client.get("/v1/scenarios").json()["scenarios"][-1]["version"], 60, "first load"
    )
    response = served.client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["missing"] == [LATE_SCENARIO]
    assert _classify(served, LATE_SCENARIO, ["hi"]).status_code == 503

    served.publish(LATE_SCENARIO, 9)
    served.repo.set_alias(LATE_SCENARIO, "production", 1)
    served.wait_for(lambda: served.client.get("/readyz").status_code == 200, 60, "/readyz 200")
    assert served.client.get("/healthz").json() == {"status": "ok"}


def test_classify_matches_the_torch_models(served: ServedApp) -> None:
    for scenario in SCENARIOS:
        labels = labels_of(scenario)
        body = _classify(served, scenario, TEXTS).json()
        assert body["scenario"] == scenario and body["version"] == 1
        expected = served.references[scenario].probs(TEXTS)
        for row, probs in zip(body["results"], expected, strict=True):
            assert len(row) == len(labels)
            got = {item["label"]: item["score"] for item in row}
            np.testing.assert_allclose([got[label] for label in labels], probs, atol=1e-4)
            assert row[0]["label"] == labels[int(np.argmax(probs))]


def test_top_k_and_truncation_flag(served: ServedApp) -> None:
    long_text = "the film was great and " * 20
    body = _classify(served, "topic_frozen", ["short one", long_text], top_k=2).json()
    assert [len(r) for r in body["results"]] == [2, 2]
    assert body["results"][0][0]["score"] >= body["results"][0][1]["score"]
    assert body["truncated"] == [False, True]
    refused = _classify(served, "topic_frozen", [long_text], truncate=False)
    assert refused.status_code == 413
    assert refused.json()["error"]["field"] == "texts.0"


def test_concurrent_mixed_scenarios_are_batched_and_keep_their_labels(served: ServedApp) -> None:
    before = sum(v for k, v in served.metric("labelwise_batch_rows_sum").items())
    count_before = sum(v for k, v in served.metric("labelwise_batch_rows_count").items())
    names = list(SCENARIOS) * 8
    answers: dict[int, dict] = {}

    def call(i: int) -> None:
        with httpx.Client(base_url=served.url, timeout=30) as client:
            answers[i] = client.post(
                "/v1/classify", json={"scenario": names[i], "texts": [TEXTS[i % 4]]}
            ).json()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(names))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, name in enumerate(names):
        assert answers[i]["scenario"] == name
        assert {r["label"] for r in answers[i]["results"][0]} == set(labels_of(name))
    rows = sum(served.metric("labelwise_batch_rows_sum").values()) - before
    batches = sum(served.metric("labelwise_batch_rows_count").values()) - count_before
    assert rows == len(names)
    assert rows / batches > 1, f"{rows} rows in {batches} batches: requests were not batched"


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ({"scenario": "sentiment_full", "texts": []}, 422, "texts"),
        ({"scenario": "sentiment_full", "texts": [""]}, 422, "texts.0"),
        ({"scenario": "sentiment_full", "texts": "not a list"}, 422, "texts"),
        ({"scenario": "sentiment_full", "texts": [3]}, 422, "texts.0"),
        ({"scenario": "sentiment_full", "texts": ["a"], "colour": 1}, 422, "colour"),
        ({"scenario": "sentiment_full", "texts": ["a"], "top_k": 0}, 422, "top_k"),
        ({"scenario": "sentiment_full", "texts": ["a"] * 9}, 422, "texts"),
        ({"scenario": "sentiment_full", "texts": ["a" * 501]}, 422, "texts.0"),
        ({"texts": ["a"]}, 422, "scenario"),
        ({"scenario": "no_such_scenario", "texts": ["a"]}, 404, None),
    ],
)
def test_bad_input_gets_its_status_and_the_error_shape(served: ServedApp, payload, status, field) -> None:
    response = served.client.post("/v1/classify", json=payload)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status and error["type"] and error["message"]
    assert error.get("field") == field


def test_scenarios_docs_and_metrics(served: ServedApp) -> None:
    listed = {s["name"]: s for s in served.client.get("/v1/scenarios").json()["scenarios"]}
    assert listed["topic_frozen"]["strategy"] == "frozen"
    assert listed["intent_lora"]["strategy"] == "lora"
    assert listed["sentiment_full"]["labels"] == labels_of("sentiment_full")
    assert served.client.get("/docs").status_code == 200
    assert "/v1/classify" in served.client.get("/openapi.json").json()["paths"]
    text = served.client.get("/metrics").text
    for name in (
        "labelwise_requests_total",
        "labelwise_request_latency_seconds_bucket",
        "labelwise_queue_wait_seconds",
        "labelwise_forward_tokens",
        "labelwise_inference_seconds",
        "labelwise_loaded_version",
    ):
        assert name in text


def test_ray_metrics_export_carries_the_labelwise_metrics_of_every_replica(served: ServedApp) -> None:
    for _ in range(3):
        assert _classify(served, "mood_frozen", TEXTS[:1]).status_code == 200
    # One replica here, so its /metrics and the node's Ray export must agree once the agent caught up.
    local = served.metric('labelwise_requests_total{scenario="mood_frozen",status="200"}')[""]
    served.wait_for(
        lambda: (
            served.ray_metric("ray_labelwise_requests_total", scenario="mood_frozen", status="200") == local
        ),
        60,
        f"ray_labelwise_requests_total == {local}",
    )
    assert served.ray_metric("ray_labelwise_batch_rows_count", deployment="labelwise") > 0
    assert served.ray_metric("ray_labelwise_loaded_version", scenario="mood_frozen") == 1


def test_promote_under_load_has_no_failures_and_moves_to_the_new_version(served: ServedApp) -> None:
    ref2 = served.publish("sentiment_full", 11)
    stop = threading.Event()
    failures: list[str] = []
    versions: list[int] = []

    def load() -> None:
        with httpx.Client(base_url=served.url, timeout=30) as client:
            while not stop.is_set():
                try:
                    r = client.post("/v1/classify", json={"scenario": "sentiment_full", "texts": TEXTS[:2]})
                except httpx.HTTPError as exc:  # a dropped connection or a timeout is a failed request too
                    failures.append(repr(exc))
                    return  # failed already; a refused port would otherwise spin
                if r.status_code != 200:
                    failures.append(r.text)
                else:
                    versions.append(r.json()["version"])

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        served.wait_for(lambda: len(versions) >= 4, 60, "responses from v1 under load")
        served.repo.set_alias("sentiment_full", "production", 2)
        served.wait_for(lambda: versions and versions[-1] == 2, 60, "responses from v2")
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert failures == []
    assert versions[0] == 1 and versions[-1] == 2
    body = _classify(served, "sentiment_full", TEXTS).json()
    assert body["version"] == 2
    got = [
        [{i["label"]: i["score"] for i in row}[lab] for lab in labels_of("sentiment_full")]
        for row in body["results"]
    ]
    np.testing.assert_allclose(got, ref2.probs(TEXTS), atol=1e-4)


def test_a_corrupted_version_is_refused_and_the_old_keeps_serving(served: ServedApp) -> None:
    served.publish("sentiment_full", 12)
    graph = served.repo.version_path("sentiment_full", 3) / "onnx" / "model.fp32.onnx"
    graph.chmod(0o644)
    data = bytearray(graph.read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes: only the sha256 can tell
    graph.write_bytes(bytes(data))
    # The alias is written by hand: `labelwise promote` verifies and would refuse it before serving does.
    (served.repo.scenario_path("sentiment_full") / "_aliases" / "production.json").write_text(
        '{"version": 3}'
    )
    served.wait_for(
        lambda: served.metric('labelwise_reload_failures_total{scenario="sentiment_full"}'),
        60,
        "refusal metric",
    )
    body = _classify(served, "sentiment_full", TEXTS).json()
    assert body["version"] == 2
    listed = {s["name"]: s for s in served.client.get("/v1/scenarios").json()["scenarios"]}
    assert "sha256" in listed["sentiment_full"]["last_error"]
    served.repo.set_alias("sentiment_full", "production", 2)
