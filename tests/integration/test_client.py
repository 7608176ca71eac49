"""LabelwiseClient and AsyncLabelwiseClient against the real Ray Serve app (max_texts_per_request 8)."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from labelwise.client import AsyncLabelwiseClient, LabelwiseClient
from labelwise.errors import BadRequestError, ScenarioNotServedError, TextTooLongError
from tests.conftest import toy_sentences

from .conftest import ServedApp

pytestmark = pytest.mark.integration
TEXTS = [s for label in ("positive", "negative", "neutral") for s in toy_sentences(label, 10, seed=21)]


def _one_by_one(served: ServedApp, scenario: str) -> list[dict]:
    out = []
    for text in TEXTS:
        response = served.client.post("/v1/classify", json={"scenario": scenario, "texts": [text]})
        assert response.status_code == 200, response.text
        out.append({**response.json()["results"][0][0], "tokens": response.json()["usage"]["tokens"][0]})
    return out


def _wait_ready(served: ServedApp) -> None:
    served.wait_for(lambda: served.client.get("/v1/scenarios").json()["scenarios"][0]["version"], 90, "load")


def test_a_list_over_the_limit_is_chunked_and_answers_as_single_requests(served: ServedApp) -> None:
    _wait_ready(served)
    assert len(TEXTS) == 30  # over the served limit of 8 per request
    with LabelwiseClient(served.url, timeout_s=30, concurrency=3) as client:
        result = client.classify("topic_frozen", TEXTS)
        assert client.max_texts_per_request == 8
    single = _one_by_one(served, "topic_frozen")
    assert result.labels == [s["label"] for s in single]
    np.testing.assert_allclose(result.scores, [s["score"] for s in single], atol=1e-5)
    expected = served.references["topic_frozen"].probs(TEXTS)
    labels = served.references["topic_frozen"].labels
    assert result.labels == [labels[i] for i in expected.argmax(-1)]
    assert result.versions == [result.version] * 30 and len(result.truncated) == 30
    tokens = [s["tokens"] for s in single]  # usage adds up over the 4 chunks
    assert result.usage == {"tokens": tokens, "total_tokens": sum(tokens)}


def test_the_async_client_gives_the_same_answers(served: ServedApp) -> None:
    _wait_ready(served)

    async def run():
        async with AsyncLabelwiseClient(served.url, timeout_s=30, concurrency=4) as client:
            return await asyncio.gather(
                client.classify("sentiment_full", TEXTS), client.classify("mood_frozen", TEXTS, top_k=2)
            )

    sentiment, mood = asyncio.run(run())
    with LabelwiseClient(served.url, timeout_s=30) as client:
        assert client.classify("sentiment_full", TEXTS).labels == sentiment.labels
    assert all(len(row) == 2 for row in mood.results)
    assert set(mood.labels) <= {"calm", "angry"}


def test_error_answers_raise_their_own_types(served: ServedApp) -> None:
    _wait_ready(served)
    with LabelwiseClient(served.url, timeout_s=30, max_retries=0) as client:
        with pytest.raises(ScenarioNotServedError) as unknown:
            client.classify("no_such_scenario", ["hi"])
        assert (unknown.value.status, unknown.value.type) == (404, "unknown_scenario")
        with pytest.raises(TextTooLongError) as too_long:
            client.classify("topic_frozen", ["word " * 90], truncate=False)  # 450 chars, 90 tokens > 24
        assert too_long.value.status == 413 and too_long.value.field == "texts.0"
        with pytest.raises(BadRequestError) as bad:
            client.classify("topic_frozen", ["hi"], top_k=0)
        assert bad.value.status == 422 and bad.value.field == "top_k" and bad.value.exit_code == 2
        with pytest.raises(BadRequestError) as empty:  # the chunk [16:21] refuses its texts.4
            client.classify("topic_frozen", [*TEXTS[:20], ""])
        assert empty.value.field == "texts.20"
        assert str(empty.value) == "422 invalid_request: texts.20: String should have at least 1 character"
    assert httpx.get(f"{served.url}/healthz").status_code == 200
