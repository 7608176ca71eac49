"""/v1/classify's richer answers on the real app: raw scores (logits), token usage, abstention under the
version's decision threshold, X-Request-Id, and the limits a client chunks by."""

from __future__ import annotations

import re

import numpy as np
import pytest

from .conftest import ServedApp
from .published import MAX_LENGTH_TOKENS, SCENARIOS

pytestmark = pytest.mark.integration

TEXTS = ["The film was great today.", "My order was awful again.", "The flight was listed by noon.", "ok"]
# Texts without the keywords the tiny models learned: some should fall under a threshold.
VAGUE = ["ok", "hmm", "the", "a b c", "Something happened.", "The pizza was pizza.", "noon", "I think"]


def _loaded(served: ServedApp) -> dict[str, dict]:
    def every_one() -> dict[str, dict] | None:
        entries = {e["name"]: e for e in served.client.get("/v1/scenarios").json()["scenarios"]}
        return entries if all(entries[name]["version"] for name in SCENARIOS) else None

    return served.wait_for(every_one, 90, "every scenario loaded")


def _classify(served: ServedApp, scenario: str, texts: list[str], **extra):
    return served.client.post("/v1/classify", json={"scenario": scenario, "texts": texts, **extra})


def test_raw_scores_are_the_logits_of_the_probabilities(served: ServedApp) -> None:
    _loaded(served)
    for scenario in SCENARIOS:
        body = _classify(served, scenario, TEXTS, raw_scores=True).json()
        plain = _classify(served, scenario, TEXTS).json()
        assert "raw_scores" not in plain and body["results"] == plain["results"]
        for probs, logits in zip(body["results"], body["raw_scores"], strict=True):
            assert [x["label"] for x in logits] == [x["label"] for x in probs]  # same labels, same order
            raw = np.array([x["score"] for x in logits])
            soft = np.exp(raw - raw.max()) / np.exp(raw - raw.max()).sum()
            np.testing.assert_allclose(soft, [x["score"] for x in probs], atol=1e-5)
        assert not np.allclose([sum(x["score"] for x in row) for row in body["raw_scores"]], 1.0)
    top = _classify(served, "topic_frozen", TEXTS, raw_scores=True, top_k=1).json()
    assert [len(row) for row in top["raw_scores"]] == [1] * len(TEXTS)


def test_usage_counts_the_tokens_the_model_read(served: ServedApp) -> None:
    _loaded(served)
    long_text = "the film was great and " * 20
    texts = [*TEXTS, long_text]
    body = _classify(served, "sentiment_full", texts).json()
    tokenizer = served.references["sentiment_full"].tokenizer
    expected = [len(tokenizer(t, truncation=True, max_length=MAX_LENGTH_TOKENS)["input_ids"]) for t in texts]
    assert body["usage"]["tokens"] == expected
    assert body["usage"]["total_tokens"] == sum(expected)
    assert expected[-1] == MAX_LENGTH_TOKENS and body["truncated"][-1] is True


def test_abstain_answers_null_under_the_versions_threshold(served: ServedApp) -> None:
    entries = _loaded(served)
    thresholds = {name: entries[name]["metrics"].get("decision_threshold") for name in SCENARIOS}
    print(f"\ndecision thresholds chosen on validation: {thresholds}")
    assert any(isinstance(t, float) and 0 < t <= 1 for t in thresholds.values())
    abstained = answered = 0
    for scenario in SCENARIOS:
        body = _classify(served, scenario, VAGUE, abstain=True).json()
        assert body["threshold"] == thresholds[scenario]
        plain = _classify(served, scenario, VAGUE).json()
        assert "decisions" not in plain and "threshold" not in plain
        for row, decision in zip(body["results"], body["decisions"], strict=True):
            best = row[0]
            if body["threshold"] is not None and best["score"] < body["threshold"]:
                assert decision is None, (scenario, best, body["threshold"])
                abstained += 1
            else:
                assert decision == best["label"], (scenario, best, body["threshold"])
                answered += 1
    print(f"abstained on {abstained}, answered {answered}")
    assert abstained > 0 and answered > 0


def test_request_id_is_echoed_or_made(served: ServedApp) -> None:
    _loaded(served)
    given = served.client.post(
        "/v1/classify",
        json={"scenario": "mood_frozen", "texts": ["hi"]},
        headers={"X-Request-Id": "trace-42"},
    )
    assert given.status_code == 200 and given.headers["x-request-id"] == "trace-42"
    made = _classify(served, "mood_frozen", ["hi"])
    assert re.fullmatch(r"[0-9a-f-]{32,36}", made.headers["x-request-id"])  # a uuid4 (Ray's spelling)
    assert _classify(served, "mood_frozen", ["hi"]).headers["x-request-id"] != made.headers["x-request-id"]
    refused = served.client.post(
        "/v1/classify", json={"scenario": "nope", "texts": ["hi"]}, headers={"X-Request-Id": "trace-43"}
    )
    assert refused.status_code == 404 and refused.headers["x-request-id"] == "trace-43"
    # An id that is not a sane token (a space, 200 characters), or one of two, is not echoed as it came: the
    # response carries the id the service uses in its log and messages (Infinity's body shows it).
    infinity = {"model": "mood_frozen", "input": ["hi"]}
    for sent in ([("X-Request-Id", "bad id")], [("X-Request-Id", "x" * 200)]):
        answer = served.client.post("/classify", json=infinity, headers=sent)
        echoed = answer.headers.get_list("x-request-id")
        assert len(echoed) == 1 and re.fullmatch(r"[0-9a-f]{32}", echoed[0]), (sent, echoed)
        assert answer.json()["id"] == f"labelwise-{echoed[0]}"
    two = served.client.post(
        "/classify", json=infinity, headers=[("X-Request-Id", "first-1"), ("X-Request-Id", "second-2")]
    )
    assert two.headers.get_list("x-request-id") == ["first-1"] and two.json()["id"] == "labelwise-first-1"


def test_limits_are_announced(served: ServedApp) -> None:
    body = served.client.get("/v1/scenarios").json()
    limits = body["limits"]
    assert limits.pop("max_body_bytes") >= 8 * 500  # room for every text at its longest
    assert limits == {"max_texts_per_request": 8, "max_chars_per_text": 500}  # the fixture's config
    _loaded(served)
    answer = _classify(served, "mood_frozen", ["hi"])
    assert answer.headers["x-labelwise-max-texts-per-request"] == "8"
    from labelwise.client import LabelwiseClient

    with LabelwiseClient(served.url) as client:  # the client reads the limit and chunks by it
        result = client.classify("mood_frozen", ["hi"] * 20)
    assert len(result.results) == 20 and client.max_texts_per_request == 8
