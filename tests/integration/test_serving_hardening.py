"""Hostile and unlucky input against the real app (issue 15): every answer in the one error shape,
limits before work, bounded metric labels, one scenario's broken alias never stops another's reloads."""

from __future__ import annotations

import json
import random
import string

import httpx
import pytest

from .conftest import ServedApp

pytestmark = pytest.mark.integration


def _assert_error(response: httpx.Response, status: int, type_: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == status and error["message"]
    if type_ is not None:
        assert error["type"] == type_
    return error


def test_unknown_path_wrong_method_and_unparseable_bodies_get_the_error_shape(served: ServedApp) -> None:
    _assert_error(served.client.get("/no/such/path"), 404, "not_found")
    response = served.client.get("/v1/classify")
    _assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers.get("allow", "")
    headers = {"content-type": "application/json"}
    invalid_utf8 = b'{"scenario": "sentiment_full", "texts": ["\xff\xfe"]}'
    _assert_error(served.client.post("/v1/classify", content=invalid_utf8, headers=headers), 400)
    _assert_error(served.client.post("/v1/classify", content=b"{not json", headers=headers), 400)
    deep = b"[" * 20_000 + b"]" * 20_000  # 40 kB: under the body limit, far past the parser's nesting
    _assert_error(served.client.post("/v1/classify", content=deep, headers=headers), 400)


def test_a_body_over_the_limit_is_refused_before_parsing(served: ServedApp) -> None:
    # The app's texts limits (8 texts x 500 chars) size its body limit at under 100 kB.
    big = json.dumps({"scenario": "sentiment_full", "texts": ["a" * 1000] * 2000}).encode()
    error = _assert_error(served.client.post("/v1/classify", content=big), 413, "body_too_large")
    assert "max_body_bytes" in error["message"]

    def chunks():  # no Content-Length: the limit is enforced while the body streams
        yield b'{"scenario": "sentiment_full", "texts": ["'
        for _ in range(200):
            yield b"a" * 10_000
        yield b'"]}'

    _assert_error(served.client.post("/v1/classify", content=chunks()), 413, "body_too_large")
    assert (
        served.client.post(
            "/v1/classify", json={"scenario": "sentiment_full", "texts": ["still fine"]}
        ).status_code
        == 200
    )


def test_made_up_scenario_names_never_become_metric_labels(served: ServedApp) -> None:
    rng = random.Random(7)
    names = ["".join(rng.choices(string.ascii_lowercase, k=12)) for _ in range(150)]
    for name in names:
        response = served.client.post("/v1/classify", json={"scenario": name, "texts": ["a"] * 9})
        assert response.status_code == 422
    response = served.client.post("/v1/classify", json={"scenario": names[0], "texts": ["a"]})
    error = _assert_error(response, 404, "unknown_scenario")
    assert names[0] not in error["message"] and "sentiment_full" not in error["message"]
    labels = " ".join(served.metric("labelwise_requests_total"))
    assert not any(name in labels for name in names)
    assert 'scenario="_unknown"' in labels


def test_a_garbage_alias_stops_only_its_own_scenario(served: ServedApp) -> None:
    alias = served.repo.scenario_path("mood_frozen") / "_aliases" / "production.json"
    good = alias.read_bytes()
    try:
        alias.write_bytes(b"\xff{not json")
        served.wait_for(
            lambda: {s["name"]: s for s in served.client.get("/v1/scenarios").json()["scenarios"]}[
                "mood_frozen"
            ]["last_error"],
            60,
            "mood_frozen's last_error",
        )
        # mood_frozen keeps serving what it had; intent_lora's promotion is still picked up.
        assert (
            served.client.post("/v1/classify", json={"scenario": "mood_frozen", "texts": ["hi"]}).status_code
            == 200
        )
        served.publish("intent_lora", 21)
        version = served.repo.list_versions("intent_lora")[-1]
        served.repo.set_alias("intent_lora", "production", version)
        served.wait_for(
            lambda: (
                served.client.post("/v1/classify", json={"scenario": "intent_lora", "texts": ["hi"]}).json()[
                    "version"
                ]
                == version
            ),
            60,
            "intent_lora's new version",
        )
    finally:
        alias.write_bytes(good)
    served.wait_for(
        lambda: (
            not {s["name"]: s for s in served.client.get("/v1/scenarios").json()["scenarios"]}["mood_frozen"][
                "last_error"
            ]
        ),
        60,
        "mood_frozen's error cleared",
    )
