"""Client mends found in review, against a real HTTP server on 127.0.0.1: one thread's failed call no
longer cancels another thread's retries, an api_key no header can carry is refused at construction, 408
and 415 answers have their own ClientError subclasses, and a success answer that is not JSON is a
ClientError (bad_answer), not a bare JSONDecodeError."""

from __future__ import annotations

import asyncio
import json
import math
import random
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import numpy as np
import pytest

from labelwise.client import MAX_TEXTS_HEADER, AsyncLabelwiseClient, LabelwiseClient, RetryPolicy
from labelwise.errors import (
    BadRequestError,
    BodyTimeoutError,
    ClientError,
    InvalidApiKeyError,
    ScenarioNotServedError,
    UnsupportedMediaTypeError,
)
from tests.conftest import http_stub

# (path, JSON body or None) -> (status, body bytes, headers)
Answer = Callable[[str, Any], tuple[int, bytes, dict[str, str]]]


def _labels(body: dict[str, Any]) -> bytes:
    n = len(body["texts"])
    rows = [[{"label": "x", "score": 1.0}]] * n
    answer = {"scenario": body["scenario"], "version": 1, "results": rows, "truncated": [False] * n}
    return json.dumps(answer).encode()


def _error(status: int, kind: str) -> tuple[int, bytes, dict[str, str]]:
    return status, json.dumps({"error": {"type": kind, "message": "no", "code": status}}).encode(), {}


@pytest.fixture
def server() -> Iterator[tuple[dict[str, Answer], str]]:
    """A server on 127.0.0.1 that answers with `answer["now"]`."""
    answer: dict[str, Answer] = {}

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, body: Any) -> None:
            status, data, headers = answer["now"](self.path, body)
            self.send_response(status)
            self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._reply(None)

        def do_POST(self) -> None:
            self._reply(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

        def log_message(self, *args: Any) -> None:
            pass

    with http_stub(Handler) as url:
        yield answer, url


def _fast() -> RetryPolicy:
    return RetryPolicy(max_retries=3, backoff_s=0.01, max_wait_s=2.0, rng=random.Random(0))


def test_one_threads_failed_call_leaves_another_threads_retries_alone(
    server: tuple[dict[str, Answer], str],
) -> None:
    """Thread A waits out a 503's Retry-After while thread B's pooled call fails (404): A's retry still
    goes out and A gets its labels (before, B's failure set one Event shared by the client)."""
    answer, url = server
    refused = threading.Event()
    a_posts: list[int] = []

    def reply(path: str, body: Any) -> tuple[int, bytes, dict[str, str]]:
        if path == "/v1/scenarios":
            return 200, b'{"scenarios": []}', {}
        if body["scenario"] == "slow":
            a_posts.append(1)
            if len(a_posts) == 1:
                refused.set()
                status, data, _ = _error(503, "overloaded")
                return status, data, {"Retry-After": "0.5"}
            return 200, _labels(body), {}
        return _error(404, "unknown_scenario")

    answer["now"] = reply
    got: dict[str, Any] = {}
    with LabelwiseClient(url, max_texts_per_request=2, concurrency=2, retry=_fast()) as client:

        def thread_a() -> None:
            try:
                got["a"] = client.classify("slow", ["one"]).labels
            except Exception as exc:
                got["a"] = exc

        a = threading.Thread(target=thread_a)
        a.start()
        assert refused.wait(5)
        with pytest.raises(ScenarioNotServedError):  # two chunks of 2: the pooled path
            client.classify("missing", ["1", "2", "3", "4"])
        a.join(10)
    assert got["a"] == ["x"], got["a"]
    assert len(a_posts) == 2


def test_one_tasks_failed_call_leaves_another_tasks_retries_alone(
    server: tuple[dict[str, Answer], str],
) -> None:
    """The async client the same way: each call's parts live in the call's own TaskGroup."""
    answer, url = server
    posts: list[int] = []

    def reply(path: str, body: Any) -> tuple[int, bytes, dict[str, str]]:
        if path == "/v1/scenarios":
            return 200, b'{"scenarios": []}', {}
        if body["scenario"] == "slow":
            posts.append(1)
            if len(posts) == 1:
                status, data, _ = _error(503, "overloaded")
                return status, data, {"Retry-After": "0.5"}
            return 200, _labels(body), {}
        return _error(404, "unknown_scenario")

    answer["now"] = reply

    async def run() -> Any:
        async with AsyncLabelwiseClient(url, max_texts_per_request=2, retry=_fast()) as client:
            slow = asyncio.create_task(client.classify("slow", ["one"]))
            await asyncio.sleep(0.2)
            with pytest.raises(ScenarioNotServedError):
                await client.classify("missing", ["1", "2", "3", "4"])
            return await slow

    assert asyncio.run(run()).labels == ["x"]
    assert len(posts) == 2


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("clé", "not printable ASCII"),
        ("s3cret\n", "whitespace or a newline around it"),
        ("two words", "not printable ASCII"),
    ],
)
def test_an_api_key_no_header_can_carry_is_refused_at_construction(key: str, words: str) -> None:
    for make in (LabelwiseClient, AsyncLabelwiseClient):
        with pytest.raises(InvalidApiKeyError, match=words) as caught:
            make("http://127.0.0.1:9", api_key=key)
        assert isinstance(caught.value, ValueError) and isinstance(caught.value, ClientError)
        assert caught.value.exit_code == 2 and key.strip() not in str(caught.value)
    LabelwiseClient("http://127.0.0.1:9", api_key="Ab0-._~+/=").close()


@pytest.mark.parametrize(
    ("status", "kind", "error_type"),
    [
        (408, "request_timeout", BodyTimeoutError),
        (415, "unsupported_media_type", UnsupportedMediaTypeError),
        (408, None, BodyTimeoutError),  # a proxy's own 408: by status
        (415, None, UnsupportedMediaTypeError),
        (422, "invalid_request", BadRequestError),
    ],
)
def test_408_and_415_have_their_own_error_types(
    server: tuple[dict[str, Answer], str], status: int, kind: str | None, error_type: type
) -> None:
    answer, url = server

    def reply(path: str, body: Any) -> tuple[int, bytes, dict[str, str]]:
        if path == "/v1/scenarios":
            return 200, b'{"scenarios": []}', {}
        return _error(status, kind) if kind else (status, b'{"detail": "no"}', {})

    answer["now"] = reply
    with LabelwiseClient(url, retry=_fast()) as client, pytest.raises(ClientError) as caught:
        client.classify("s", ["a"])
    assert type(caught.value) is error_type and caught.value.status == status


@pytest.mark.parametrize("where", ["/v1/classify", "/v1/scenarios"])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_success_answer_that_is_not_json_is_a_bad_answer(
    server: tuple[dict[str, Answer], str], where: str, kind: str
) -> None:
    answer, url = server

    def reply(path: str, body: Any) -> tuple[int, bytes, dict[str, str]]:
        if path == where:
            return 200, b"<html>proxy login</html>", {"Content-Type": "text/html"}
        return (200, b'{"scenarios": []}', {}) if body is None else (200, _labels(body), {})

    answer["now"] = reply

    async def run_async() -> Any:
        async with AsyncLabelwiseClient(url, retry=_fast()) as client:
            return await client.classify("s", ["a"])

    with pytest.raises(ClientError) as caught:
        if kind == "sync":
            with LabelwiseClient(url, retry=_fast()) as client:
                client.classify("s", ["a"])
        else:
            asyncio.run(run_async())
    error = caught.value
    assert type(error) is ClientError and (error.type, error.status) == ("bad_answer", 200)
    assert where in str(error) and "not JSON" in str(error) and "text/html" in str(error)


def _answer_recording(answer: dict[str, Answer]) -> list[str]:
    """Answer every request (an empty scenario list, a label per text) and record the paths asked: the list
    the caller checks stays empty when nothing was sent."""
    asked: list[str] = []

    def reply(path: str, body: Any) -> tuple[int, bytes, dict[str, str]]:
        asked.append(path)
        return (200, b'{"scenarios": []}', {}) if body is None else (200, _labels(body), {})

    answer["now"] = reply
    return asked


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_text_no_body_can_carry_is_refused_by_name_before_any_request(
    server: tuple[dict[str, Answer], str], kind: str
) -> None:
    """A lone surrogate has no UTF-8 form: the client names the text instead of a UnicodeEncodeError from
    deep inside the HTTP library, and sends nothing."""
    answer, url = server
    asked = _answer_recording(answer)
    texts = ["fine", "broken \udc80 text"]

    async def run_async() -> Any:
        async with AsyncLabelwiseClient(url, retry=_fast()) as client:
            return await client.classify("s", texts)

    with pytest.raises(
        ValueError, match=r"texts\[1\]: not valid Unicode \(a lone surrogate at character 7\)"
    ):
        if kind == "sync":
            with LabelwiseClient(url, retry=_fast()) as client:
                client.classify("s", texts)
        else:
            asyncio.run(run_async())
    assert asked == []


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(
    ("fields", "named", "why"),
    [
        ({"threshold": math.nan}, "threshold", "Out of range float"),
        ({"threshold": np.float32(0.5)}, "threshold", "type float32"),
        ({"labels": {"a", "b"}}, "labels", "type set"),
        ({"options": {"floor": math.inf}}, "options", "Out of range float"),
        ({"top_k": np.int64(2)}, "top_k", "type int64"),
    ],
)
def test_a_field_json_cannot_carry_is_refused_by_name_before_any_request(
    server: tuple[dict[str, Answer], str], kind: str, fields: dict[str, Any], named: str, why: str
) -> None:
    """A NaN, a numpy scalar or a set in top_k or an extra field raised httpx's bare ValueError or
    TypeError (naming no field), after GET /v1/scenarios had gone out; now a BadRequestError naming it."""
    answer, url = server
    asked = _answer_recording(answer)

    async def run_async() -> Any:
        async with AsyncLabelwiseClient(url, retry=_fast()) as client:
            return await client.classify("s", ["a"], **fields)

    with pytest.raises(
        BadRequestError, match=rf"^invalid_request: {named} cannot be sent as JSON \(.*{why}"
    ) as caught:
        if kind == "sync":
            with LabelwiseClient(url, retry=_fast()) as client:
                client.classify("s", ["a"], **fields)
        else:
            asyncio.run(run_async())
    assert caught.value.field == named and caught.value.status is None
    assert asked == []


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("call", ["classify", "scenarios", "ready"])
def test_a_call_on_a_closed_client_is_a_client_error_saying_so(
    server: tuple[dict[str, Answer], str], kind: str, call: str
) -> None:
    """A call after close() (or aclose(), or the end of the `with` block) raised httpx's bare RuntimeError;
    it is now a ClientError (client_closed) that says the client is closed, and nothing is sent."""
    answer, url = server
    asked = _answer_recording(answer)
    calls: dict[str, Callable[[Any], Any]] = {
        "classify": lambda client: client.classify("s", ["a"]),
        "scenarios": lambda client: client.scenarios(),
        "ready": lambda client: client.ready(),
    }

    async def run_async() -> None:
        async with AsyncLabelwiseClient(url, retry=_fast()) as client:
            await client.classify("s", ["a"])
        asked.clear()
        await calls[call](client)

    with pytest.raises(ClientError, match=r"^client_closed: the client is closed \(") as caught:
        if kind == "sync":
            with LabelwiseClient(url, retry=_fast()) as client:
                client.classify("s", ["a"])
            asked.clear()
            calls[call](client)
        else:
            asyncio.run(run_async())
    assert caught.value.status is None and caught.value.type == "client_closed"
    assert asked == []


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("when", ["waiting to retry", "in flight"])
def test_a_client_closed_during_a_call_is_a_client_error_saying_so(
    server: tuple[dict[str, Answer], str], kind: str, when: str
) -> None:
    """close() (or aclose()) from another thread or task while a call waits out a 503's Retry-After, or
    while its request is in flight: the next request raised httpx's bare RuntimeError ('Cannot send a
    request, as the client has been closed'). It is the ClientError (client_closed) a call after close()
    raises."""
    answer, url = server
    asked, closed = threading.Event(), threading.Event()

    def reply(path: str, body: Any) -> tuple[int, bytes, dict[str, str]]:
        if path == "/v1/scenarios":
            return 200, b'{"scenarios": []}', {}
        asked.set()
        if when == "in flight":  # answered once the client is closed: a 503, to be retried
            closed.wait(5)
        status, data, _ = _error(503, "overloaded")
        return status, data, {"Retry-After": "0.3"}

    answer["now"] = reply

    async def run_async() -> None:
        client = AsyncLabelwiseClient(url, retry=_fast())

        async def close_once_asked() -> None:
            await asyncio.to_thread(asked.wait, 5)
            await client.aclose()
            closed.set()

        closer = asyncio.create_task(close_once_asked())
        try:
            await client.classify("s", ["a"])
        finally:
            await closer

    def close_once_asked(client: LabelwiseClient) -> None:
        asked.wait(5)
        client.close()
        closed.set()

    with pytest.raises(ClientError, match=r"^client_closed: the client is closed \(") as caught:
        if kind == "sync":
            client = LabelwiseClient(url, retry=_fast())
            closer = threading.Thread(target=close_once_asked, args=(client,))
            closer.start()
            try:
                client.classify("s", ["a"])
            finally:
                closer.join(10)
        else:
            asyncio.run(run_async())
    assert caught.value.status is None and caught.value.type == "client_closed"
    assert asked.is_set() and closed.is_set()


@pytest.mark.parametrize("header", ["nan", "inf", "-nan"])
def test_a_retry_after_that_is_no_number_of_seconds_falls_back_to_the_backoff(
    server: tuple[dict[str, Answer], str], header: str
) -> None:
    """float() reads "nan" and "inf": nan made max(0, nan) a wait of 0, three retries at once."""
    answer, url = server
    calls = {"n": 0}

    def flaky(path: str, body: Any) -> tuple[int, bytes, dict[str, str]]:
        if path == "/v1/scenarios":  # the client learns the text limit here first
            return 200, b'{"scenarios": []}', {}
        calls["n"] += 1
        if calls["n"] < 3:
            status, data, _ = _error(503, "overloaded")
            return status, data, {"Retry-After": header}
        return 200, _labels(body), {}

    answer["now"] = flaky
    waits: list[float] = []
    policy = RetryPolicy(max_retries=3, backoff_s=0.25, max_wait_s=2.0, rng=random.Random(0))
    with LabelwiseClient(url, retry=policy, connect_retry_s=None) as client:
        client._sleep = waits.append
        assert len(client.classify("s", ["a"]).results) == 1
    assert len(waits) == 2 and all(0 < wait <= 2.0 for wait in waits), waits


def test_a_proxys_5xx_page_is_an_internal_server_error_with_a_short_message_and_the_request_id(
    server: tuple[dict[str, Answer], str],
) -> None:
    """A gateway's 502 HTML page became a bare ClientError whose message was the page's markup, and no
    error carried the X-Request-Id the service answered with (its log lines carry it)."""
    from labelwise.errors import InternalServerError, OverloadedError

    answer, url = server
    page = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"

    def reply(path: str, body: Any) -> tuple[int, bytes, dict[str, str]]:
        if path == "/v1/scenarios":
            return 200, b'{"scenarios": []}', {}
        if body["texts"] == ["html"]:
            return 502, page, {"Content-Type": "text/html; charset=utf-8"}
        status, data, _ = _error(429, "overloaded")
        return status, data, {"X-Request-Id": "req-42"}

    answer["now"] = reply
    with LabelwiseClient(url, retry=RetryPolicy(max_retries=0)) as client:
        with pytest.raises(ClientError) as caught:
            client.classify("s", ["html"])
        assert type(caught.value) is InternalServerError and caught.value.status == 502
        assert "<html" not in str(caught.value) and "text/html" in str(caught.value), str(caught.value)
        with pytest.raises(OverloadedError) as overloaded:
            client.classify("s", ["busy"])
    assert overloaded.value.request_id == "req-42" and overloaded.value.message == "no"


def test_client_errors_pickle_and_copy_as_themselves() -> None:
    """Exception pickles its message alone, which ClientError.__init__ cannot take: a process pool's worker
    that raised one broke the pool (BrokenProcessPool), and the real error was lost."""
    import copy
    import pickle

    from labelwise.errors import ConnectionFailedError, OverloadedError

    errors = [
        ClientError.for_answer(429, {"error": {"type": "overloaded", "message": "busy"}}, "req-1"),
        ConnectionFailedError("POST http://127.0.0.1:1/v1/classify: ConnectError"),
        InvalidApiKeyError("a newline in the key"),
    ]
    for error in errors:
        for again in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
            assert type(again) is type(error) and str(again) == str(error)
            assert (again.status, again.body, again.request_id) == (
                error.status,
                error.body,
                error.request_id,
            )
    assert isinstance(errors[0], OverloadedError)


def test_credentials_in_the_base_url_stay_out_of_error_messages() -> None:
    policy = RetryPolicy(max_retries=0, connect_retry_s=0)
    # nothing listens on port 1
    with (
        LabelwiseClient("http://user:s3cret@127.0.0.1:1", retry=policy) as client,
        pytest.raises(ClientError) as caught,
    ):
        client.classify("s", ["a"])
    assert "s3cret" not in str(caught.value) and "127.0.0.1:1" in str(caught.value), str(caught.value)


@pytest.mark.parametrize("given", [None, 32])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_chunks_stay_within_the_body_limit_the_server_announces(
    server: tuple[dict[str, Answer], str], kind: str, given: int | None
) -> None:
    """The client learned the server's text limits but not max_body_bytes: large texts went as one body
    over it, which a server refuses before reading and closes the connection on; the async client read
    that as a transport error and sent the body again, three times. Chunks are now cut to fit, also with
    max_texts_per_request given (it skipped GET /v1/scenarios, so the body limit was never learned)."""
    answer, url = server
    limit = 4000
    sizes: list[int] = []

    def reply(path: str, body: Any) -> tuple[int, bytes, dict[str, str]]:
        if path == "/v1/scenarios":
            limits = {"max_texts_per_request": 64, "max_chars_per_text": 20000, "max_body_bytes": limit}
            return 200, json.dumps({"scenarios": [], "limits": limits}).encode(), {}
        sizes.append(len(json.dumps(body)))
        return (413, *_error(413, "body_too_large")[1:]) if sizes[-1] > limit else (200, _labels(body), {})

    answer["now"] = reply
    texts = [f"text {i} " + "é" * 150 for i in range(40)]  # ~900 bytes each once escaped

    async def run_async() -> Any:
        async with AsyncLabelwiseClient(url, retry=_fast(), max_texts_per_request=given) as client:
            return await client.classify("s", texts)

    if kind == "sync":
        with LabelwiseClient(url, retry=_fast(), max_texts_per_request=given) as client:
            result = client.classify("s", texts)
    else:
        result = asyncio.run(run_async())
    assert len(result.results) == len(texts)
    assert sizes and max(sizes) <= limit, sizes  # no body was refused
    assert len(sizes) <= 14, len(sizes)  # cut to fit, not one text a request


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_error_about_a_text_of_a_later_chunk_keeps_the_request_id(
    server: tuple[dict[str, Answer], str], kind: str
) -> None:
    """A refusal naming a text of a chunk past the first is named by its index in the caller's list
    (texts.3, not texts.1); that copy of the error lost the X-Request-Id the service answered with."""
    answer, url = server

    def reply(path: str, body: Any) -> tuple[int, bytes, dict[str, str]]:
        if path == "/v1/scenarios":
            return 200, b'{"scenarios": []}', {}
        if "bad" not in body["texts"]:
            return 200, _labels(body), {}
        message = "texts.1: a text of only whitespace"
        error = {"type": "invalid_request", "field": "texts.1", "message": message}
        return 422, json.dumps({"error": error}).encode(), {"X-Request-Id": "req-7"}

    answer["now"] = reply
    texts = ["a", "b", "c", "bad"]
    with pytest.raises(BadRequestError) as caught:
        if kind == "sync":
            with LabelwiseClient(url, max_texts_per_request=2, concurrency=1) as client:
                client.classify("s", texts)
        else:

            async def run() -> None:
                async with AsyncLabelwiseClient(url, max_texts_per_request=2, concurrency=1) as client:
                    await client.classify("s", texts)

            asyncio.run(run())
    assert caught.value.field == "texts.3" and caught.value.request_id == "req-7"


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("timeout_s", [math.inf, 1e10, 1e300])
def test_timeout_s_inf_is_no_read_timeout(
    server: tuple[dict[str, Answer], str], kind: str, timeout_s: float
) -> None:
    """timeout_s=math.inf (no timeout) failed every call of the sync client with an OverflowError from
    its socket (the async client took it), and so did a finite one past threading.TIMEOUT_MAX (1e10 s);
    both now read without a timeout, connecting still bounded."""
    answer, url = server
    answer["now"] = lambda path, body: (200, _labels(body) if body else b'{"scenarios": []}', {})

    async def run_async() -> list[str]:
        async with AsyncLabelwiseClient(url, timeout_s=timeout_s, max_texts_per_request=4) as client:
            return (await client.classify("s", ["a"])).labels

    if kind == "sync":
        with LabelwiseClient(url, timeout_s=timeout_s, max_texts_per_request=4) as client:
            assert client.timeout.read is None and client.timeout.connect == 5.0
            assert client.classify("s", ["a"]).labels == ["x"]
    else:
        assert asyncio.run(run_async()) == ["x"]


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(
    ("path", "status", "location", "named"),
    [
        ("/v1/scenarios", 308, "https://127.0.0.1:1/v1/scenarios", "to https://127.0.0.1:1/v1/scenarios, "),
        ("/v1/classify", 301, "/api/v1/classify", "/api/v1/classify, a redirect"),
    ],
)
def test_a_redirect_is_a_bad_answer_naming_where_to(
    server: tuple[dict[str, Answer], str], kind: str, path: str, status: int, location: str, named: str
) -> None:
    """A redirect (an ingress sending http:// on to https://) was reported as 'its 308 answer is not
    JSON ...; is the URL a proxy's page?', naming neither the redirect nor where to; it now names both."""
    answer, url = server

    def reply(at: str, body: Any) -> tuple[int, bytes, dict[str, str]]:
        if at == path:
            return status, b"<html>Moved</html>", {"Content-Type": "text/html", "Location": location}
        return 200, _labels(body) if body else b'{"scenarios": []}', {}

    answer["now"] = reply

    async def run_async() -> None:
        async with AsyncLabelwiseClient(url, retry=_fast()) as client:
            await client.classify("s", ["a"])

    with pytest.raises(ClientError) as caught:
        if kind == "sync":
            with LabelwiseClient(url, retry=_fast()) as client:
                client.classify("s", ["a"])
        else:
            asyncio.run(run_async())
    message = str(caught.value)
    assert caught.value.type == "bad_answer" and caught.value.status == status, message
    assert f"{'GET' if path == '/v1/scenarios' else 'POST'} {url}{path} answered {status} " in message, (
        message
    )
    assert named in message and "does not follow" in message, message
    hint = "use https://" if location.startswith("https") else "give the URL of the server itself"
    assert hint in message, message


def test_a_limit_header_of_other_digits_is_no_limit_not_a_crash(
    server: tuple[dict[str, Answer], str],
) -> None:
    """A server announcing its per-request limit as "²" ('²'.isdigit() is true, int() refuses it): the
    client ignores the header, as any other it cannot read, and classifies (it raised ValueError)."""
    answer, url = server

    def reply(path: str, body: Any) -> tuple[int, bytes, dict[str, str]]:
        headers = {MAX_TEXTS_HEADER: "²"}
        if path == "/v1/scenarios":
            return 200, b'{"scenarios": []}', headers
        return 200, _labels(body), headers

    answer["now"] = reply
    with LabelwiseClient(url, retry=_fast()) as client:
        assert client.classify("s", ["one", "two"]).labels == ["x", "x"]
