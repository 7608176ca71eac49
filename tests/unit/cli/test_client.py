"""LabelwiseClient and AsyncLabelwiseClient against a real HTTP server on 127.0.0.1 that answers as
scripted: chunking to the server's limit, order under concurrency, retries, Retry-After, error types."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from labelwise.client import MAX_TEXTS_HEADER, AsyncLabelwiseClient, LabelwiseClient, RetryPolicy
from labelwise.errors import (
    AuthenticationError,
    BadRequestError,
    ClientError,
    ConnectionFailedError,
    OverloadedError,
    ScenarioNotServedError,
    ServiceNotReadyError,
    TextTooLongError,
)
from tests.conftest import http_stub

# (status, body, headers) or None for "answer classify normally"
Script = Callable[[str, dict[str, Any] | None], tuple[int, dict[str, Any], dict[str, str]] | None]


class FakeService:
    """A labelwise-shaped HTTP API: labels each text by its length, refuses more than `limit` texts and
    empty texts (as the service does, naming the text's index in the request: `texts.<i>`)."""

    def __init__(self, limit: int = 5, announce: str | None = None, delay_s: float = 0.0) -> None:
        self.limit = limit
        self.announce = announce  # "scenarios" | "header" | None: how the limit is told
        self.delay_s = delay_s
        self.script: Script | None = None
        self.requests: list[tuple[str, dict[str, Any] | None]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    def answer(self, path: str, body: dict[str, Any] | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self.lock:
            self.requests.append((path, body))
        if self.script is not None:
            scripted = self.script(path, body)
            if scripted is not None:
                return scripted
        headers = {MAX_TEXTS_HEADER: str(self.limit)} if self.announce == "header" else {}
        if path == "/v1/scenarios":
            out: dict[str, Any] = {"scenarios": [{"name": "len", "alias": "production", "version": 3}]}
            if self.announce == "scenarios":
                out["max_texts_per_request"] = self.limit
            return 200, out, headers
        assert body is not None
        texts = body["texts"]
        if len(texts) > self.limit:
            message = f"texts: {len(texts)} texts, at most {self.limit} per request"
            error = {"type": "invalid_request", "message": message, "code": 422, "field": "texts"}
            return 422, {"error": error}, headers
        for i, text in enumerate(texts):
            if not text:
                message = f"texts.{i}: String should have at least 1 character"
                error = {"type": "invalid_request", "message": message, "code": 422, "field": f"texts.{i}"}
                return 422, {"error": error}, headers
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        time.sleep(self.delay_s)
        with self.lock:
            self.in_flight -= 1
        results = [[{"label": f"len{len(t)}", "score": 1.0 / len(t)}] for t in texts]
        return (
            200,
            {
                "scenario": body["scenario"],
                "version": 3,
                "results": results,
                "truncated": [False] * len(texts),
                "usage": {
                    "tokens": [len(t) + 2 for t in texts],
                    "total_tokens": sum(len(t) + 2 for t in texts),
                },
            },
            headers,
        )


@pytest.fixture
def service() -> Iterator[tuple[FakeService, str]]:
    fake = FakeService()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, body: dict[str, Any] | None) -> None:
            status, payload, headers = fake.answer(self.path, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._reply(None)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            self._reply(json.loads(self.rfile.read(length)))

        def log_message(self, *args: Any) -> None:
            pass

    with http_stub(Handler) as url:
        yield fake, url


def _texts(n: int) -> list[str]:
    rng = random.Random(n)
    return ["x" * rng.randint(1, 40) for _ in range(n)]


def _fast(**kwargs: Any) -> RetryPolicy:
    return RetryPolicy(backoff_s=0.01, max_wait_s=2.0, rng=random.Random(0), **kwargs)


def _classify_posts(fake: FakeService) -> list[int]:
    return [len(b["texts"]) for p, b in fake.requests if p == "/v1/classify" and b is not None]


def _classify(kind: str, url: str, texts: list[str], **kwargs: Any) -> Any:
    """`classify("len", texts)` on a new client of this kind ("sync" or "async")."""
    if kind == "sync":
        with LabelwiseClient(url, retry=_fast(), **kwargs) as client:
            return client.classify("len", texts)

    async def run() -> Any:
        async with AsyncLabelwiseClient(url, retry=_fast(), **kwargs) as client:
            return await client.classify("len", texts)

    return asyncio.run(run())


@pytest.mark.parametrize("announce", ["scenarios", "header", None])
def test_a_long_list_is_chunked_to_the_servers_limit_and_kept_in_order(
    service: tuple[FakeService, str], announce: str | None
) -> None:
    fake, url = service
    fake.announce, fake.delay_s = announce, 0.05
    texts = _texts(47)
    with LabelwiseClient(url, concurrency=4, retry=_fast()) as client:
        result = client.classify("len", texts)
        assert client.max_texts_per_request == 5
    assert result.labels == [f"len{len(t)}" for t in texts]
    assert result.versions == [3] * 47 and len(result.truncated) == 47
    sizes = _classify_posts(fake)
    assert sum(s for s in sizes if s <= 5) == 47 and max(sizes) <= (64 if announce != "scenarios" else 5)
    assert 1 < fake.max_in_flight <= 4


def test_the_async_client_chunks_with_bounded_concurrency(service: tuple[FakeService, str]) -> None:
    fake, url = service
    fake.announce, fake.delay_s, fake.limit = "scenarios", 0.05, 3

    async def run() -> Any:
        async with AsyncLabelwiseClient(url, concurrency=2, retry=_fast()) as client:
            return await client.classify("len", _texts(20))

    result = asyncio.run(run())
    assert result.labels == [f"len{len(t)}" for t in _texts(20)]
    assert _classify_posts(fake) == [3, 3, 3, 3, 3, 3, 2]
    assert fake.max_in_flight == 2


def test_503_and_429_are_retried_after_the_retry_after_they_carry(service: tuple[FakeService, str]) -> None:
    fake, url = service
    refusals = iter([(503, "not_ready"), (429, "overloaded")])

    def script(path: str, body: Any) -> Any:
        if path != "/v1/classify":
            return None
        refusal = next(refusals, None)
        if refusal is None:
            return None
        status, kind = refusal
        return status, {"error": {"type": kind, "message": "later", "code": status}}, {"Retry-After": "1"}

    fake.script = script
    with LabelwiseClient(url, retry=_fast(max_retries=3), max_texts_per_request=5) as client:
        start = time.perf_counter()
        result = client.classify("len", ["abc"])
        elapsed = time.perf_counter() - start
    assert result.labels == ["len3"]
    assert 2.0 <= elapsed < 4.0  # two waits of Retry-After 1 s (plus at most 10% jitter each)
    assert _classify_posts(fake) == [1, 1, 1]


def test_retries_give_up_with_the_error_type_of_the_last_answer(service: tuple[FakeService, str]) -> None:
    fake, url = service
    fake.script = lambda p, b: (
        (503, {"error": {"type": "not_ready", "message": "loading", "code": 503}}, {})
        if p == "/v1/classify"
        else None
    )
    with (
        LabelwiseClient(url, retry=_fast(max_retries=2)) as client,
        pytest.raises(ServiceNotReadyError) as caught,
    ):
        client.classify("len", ["a"])
    assert caught.value.status == 503 and caught.value.exit_code == 1
    assert _classify_posts(fake) == [1, 1, 1]


@pytest.mark.parametrize(
    ("status", "kind", "error_type", "exit_code"),
    [
        (404, "unknown_scenario", ScenarioNotServedError, 1),
        (401, "unauthorized", AuthenticationError, 2),
        (413, "text_too_long", TextTooLongError, 2),
        (422, "invalid_request", BadRequestError, 2),
        (418, "teapot", ClientError, 1),
    ],
)
def test_each_error_code_has_its_own_type_and_is_not_retried(
    service: tuple[FakeService, str], status: int, kind: str, error_type: type, exit_code: int
) -> None:
    fake, url = service
    error = {"type": kind, "message": f"{kind} here", "code": status, "field": "texts.0"}
    fake.script = lambda p, b: (status, {"error": error}, {}) if p == "/v1/classify" else None
    with LabelwiseClient(url, retry=_fast()) as client, pytest.raises(ClientError) as caught:
        client.classify("len", ["a"])
    assert type(caught.value) is error_type
    assert (caught.value.status, caught.value.type, caught.value.exit_code) == (status, kind, exit_code)
    assert str(caught.value) == f"{status} {kind}: {kind} here"
    assert _classify_posts(fake) == [1]


def test_a_status_without_a_known_type_maps_by_status(service: tuple[FakeService, str]) -> None:
    fake, url = service
    fake.script = lambda p, b: (503, {"detail": "busy"}, {}) if p == "/v1/classify" else None
    with LabelwiseClient(url, retry=_fast(max_retries=1)) as client, pytest.raises(OverloadedError):
        client.classify("len", ["a"])


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused_is_retried_then_raises_connection_failed() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    # connect_retry_s=None: connect failures counted as other errors are (the default retries them for
    # 30 s; tests/unit/cli/test_client_review_mends.py times that)
    with LabelwiseClient(url, retry=_fast(max_retries=2, connect_retry_s=None)) as client:
        waits: list[float] = []
        client._sleep = waits.append
        with pytest.raises(
            ConnectionFailedError, match=r"GET .*/v1/scenarios: ConnectError.*after 3 attempts"
        ) as caught:
            client.classify("len", ["a"], top_k=1)
        assert len(waits) == 2 and all(0 <= w <= 0.02 * 2**i for i, w in enumerate(waits))  # full jitter
        waits.clear()
        client._discovered = True  # a client that knows its limit goes straight to POST /v1/classify
        with pytest.raises(
            ConnectionFailedError, match=r"POST .*/v1/classify: ConnectError.*after 3 attempts"
        ):
            client.classify("len", ["a"])
        assert len(waits) == 2
    assert caught.value.status is None and caught.value.exit_code == 1


def test_a_read_timeout_is_retried(service: tuple[FakeService, str]) -> None:
    fake, url = service
    slow = iter([True])

    def script(path: str, body: Any) -> Any:
        if path == "/v1/classify" and next(slow, False):
            time.sleep(0.6)
        return None

    fake.script = script
    with LabelwiseClient(url, timeout_s=0.3, retry=_fast(), max_texts_per_request=5) as client:
        assert client.classify("len", ["abcd"]).labels == ["len4"]
    assert _classify_posts(fake) == [1, 1]


def test_backoff_grows_with_full_jitter_and_is_capped() -> None:
    policy = RetryPolicy(backoff_s=0.5, max_wait_s=3.0, rng=random.Random(1))
    waits = [[policy.wait_s(attempt, None) for _ in range(200)] for attempt in range(5)]
    for attempt, sample in enumerate(waits):
        ceiling = min(0.5 * 2**attempt, 3.0)
        assert all(0 <= w <= ceiling for w in sample)
        assert max(sample) > 0.8 * ceiling  # spread over the whole range, not a fixed value
    assert len({round(w, 6) for w in waits[2]}) > 150


def test_the_async_client_retries_as_the_sync_one(service: tuple[FakeService, str]) -> None:
    fake, url = service
    refusals = iter([429])
    fake.script = lambda p, b: (
        (429, {"error": {"type": "overloaded", "message": "busy", "code": 429}}, {"Retry-After": "1"})
        if p == "/v1/classify" and next(refusals, None)
        else None
    )

    async def run() -> tuple[Any, float]:
        async with AsyncLabelwiseClient(url, retry=_fast(), max_texts_per_request=5) as client:
            start = time.perf_counter()
            result = await client.classify("len", ["ab", "abc"])
            return result, time.perf_counter() - start

    result, elapsed = asyncio.run(run())
    assert result.labels == ["len2", "len3"] and 1.0 <= elapsed < 2.0
    assert _classify_posts(fake) == [2, 2]

    async def unreachable() -> None:
        async with AsyncLabelwiseClient(
            f"http://127.0.0.1:{_closed_port()}", retry=_fast(max_retries=1, connect_retry_s=None)
        ) as client:
            await client.classify("len", ["a"])

    with pytest.raises(ConnectionFailedError, match=r"after 2 attempts"):
        asyncio.run(unreachable())


def test_the_default_timeout_outlasts_the_servers_so_its_504_answers_first() -> None:
    """A read timeout is retried (the POST sent again to a server still working on it); the server's 504
    is not. So by default the client waits longer than the service's request_timeout_s."""
    from serving.config import ServingConfig

    server_timeout = ServingConfig.model_fields["request_timeout_s"].default
    for client in (LabelwiseClient(), AsyncLabelwiseClient()):
        assert client.timeout.read > server_timeout
        assert client.timeout.connect == 5.0  # an unreachable server is told fast
    assert LabelwiseClient(timeout_s=2).timeout.connect == 2


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_refused_text_is_named_by_its_index_in_the_callers_list(
    service: tuple[FakeService, str], kind: str
) -> None:
    """The chunk [10:15] refuses its third text as `texts.2`: the error names it `texts.12`."""
    fake, url = service
    fake.announce = "scenarios"
    texts = _texts(23)
    texts[12] = ""
    with pytest.raises(BadRequestError) as caught:
        _classify(kind, url, texts, concurrency=4)
    assert caught.value.field == "texts.12" and caught.value.body["error"]["field"] == "texts.12"
    assert str(caught.value) == "422 invalid_request: texts.12: String should have at least 1 character"
    assert caught.value.body["error"]["message"] == "texts.12: String should have at least 1 character"
    refused = [b["texts"] for p, b in fake.requests if b is not None and "" in b["texts"]]
    assert refused == [texts[10:15]]  # the server did name texts.2 of its chunk


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_usage_adds_up_over_the_chunks(service: tuple[FakeService, str], kind: str) -> None:
    fake, url = service
    fake.announce = "scenarios"
    texts = _texts(47)
    result = _classify(kind, url, texts, concurrency=3)
    assert len(_classify_posts(fake)) == 10
    tokens = [len(t) + 2 for t in texts]
    assert result.usage == {"tokens": tokens, "total_tokens": sum(tokens)}


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_rechunk_sends_only_the_refused_chunk_again_within_the_concurrency(
    service: tuple[FakeService, str], kind: str
) -> None:
    """70 texts go as 64 + 6 (the default limit); the server takes 8: the 6 it answered meanwhile are not
    sent again, the 64 go again as 8 chunks of 8, never more than `concurrency` at once."""
    fake, url = service
    fake.limit, fake.delay_s = 8, 0.3
    texts = [f"text {i}" for i in range(70)]
    result = _classify(kind, url, texts, concurrency=2)
    assert result.labels == [f"len{len(t)}" for t in texts]
    assert sorted(_classify_posts(fake)) == [6] + [8] * 8 + [64]
    scored = [t for p, b in fake.requests if b is not None and len(b["texts"]) <= 8 for t in b["texts"]]
    assert sorted(scored) == sorted(texts)  # each text scored once
    assert fake.max_in_flight == 2


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_the_first_error_stops_the_other_chunks(service: tuple[FakeService, str], kind: str) -> None:
    """The first of 10 chunks is refused at once, the others take 0.3 s each, two at a time: the error
    comes back without the other chunks being sent (at most the one in flight with it, and one that took
    its place in that instant), and no task is left running on the client."""
    fake, url = service
    fake.announce, fake.limit, fake.delay_s = "scenarios", 3, 0.3
    texts = _texts(30)
    texts[1] = ""
    if kind == "sync":
        with LabelwiseClient(url, concurrency=2, retry=_fast()) as client, pytest.raises(BadRequestError):
            client.classify("len", texts)
        time.sleep(0.5)
        assert len(_classify_posts(fake)) <= 3
        return

    async def run() -> tuple[list[asyncio.Task[Any]], int]:
        async with AsyncLabelwiseClient(url, concurrency=2, retry=_fast()) as client:
            with pytest.raises(BadRequestError) as caught:
                await client.classify("len", texts)
            assert caught.value.field == "texts.1"
            left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            await asyncio.sleep(0.5)  # chunks left running would go on sending meanwhile (4 more by now)
            return left, len(_classify_posts(fake))

    left, sent = asyncio.run(run())
    assert left == []
    assert sent <= 3  # a cancelled request may still reach the server a moment after the error


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_chunk_answered_with_fewer_results_than_texts_is_an_error(
    service: tuple[FakeService, str], kind: str
) -> None:
    fake, url = service

    def short(path: str, body: dict[str, Any] | None) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        if path != "/v1/classify" or body is None or body["texts"][0] != "y":
            return None
        n = len(body["texts"]) - 1
        answer = {"scenario": "len", "version": 3, "results": [[{"label": "a", "score": 1.0}]] * n}
        return 200, {**answer, "truncated": [False] * n}, {}

    fake.script = short
    texts = ["x"] * 5 + ["y"] * 5 + ["x"] * 5  # the middle chunk comes back one short
    expected = r"answered 4 results for 5 texts \(texts 5 to 9\)"
    if kind == "sync":
        with (
            LabelwiseClient(url, max_texts_per_request=5, concurrency=1) as client,
            pytest.raises(ClientError, match=expected),
        ):
            client.classify("len", texts)
    else:

        async def run() -> None:
            async with AsyncLabelwiseClient(url, max_texts_per_request=5, concurrency=1) as client:
                await client.classify("len", texts)

        with pytest.raises(ClientError, match=expected):
            asyncio.run(run())


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_body_over_the_servers_byte_limit_is_sent_again_in_halves(
    service: tuple[FakeService, str], kind: str
) -> None:
    """413 body_too_large for a chunk of more than 3 of these long texts: halved until it fits, every
    text answered in order, and no text limit learned from it (the next chunk's bytes differ)."""
    fake, url = service

    def too_large(
        path: str, body: dict[str, Any] | None
    ) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        if path != "/v1/classify" or body is None or len(body["texts"]) <= 3:
            return None
        error = {"type": "body_too_large", "message": "body: over 1000 bytes", "code": 413, "field": "body"}
        return 413, {"error": error}, {}

    fake.script = too_large
    texts = _texts(10)
    result = _classify(kind, url, texts, max_texts_per_request=10, concurrency=2)
    assert result.labels == [f"len{len(t)}" for t in texts]
    posts = _classify_posts(fake)
    assert posts[0] == 10 and sum(n for n in posts if n <= 3) == 10
    if kind == "sync":  # a byte limit is not a text limit: the next call starts from 10 again
        with LabelwiseClient(url, retry=_fast(), max_texts_per_request=10) as client:
            client.classify("len", texts)
            assert client.max_texts_per_request == 10


def test_a_failed_chunk_stops_the_others_retries_at_once(service: tuple[FakeService, str]) -> None:
    """Chunk 0 fails (500) while chunks 1-3 wait out a 503's Retry-After: the call raises the 500 and the
    waiting chunks give up instead of retrying (what Ctrl-C relies on too), and the client works after."""
    fake, url = service
    busy = {"on": True}

    def script(path: str, body: dict[str, Any] | None) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        if path != "/v1/classify" or body is None or not busy["on"]:
            return None
        if body["texts"][0] == "boom":
            time.sleep(0.2)  # the others have their 503 by now
            return 500, {"error": {"type": "internal_error", "message": "boom", "code": 500}}, {}
        return 503, {"error": {"type": "not_ready", "message": "later", "code": 503}}, {"Retry-After": "2"}

    fake.script = script
    texts = ["boom", "a"] + ["bb", "c"] * 3
    with LabelwiseClient(url, max_texts_per_request=2, concurrency=4, retry=_fast(max_retries=3)) as client:
        with pytest.raises(ClientError, match="boom"):
            client.classify("len", texts)
        assert len(_classify_posts(fake)) == 4  # each chunk once: no retry after the failure
        busy["on"] = False
        assert client.classify("len", ["ok"]).labels == ["len2"]  # the next call retries as usual


def test_answers_that_hold_fewer_results_than_texts_never_merge() -> None:
    from labelwise.client import _merge

    answer = {
        "scenario": "s",
        "version": 1,
        "results": [[{"label": "a", "score": 1.0}]],
        "truncated": [False],
    }
    with pytest.raises(ClientError, match="hold 2 results for 3 texts"):
        _merge([answer, answer], 3)
    assert len(_merge([answer, answer], 2).results) == 2
