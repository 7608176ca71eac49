"""`ingress_mode: separate` on the session's Ray (a second app on its proxy, in serve-all mode over the
session's repository): /metrics lists every metric family once, in the exposition format strict parsers
(Prometheus' own, promtool) accept, and a refused request for a served scenario is counted under its name,
as the combined app counts it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from .conftest import ServedApp

pytestmark = pytest.mark.integration

APP_NAME = "labelwise-separate"
PREFIX = "/separate"


@pytest.fixture(scope="module")
def separate(served: ServedApp) -> Iterator[httpx.Client]:
    from ray import serve

    from serving.app import build_app

    app = build_app(
        {
            "repository": str(served.repo.root),
            "ingress_mode": "separate",
            "ingress_num_cpus": 0.25,
            "num_cpus": 0.5,
            "max_texts_per_request": 4,
            "reload_poll_interval_s": 0.25,
            # The session's other tests sum Ray's metrics export over every replica of the node.
            "ray_metrics_export": False,
        }
    )
    serve.run(app, name=APP_NAME, route_prefix=PREFIX, blocking=False)
    client = httpx.Client(base_url=served.url + PREFIX, timeout=30)

    def _ready() -> bool:
        try:
            return client.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        served.wait_for(_ready, 120, "the separate-ingress app to be ready")
        yield client
    finally:
        client.close()
        serve.delete(APP_NAME)


def _requests_total(client: httpx.Client) -> dict[tuple[str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.labels["scenario"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
        if sample.name == "labelwise_requests_total"
    }


def test_metrics_lists_each_family_once(separate: httpx.Client) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    response = separate.post("/v1/classify", json={"scenario": "topic_frozen", "texts": ["a fine day"]})
    assert response.status_code == 200, response.text
    text = separate.get("/metrics").text
    types = Counter(line for line in text.splitlines() if line.startswith("# TYPE "))
    assert [line for line, count in types.items() if count > 1] == []
    families = Counter(family.name for family in text_string_to_metric_families(text))
    assert [name for name, count in families.items() if count > 1] == []
    # The ingress's request metrics and the classifier's engine metrics, each from where it is recorded.
    assert {
        "labelwise_requests",
        "labelwise_request_latency_seconds",
        "labelwise_inference_seconds",
        "labelwise_loaded_version",
    } <= set(families)
    assert _requests_total(separate)[("topic_frozen", "200")] >= 1


def test_a_refused_request_for_a_served_scenario_is_counted_under_its_name(
    served: ServedApp, separate: httpx.Client
) -> None:
    too_many = {"scenario": "topic_frozen", "texts": ["a"] * 5}  # max_texts_per_request is 4

    def counted_by_name() -> bool:
        assert separate.post("/v1/classify", json=too_many).status_code == 422
        return _requests_total(separate).get(("topic_frozen", "422"), 0) >= 1

    # The ingress learns the served names from the classifier (serve-all mode: within a poll interval).
    served.wait_for(counted_by_name, 20, 'labelwise_requests_total{scenario="topic_frozen",status="422"}')
    # A name nobody serves is still never a label.
    made_up = separate.post("/v1/classify", json={"scenario": "made_up_name", "texts": ["a"]})
    assert made_up.status_code == 404
    counts = _requests_total(separate)
    assert counts.get(("_unknown", "404"), 0) >= 1 and not any(s == "made_up_name" for s, _ in counts)
