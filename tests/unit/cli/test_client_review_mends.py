"""Client and `labelwise classify` mends found in review, against real HTTP servers on 127.0.0.1: a
gateway's error body whose `error` is a string still maps by status; a 200 answer of the wrong shape is a
bad_answer (and a failed discovery is not taken as done); a JSONL text with a lone surrogate is a named
bad row; a CSV with a BOM before a quoted header is read; a text that is not a string is refused by its
index; one client shared by many threads is not capped at its per-call concurrency; a server that
refuses connections while it restarts is waited for (for a time, not a count)."""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import json
import math
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from labelwise.cli import app
from labelwise.client import AsyncLabelwiseClient, LabelwiseClient, RetryPolicy
from labelwise.errors import (
    AuthenticationError,
    BadRequestError,
    ClientError,
    ConnectionFailedError,
    InputRowError,
    InternalServerError,
    InvalidTextError,
    OverloadedError,
)
from labelwise.file_scoring import HttpScorer, read_texts, score_file

# (method, path, JSON body or None) -> (status, JSON-able answer)
Reply = Callable[[str, str, Any], tuple[int, Any]]


def _labels(body: dict[str, Any]) -> tuple[int, Any]:
    n = len(body["texts"])
    rows = [[{"label": "x", "score": 0.9}]] * n
    return 200, {"scenario": body["scenario"], "version": 1, "results": rows, "truncated": [False] * n}


def _scenarios() -> tuple[int, Any]:
    return 200, {"scenarios": [{"name": "s", "version": 1}], "limits": {"max_texts_per_request": 64}}


def _normal(method: str, path: str, body: Any) -> tuple[int, Any]:
    return _scenarios() if method == "GET" else _labels(body)


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # many clients connect at once (socketserver's default backlog is 5)
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer (a run stopped by Ctrl-C) is no fault of this stub, and
        # socketserver's traceback went to the stderr the CLI tests read (seen once in CI).
        pass


def _handler(reply: Reply, seen: list[tuple[str, str, Any]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, method: str, body: Any) -> None:
            seen.append((method, self.path, body))
            status, answer = reply(method, self.path, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer("GET", None)

        def do_POST(self) -> None:
            self._answer("POST", json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextlib.contextmanager
def _serve(reply: Reply, port: int = 0, after_s: float = 0.0) -> Iterator[tuple[str, list]]:
    """A server on 127.0.0.1 answering with `reply`; with `after_s`, it starts listening on `port` only
    that long after the block starts (a server being restarted). Yields its URL and the requests seen."""
    seen: list[tuple[str, str, Any]] = []
    started: list[_Server] = []

    def start() -> None:
        server = _Server(("127.0.0.1", port), _handler(reply, seen))
        started.append(server)
        server.serve_forever()

    if after_s:
        timer = threading.Timer(after_s, start)
        timer.start()
        url = f"http://127.0.0.1:{port}"
    else:
        threading.Thread(target=start, daemon=True).start()
        while not started:
            time.sleep(0.01)
        url = f"http://127.0.0.1:{started[0].server_address[1]}"
    try:
        yield url, seen
    finally:
        if after_s:
            timer.cancel()
        for server in started:
            server.shutdown()
            server.server_close()
        if after_s:
            timer.join(5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["classify", "-s", "s", "--no-progress", *args])


def _posts(seen: list[tuple[str, str, Any]]) -> list[list[str]]:
    return [body["texts"] for method, _, body in seen if method == "POST"]


def _classify(kind: str, client_args: dict[str, Any], texts: list[Any]) -> Any:
    if kind == "sync":
        with LabelwiseClient(**client_args) as client:
            return client.classify("s", texts)

    async def run() -> Any:
        async with AsyncLabelwiseClient(**client_args) as client:
            return await client.classify("s", texts)

    return asyncio.run(run())


# ---- 1: an `error` that is not an object maps by status -------------------------------------------------
@pytest.mark.parametrize(
    ("status", "answer", "kind", "message", "exit_code"),
    [
        (401, {"error": "invalid token"}, AuthenticationError, "401 unauthorized: invalid token", 2),
        (500, {"error": "upstream connect error"}, InternalServerError, "upstream connect error", 1),
        (500, {"error": None}, InternalServerError, "500 internal_error", 1),
    ],
)
def test_a_gateway_error_body_whose_error_is_not_an_object_maps_by_status(
    tmp_path: Path, status: int, answer: Any, kind: type, message: str, exit_code: int
) -> None:
    """A gateway in front of the service answers `{"error": "invalid token"}`: it was an AttributeError
    (and, through `labelwise classify --url`, a bad_answer with exit 1)."""
    with _serve(lambda m, p, b: (status, answer)) as (url, _):
        for client_kind in ("sync", "async"):
            with pytest.raises(kind, match=message) as caught:
                _classify(client_kind, {"base_url": url, "api_key": "k", "max_retries": 0}, ["a"])
            assert caught.value.status == status and caught.value.exit_code == exit_code
        source = tmp_path / "in.jsonl"
        source.write_text('{"text": "a"}\n')
        out = tmp_path / "out.jsonl"
        with pytest.raises(kind, match=message):
            score_file(source, out, "s", lambda: HttpScorer(url, "s", api_key="k"))
        result = _cli("-i", str(source), "-o", str(out), "--url", url, "--api-key", "k")
    assert result.exit_code == exit_code, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


# ---- 2: a 200 answer of the wrong shape is a bad_answer ---------------------------------------------------
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_scenarios_answer_without_scenarios_is_a_bad_answer_on_every_call(kind: str) -> None:
    """The first call raised KeyError 'scenarios' and the second went on: discovery was marked done
    before the answer was checked."""

    def reply(method: str, path: str, body: Any) -> tuple[int, Any]:
        return (200, {"status": "ok"}) if method == "GET" else _labels(body)

    with _serve(reply) as (url, seen):

        def twice() -> list[ClientError]:
            errors = []
            if kind == "sync":
                with LabelwiseClient(url) as client:
                    for _ in range(2):
                        with pytest.raises(ClientError) as caught:
                            client.classify("s", ["a"])
                        errors.append(caught.value)
                return errors

            async def run() -> list[ClientError]:
                async with AsyncLabelwiseClient(url) as client:
                    for _ in range(2):
                        with pytest.raises(ClientError) as caught:
                            await client.classify("s", ["a"])
                        errors.append(caught.value)
                return errors

            return asyncio.run(run())

        errors = twice()
    assert [e.type for e in errors] == ["bad_answer", "bad_answer"]
    assert all("/v1/scenarios did not answer as a labelwise server" in str(e) for e in errors)
    assert _posts(seen) == []  # never classified on an answer that is not this API's


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(
    ("drop", "message"), [("truncated", "no `truncated` list"), ("version", "no integer `version`")]
)
def test_a_classify_answer_without_truncated_or_version_is_a_bad_answer(
    kind: str, drop: str, message: str
) -> None:
    """It escaped as a bare KeyError from merging the chunks."""

    def reply(method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "GET":
            return _scenarios()
        status, answer = _labels(body)
        del answer[drop]
        return status, answer

    with _serve(reply) as (url, _), pytest.raises(ClientError, match=message) as caught:
        _classify(kind, {"base_url": url}, ["a", "b"])
    assert caught.value.type == "bad_answer" and caught.value.exit_code == 1


# ---- 3: a lone surrogate in a JSONL text --------------------------------------------------------------
def test_a_jsonl_text_with_a_lone_surrogate_is_a_named_bad_row(tmp_path: Path) -> None:
    """It reached the client, whose refusal HttpScorer turned into a bad_answer (exit 1) blaming the
    server, naming a chunk index and writing nothing."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "fine"}\n{"text": "bad \\ud800 text"}\n{"text": "ok"}\n')
    out = tmp_path / "out.jsonl"
    with _serve(_normal) as (url, seen):
        with pytest.raises(InputRowError) as caught:
            score_file(source, out, "s", lambda: HttpScorer(url, "s"))
        assert caught.value.exit_code == 2 and (caught.value.row, caught.value.line) == (2, 2)
        assert "lone surrogate" in str(caught.value) and "the 1 row(s) before it are in" in str(caught.value)
        assert [json.loads(line)["row"] for line in out.read_text().splitlines()] == [0]
        assert _posts(seen) == [["fine"]]
        out.unlink()
        result = _cli("-i", str(source), "-o", str(out), "--url", url)
    assert result.exit_code == 2, result.output
    assert "row 2 (line 2)" in result.output and "lone surrogate" in result.output


def test_http_scorer_leaves_the_clients_own_refusal_of_a_text_as_it_is() -> None:
    """The client's ValueError (a text no request can carry) is not the server's bad answer."""
    with _serve(_normal) as (url, seen):
        scorer = HttpScorer(url, "s")
        try:
            with pytest.raises(InvalidTextError, match=r"texts\[1\]: not valid Unicode") as caught:
                scorer.score(["fine", "bad \ud800"])
        finally:
            scorer.close()
    assert caught.value.type == "invalid_text" and caught.value.exit_code == 2
    assert "did not answer as a labelwise server" not in str(caught.value)
    assert _posts(seen) == []


# ---- 4: a BOM before a quoted CSV header --------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "column", "expected"),
    [
        ('\ufeff"id","text"\r\n"1","good"\r\n"2","bad"\r\n', "id", ["1", "2"]),  # pandas utf-8-sig, QUOTE_ALL
        ('\ufeff"id","text"\r\n"1","good"\r\n"2","bad"\r\n', "text", ["good", "bad"]),
        ('\ufeff"text"\nhello\n', "text", ["hello"]),  # PowerShell's Export-Csv
        ("\ufefftext\nhello\n", "text", ["hello"]),  # unquoted, as before
    ],
)
def test_a_csv_with_a_bom_before_a_quoted_header_finds_its_column(
    tmp_path: Path, content: str, column: str, expected: list[str]
) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(content.encode())
    assert list(read_texts(source, column)) == expected


# ---- 5: a text that is not a string -------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(
    ("bad", "name"), [(math.nan, "float"), (b"bytes", "bytes"), (None, "NoneType"), (5, "int")]
)
def test_a_text_that_is_not_a_string_is_refused_by_its_index(kind: str, bad: Any, name: str) -> None:
    """NaN and bytes gave httpx's own ValueError / TypeError naming no text (None and 5 the server's 422)."""
    texts: list[Any] = ["ok"] * 100
    texts[70] = bad
    with _serve(_normal) as (url, seen), pytest.raises(ValueError) as caught:
        _classify(kind, {"base_url": url}, texts)
    assert isinstance(caught.value, InvalidTextError) and caught.value.exit_code == 2
    assert f"texts[70]: expected a string, got {name}" in str(caught.value)
    assert seen == []  # refused before any request


# ---- 6: the connection pool is the client's, not one call's -------------------------------------------
class _Peak:
    """A server reply that takes 0.3 s and records the most requests it held at once."""

    def __init__(self) -> None:
        self.now = self.peak = 0
        self.lock = threading.Lock()

    def __call__(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(0.3)
        with self.lock:
            self.now -= 1
        return _normal(method, path, body)


def _shared_sync(url: str, callers: int, **kwargs: Any) -> list[Any]:
    """Each caller's labels (or the exception its call raised), read by the test's own thread."""
    with LabelwiseClient(url, max_texts_per_request=8, **kwargs) as client:
        barrier = threading.Barrier(callers)
        answers: list[Any] = [None] * callers

        def one(i: int) -> None:
            barrier.wait(5)
            try:
                answers[i] = client.classify("s", [f"t{i}"]).labels
            except Exception as exc:  # shown by the test's assert
                answers[i] = exc

        threads = [threading.Thread(target=one, args=(i,)) for i in range(callers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        return answers


def test_threads_sharing_one_client_are_not_capped_at_its_per_call_concurrency() -> None:
    """Twenty threads, one client with concurrency 1: the pool allowed concurrency + 1 = 2 requests in
    flight for the whole client, so the twenty calls took ten rounds. More than 2 at once shows the cap
    gone (20 barrier-released calls, each held 0.3 s by the server); how many more depends on the box."""
    peak = _Peak()
    with _serve(peak) as (url, seen):
        assert _shared_sync(url, 20, concurrency=1) == [["x"]] * 20
        assert len(_posts(seen)) == 20
        assert peak.peak >= 3, peak.peak  # the old pool held 2

        peak.peak = 0
        answers = _shared_sync(url, 20, concurrency=1, max_connections=3)  # the pool's own bound, when asked
        assert answers == [["x"]] * 20
        assert 1 <= peak.peak <= 3, peak.peak


def test_tasks_sharing_one_async_client_are_not_capped_at_its_per_call_concurrency() -> None:
    peak = _Peak()

    async def run(url: str) -> None:
        async with AsyncLabelwiseClient(url, concurrency=1, max_texts_per_request=8) as client:
            answers = await asyncio.gather(*(client.classify("s", [f"t{i}"]) for i in range(20)))
        assert [a.labels for a in answers] == [["x"]] * 20

    with _serve(peak) as (url, _):
        asyncio.run(run(url))
    assert peak.peak >= 3, peak.peak  # the old pool held concurrency + 1 = 2


def test_one_calls_chunks_stay_within_its_concurrency() -> None:
    """The per-call bound is kept: one call of 12 texts in chunks of 2 sends at most 3 at once."""
    peak = _Peak()
    with _serve(peak) as (url, seen), LabelwiseClient(url, concurrency=3, max_texts_per_request=2) as client:
        assert client.classify("s", [f"t{i}" for i in range(12)]).labels == ["x"] * 12
    assert len(_posts(seen)) == 6 and peak.peak <= 3


def test_max_connections_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_connections must be at least 1"):
        LabelwiseClient(max_connections=0)


@pytest.mark.parametrize("client_class", [LabelwiseClient, AsyncLabelwiseClient])
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        # timeout_s=0 timed every connect out at once: a reachable server was retried for 30 s and then
        # called unreachable ("Operation now in progress"); -1 failed only at the first request
        ({"timeout_s": 0}, "timeout_s must be more than 0 seconds, got 0"),
        ({"timeout_s": -1}, "timeout_s must be more than 0 seconds, got -1"),
        ({"timeout_s": float("nan")}, "timeout_s must be more than 0 seconds, got nan"),
        ({"timeout_s": None}, "timeout_s must be more than 0 seconds, got None"),
        ({"max_retries": -1}, "max_retries must be 0 or more, got -1"),
        # inf passed `>= 0`: a 503 was retried without end
        ({"max_retries": float("inf")}, "max_retries must be 0 or more, got inf: a whole number of retries"),
        # negative waits were clamped to none: a refused connection was tried thousands of times a second
        ({"backoff_s": -1}, "backoff_s must be 0 seconds or more, got -1"),
        ({"max_wait_s": -0.5}, "max_wait_s must be 0 seconds or more, got -0.5"),
        # no cap: a Retry-After far ahead was waited for (sync: an OverflowError from Event.wait)
        ({"max_wait_s": float("inf")}, "max_wait_s must be a finite number of seconds, at most"),
        # finite but past threading.TIMEOUT_MAX: a long Retry-After overflowed the sync client's wait
        ({"max_wait_s": 1e10}, "max_wait_s must be a finite number of seconds, at most"),
        # a NaN passed `< 1`: the sync client's pool had no thread (concurrency) or no connection
        # (max_connections) and a call hung; a float chunk size failed each classify in range()
        ({"concurrency": float("nan")}, "concurrency must be at least 1 (a whole number), got nan"),
        ({"max_connections": float("nan")}, "max_connections must be at least 1 (a whole number), got nan"),
        ({"max_texts_per_request": float("nan")}, "max_texts_per_request must be at least 1 (a whole"),
        ({"max_texts_per_request": 2.5}, "max_texts_per_request must be at least 1 (a whole number), got 2"),
        ({"concurrency": None}, "concurrency must be at least 1 (a whole number), got None"),
    ],
)
def test_settings_that_cannot_work_are_refused_at_construction(
    client_class: type, settings: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        client_class("http://127.0.0.1:9", **settings)


@pytest.mark.parametrize("client_class", [LabelwiseClient, AsyncLabelwiseClient])
@pytest.mark.parametrize(
    ("url", "message"),
    [
        # httpx.InvalidURL (no ClientError, no ValueError) at construction
        ("http://[::1", "base_url 'http://[::1' is not a valid URL (Invalid IPv6 URL)"),
        # a refused connection, retried for connect_retry_s (30 s), then "unreachable"
        ("http://127.0.0.1:99999", "base_url 'http://127.0.0.1:99999' is not a valid URL (Port out of range"),
        ("http://user:secret@h:99999", "base_url 'http://h:99999' is not a valid URL"),
        # failed only on the first call, as UnsupportedProtocol
        ("localhost:8000", "base_url 'localhost:8000' has no http:// or https://"),
    ],
)
def test_a_base_url_no_request_can_go_to_is_refused_at_construction(
    client_class: type, url: str, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        client_class(url)


def test_a_retry_policy_with_a_negative_wait_is_refused() -> None:
    with pytest.raises(ValueError, match="connect_max_wait_s must be 0 seconds or more, got -1"):
        RetryPolicy(connect_max_wait_s=-1)
    with pytest.raises(ValueError, match="connect_retry_s must be 0 or more"):
        RetryPolicy(connect_retry_s=-2)


def test_more_than_a_thousand_retries_end_in_the_answers_error() -> None:
    """max_retries=1100 (retry an overloaded service a long while): the 1025th wait computed
    backoff_s * 2**1024 and the call raised OverflowError; it now ends in the service's 503."""
    posts: list[int] = []

    def busy(request: httpx.Request) -> httpx.Response:
        posts.append(1)
        return httpx.Response(503, json={"error": {"type": "overloaded", "message": "busy"}})

    policy = RetryPolicy(max_retries=1100, backoff_s=0.01, max_wait_s=1.0)
    waits: list[float] = []
    with LabelwiseClient(
        max_texts_per_request=4, retry=policy, transport=httpx.MockTransport(busy)
    ) as client:
        client._discovered = True
        client._sleep = waits.append
        with pytest.raises(OverloadedError, match="busy"):
            client.classify("s", ["a"])
    assert len(posts) == 1101 and len(waits) == 1100 and max(waits) <= 1.0


# ---- 7: connection refused while a server restarts ----------------------------------------------------
def test_the_default_connect_retry_outlasts_a_replica_replacement() -> None:
    """docs/serving.md: a replaced replica answers again after about 4.6 s; the count-based retries gave
    up after about 3.5 s of waits at most (2.5 s measured)."""
    assert RetryPolicy().connect_retry_s == 30.0
    assert LabelwiseClient().retry.connect_retry_s == AsyncLabelwiseClient().retry.connect_retry_s == 30.0


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_refused_connection_is_retried_until_the_server_listens(kind: str) -> None:
    port = _free_port()
    with _serve(_normal, port=port, after_s=0.8) as (url, seen):
        start = time.perf_counter()
        # max_retries=0: connect failures are retried for connect_retry_s, apart from the count
        result = _classify(kind, {"base_url": url, "max_retries": 0, "connect_retry_s": 1.5}, ["a", "b"])
        seconds = time.perf_counter() - start
    assert result.labels == ["x", "x"]
    assert 0.8 <= seconds < 2.5, seconds
    assert [p for _, p, _ in seen] == ["/v1/scenarios", "/v1/classify"]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_refused_connection_fails_once_its_time_is_spent(kind: str) -> None:
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    start = time.perf_counter()
    with pytest.raises(ConnectionFailedError, match=r"ConnectError.*over 1\.\d s; connect_retry_s is 1\.5"):
        _classify(kind, {"base_url": url, "connect_retry_s": 1.5}, ["a"])
    seconds = time.perf_counter() - start
    assert 1.5 <= seconds < 2.5, seconds


def test_a_connect_retry_budget_does_not_use_up_the_count_based_retries() -> None:
    """A 503 after a few refused connects is still retried max_retries times: the counts are apart."""
    port = _free_port()
    answers = iter([(503, {"error": {"type": "overloaded", "message": "busy"}})])

    def reply(method: str, path: str, body: Any) -> tuple[int, Any]:
        return next(answers, None) or _labels(body)

    policy = RetryPolicy(max_retries=1, backoff_s=0.05, connect_retry_s=3.0)
    with (
        _serve(reply, port=port, after_s=0.6) as (url, seen),
        LabelwiseClient(url, retry=policy, max_texts_per_request=8) as client,
    ):
        client._discovered = True  # the refused connects and the 503 fall on the one POST
        assert client.classify("s", ["a"]).labels == ["x"]
    assert len(_posts(seen)) == 2


def test_classify_retry_for_waits_for_a_server_being_restarted(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("text\nhello\nworld\n")
    out = tmp_path / "out.jsonl"
    with _serve(_normal, port=(port := _free_port()), after_s=0.8) as (url, _):
        result = _cli("-i", str(source), "-o", str(out), "--url", url, "--retry-for", "1.5", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[-1])["rows_scored"] == 2

    start = time.perf_counter()
    result = _cli("-i", str(source), "-o", str(tmp_path / "o2.jsonl"), "--url", url, "--retry-for", "0.5")
    assert result.exit_code == 1 and "connect_retry_s is 0.5" in result.output, result.output
    assert time.perf_counter() - start < 3.0
    assert f"127.0.0.1:{port}" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--retry-for", "5"], "--retry-for applies to scoring through a server (--url) only"),
        (["--url", "http://127.0.0.1:9", "--retry-for", "-1"], "--retry-for must be 0 seconds or more"),
    ],
)
def test_retry_for_is_refused_without_url_or_below_zero(
    tmp_path: Path, args: list[str], message: str
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("text\nhello\n")
    result = _cli("-i", str(source), "-o", str(tmp_path / "out.jsonl"), *args)
    assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.parametrize(
    ("option", "loop"), [("--input", "loop.jsonl"), ("--output", "loop.jsonl"), ("--output", "dir/out.jsonl")]
)
def test_a_symlink_loop_is_refused_in_one_line_naming_the_option(
    tmp_path: Path, option: str, loop: str
) -> None:
    # Path.resolve raised RuntimeError ("Symlink loop"): a traceback, exit 1
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "hello"}\n')
    (tmp_path / "loop.jsonl").symlink_to("loop.jsonl")
    (tmp_path / "dir").symlink_to("dir")
    paths = {"--input": str(source), "--output": str(tmp_path / "out.jsonl"), option: str(tmp_path / loop)}
    result = _cli("-i", paths["--input"], "-o", paths["--output"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert line == (
        f"error: {option} {tmp_path / loop}: its symlinks loop (too many levels of symbolic links); "
        "name the file itself"
    )
    assert not (tmp_path / "out.jsonl").exists()


# ---- minor: Parquet text columns pandas and Arrow write -----------------------------------------------
def test_parquet_dictionary_and_large_binary_text_columns_are_read(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    categorical = tmp_path / "cat.parquet"
    pq.write_table(pa.table({"text": pa.array(["good", "bad", "good"]).dictionary_encode()}), categorical)
    assert pa.types.is_dictionary(pq.ParquetFile(categorical).schema_arrow.field("text").type)
    assert list(read_texts(categorical)) == ["good", "bad", "good"]
    large = tmp_path / "lb.parquet"
    pq.write_table(pa.table({"text": pa.array([b"a", b"b"], pa.large_binary())}), large)
    assert list(read_texts(large)) == ["a", "b"]


def test_one_string_as_texts_is_refused_not_sent_a_character_a_text() -> None:
    from labelwise.client import _sendable
    from labelwise.errors import InvalidTextError

    for one in ("hello", b"hello"):
        with pytest.raises(
            InvalidTextError, match=r"texts is one (str|bytes), not a list of texts.*pass \[text\]"
        ):
            _sendable(one)  # type: ignore[arg-type]
    assert _sendable(("hello", "world")) == ["hello", "world"]


# ---- 8: GET /v1/scenarios answered "later" -----------------------------------------------------------
def _busy_then_limited(busy_gets: int) -> Reply:
    """GET /v1/scenarios answers 503 `busy_gets` times (a server restarting), then announces 50 characters
    a text; POST refuses a longer text as the service does."""
    gets: list[int] = []

    def reply(method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "GET":
            gets.append(1)
            if len(gets) <= busy_gets:
                return 503, {"error": {"type": "overloaded", "message": "busy"}}
            return 200, {"scenarios": [{"name": "s", "version": 1}], "limits": {"max_chars_per_text": 50}}
        for i, text in enumerate(body["texts"]):
            if len(text) > 50:
                message = f"texts.{i}: {len(text)} characters, at most 50"
                return 422, {"error": {"type": "invalid_request", "field": f"texts.{i}", "message": message}}
        return _labels(body)

    return reply


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_scenarios_answer_of_later_is_asked_again_on_the_next_call(kind: str) -> None:
    """A 503 on GET /v1/scenarios after its retries marked discovery done: the limits the server announces
    once back were never learned by that client."""
    policy = RetryPolicy(max_retries=1, backoff_s=0.01)
    with _serve(_busy_then_limited(2)) as (url, seen):
        if kind == "sync":
            with LabelwiseClient(url, retry=policy) as client:
                client.classify("s", ["a"])
                client.classify("s", ["b"])
                chars = client.max_chars_per_text
        else:

            async def run() -> int | None:
                async with AsyncLabelwiseClient(url, retry=policy) as client:
                    await client.classify("s", ["a"])
                    await client.classify("s", ["b"])
                    return client.max_chars_per_text

            chars = asyncio.run(run())
    assert chars == 50
    assert [method for method, _, _ in seen] == ["GET", "GET", "POST", "GET", "POST"]


def test_classify_url_cuts_long_texts_after_a_busy_first_scenarios_answer(tmp_path: Path) -> None:
    """labelwise classify --url cuts a text to the server's max_chars_per_text; a 503 on the first GET
    /v1/scenarios lost that limit for the run, and the long row stopped it with a 422 (exit 2)."""
    source = tmp_path / "in.csv"
    source.write_text("text\nhello\nworld\n" + "x" * 80 + "\n")
    out = tmp_path / "out.jsonl"

    def make() -> HttpScorer:
        scorer = HttpScorer(url, "s")
        scorer._client.retry = RetryPolicy(max_retries=1, backoff_s=0.01)
        return scorer

    with _serve(_busy_then_limited(2)) as (url, _):
        summary = score_file(source, out, "s", make, batch_rows=2)
    assert summary.rows_scored == 3
    assert [json.loads(line)["row"] for line in out.read_text().splitlines()] == [0, 1, 2]


# ---- 9: a server's refusal of one text, named by its row of the file ----------------------------------
def test_a_text_the_server_refuses_is_named_by_its_row_of_the_file_not_of_its_chunk(tmp_path: Path) -> None:
    """An older server (no GET /v1/scenarios: no limit announced, no text cut) refuses the long text of
    row 4: the error named it `texts.1`, its index in the chunk of rows 3 and 4."""
    reply = _busy_then_limited(0)

    def older(method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "GET":
            return 404, {"error": {"type": "not_found", "message": "no route"}}
        return reply(method, path, body)

    source = tmp_path / "in.csv"
    source.write_text("text\na\nb\nc\n" + "x" * 80 + "\ne\n")
    out = tmp_path / "out.jsonl"
    with _serve(older) as (url, _):
        with pytest.raises(BadRequestError) as caught:
            score_file(source, out, "s", lambda: HttpScorer(url, "s"), batch_rows=2)
        result = _cli("-i", str(source), "-o", str(tmp_path / "o2.jsonl"), "--url", url, "--batch-rows", "2")
    assert caught.value.field == "texts.3"
    assert f"texts.3: 80 characters, at most 50 ({source}: row 4)" in str(caught.value)
    assert [json.loads(line)["row"] for line in out.read_text().splitlines()] == [0, 1]
    assert result.exit_code == 2 and f"({source}: row 4)" in result.output, result.output


def test_classify_url_cuts_a_long_text_after_its_leading_whitespace(tmp_path: Path) -> None:
    """A text opening with more spaces than the server's max_chars_per_text was cut to spaces alone, which
    the server refuses as blank (422, the run stopped, exit 2) where in-process scoring scores the text."""
    limited = _busy_then_limited(0)

    def reply(method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "POST" and any(not text.strip() for text in body["texts"]):
            return 422, {"error": {"type": "invalid_request", "field": "texts", "message": "a blank text"}}
        return limited(method, path, body)

    source = tmp_path / "in.csv"
    source.write_text("text\nhello\n" + " " * 60 + "great product\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    with _serve(reply) as (url, seen):
        summary = score_file(source, out, "s", lambda: HttpScorer(url, "s"), batch_rows=2)
    assert summary.rows_scored == 2
    assert [body["texts"] for method, _, body in seen if method == "POST"] == [["hello", "great product"]]


class _FalseGzip(BaseHTTPRequestHandler):
    """Answers 200 saying its body is gzip, which it is not (a broken proxy's answer)."""

    def do_GET(self) -> None:
        data = b'{"scenarios": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_answer_that_cannot_be_decoded_is_a_bad_answer_not_an_httpx_error(kind: str) -> None:
    """A body that is not the Content-Encoding it names raised httpx.DecodingError out of the client, where
    the docs promise a ClientError for every failure."""
    server = _Server(("127.0.0.1", 0), _FalseGzip)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(ClientError) as caught:
            if kind == "sync":
                with LabelwiseClient(url) as client:
                    client.scenarios()
            else:

                async def run() -> None:
                    async with AsyncLabelwiseClient(url) as client:
                        await client.scenarios()

                asyncio.run(run())
    finally:
        server.shutdown()
        server.server_close()
    assert caught.value.type == "bad_answer" and "DecodingError" in str(caught.value), caught.value


@pytest.mark.parametrize(("texts", "kind"), [(None, "NoneType"), ({"a": 1}, "dict"), (3, "int")])
def test_texts_that_are_no_list_of_texts_are_refused_before_any_request(texts: Any, kind: str) -> None:
    # Port 8449 has no server: a request sent would be a ConnectionFailedError, not an InvalidTextError.
    from labelwise.client import LabelwiseClient
    from labelwise.errors import InvalidTextError

    client = LabelwiseClient("http://127.0.0.1:8449", connect_retry_s=0, max_retries=0)
    with client, pytest.raises(InvalidTextError, match=rf"texts is {kind}, not a list of texts"):
        client.classify("s", texts)


def _only_root_paths(method: str, path: str, body: Any) -> tuple[int, Any]:
    """The service's answers: its routes at the root, and its 404 for any other path."""
    if path in ("/v1/scenarios", "/v1/classify"):
        return _normal(method, path, body)
    return 404, {"error": {"type": "not_found", "message": "Not Found", "code": 404}}


def test_a_404_for_no_such_path_names_the_url_asked() -> None:
    from labelwise.errors import EndpointNotFoundError

    with _serve(_only_root_paths) as (url, _):
        # A base URL with /v1 in it: POST <url>/v1/v1/classify
        with LabelwiseClient(f"{url}/v1") as client, pytest.raises(EndpointNotFoundError) as caught:
            client.classify("s", ["hello"])
        error = caught.value
        assert error.status == 404 and error.type == "not_found", error
        assert f"POST {url}/v1/v1/classify" in str(error) and "base URL" in str(error), error
        assert error.body["error"]["code"] == 404  # the service's answer is kept, its message named

        async def async_call() -> None:
            async with AsyncLabelwiseClient(f"{url}/v1") as client:
                await client.classify("s", ["hello"])

        with pytest.raises(EndpointNotFoundError, match=f"POST {url}/v1/v1/classify"):
            asyncio.run(async_call())
        # The right base URL is answered.
        with LabelwiseClient(url) as client:
            assert client.classify("s", ["hello"]).labels == ["x"]


@pytest.fixture
def terminal_sigint() -> Iterator[None]:
    """SIGINT handled as in a terminal (KeyboardInterrupt): a process started in the background by a
    non-interactive shell (CI's) inherits SIGINT ignored, and then `_thread.interrupt_main` does nothing."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _twenty_rows(tmp_path: Path) -> Path:
    source = tmp_path / "in.csv"
    source.write_text("text\n" + "".join(f"text {i}\n" for i in range(20)))
    return source


def _resumed(source: Path, out: Path) -> int:
    """The rows a second run of the same command found scored already (it then scores the rest)."""
    with _serve(_normal) as (url, _):
        result = _cli("-i", str(source), "-o", str(out), "--url", url, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output.splitlines()[-1])["rows_skipped"]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.usefixtures("terminal_sigint")
def test_ctrl_c_mid_run_says_in_one_line_where_the_partial_output_is(tmp_path: Path, suffix: str) -> None:
    """Ctrl-C exited 130 saying nothing: a JSONL or CSV output cut short looked like a finished one."""
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    posts: list[int] = []

    def ctrl_c_on_the_third_post(method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "POST":
            posts.append(len(body["texts"]))
            if len(posts) == 3:
                _thread.interrupt_main()  # what a terminal's Ctrl-C does to this process
        return _normal(method, path, body)

    source, out = _twenty_rows(tmp_path), tmp_path / f"out{suffix}"
    with _serve(ctrl_c_on_the_third_post) as (url, _):
        result = _cli(
            "-i", str(source), "-o", str(out), "--url", url, "--batch-rows", "4", "--concurrency", "1"
        )
    assert result.exit_code == 130, result.output
    where = out if suffix == ".jsonl" else tmp_path / "out.parquet.partial.jsonl"
    held = len(where.read_text().splitlines())
    assert 8 <= held < 20 and not (suffix == ".parquet" and out.exists())
    assert result.stderr.splitlines() == [
        f"error: interrupted: {where} holds the rows scored so far ({held}), not the whole input; "
        "run the same command again to resume from there"
    ]
    assert _resumed(source, out) == held  # as it says: the same command goes on from there


@pytest.mark.usefixtures("terminal_sigint")
def test_ctrl_c_before_any_row_is_scored_says_the_output_was_left_alone(tmp_path: Path) -> None:
    def ctrl_c_on_the_first_post(method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "POST":
            _thread.interrupt_main()
        return _normal(method, path, body)

    source = tmp_path / "in.csv"
    source.write_text("text\nhello\n")
    out = tmp_path / "out.csv"
    out.write_text("kept as it was\n")
    with _serve(ctrl_c_on_the_first_post) as (url, _):
        result = _cli("-i", str(source), "-o", str(out), "--url", url, "--overwrite")
    assert result.exit_code == 130, result.output
    assert result.stderr.splitlines() == [
        f"error: interrupted: before any row was written; {out} was left as it was"
    ]
    assert out.read_text() == "kept as it was\n"


def test_ctrl_c_before_the_output_is_opened_says_the_output_was_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C while score_file reads the input, before it has made its OutputFile: no ScoringInterrupted
    carries the line, so the CLI says what OutputFile.interrupted says of an output not yet written to."""
    import labelwise.file_scoring as file_scoring

    def ctrl_c(_path: Path) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(file_scoring, "count_rows", ctrl_c)
    source = tmp_path / "in.csv"
    source.write_text("text\nhello\n")
    out = tmp_path / "out.csv"
    out.write_text("kept as it was\n")
    result = _cli("-i", str(source), "-o", str(out), "--url", "http://127.0.0.1:9", "--overwrite")
    assert result.exit_code == 130, result.output
    assert result.stderr.splitlines() == [
        f"error: interrupted: before any row was written; {out} was left as it was"
    ]
    assert out.read_text() == "kept as it was\n"


@pytest.mark.usefixtures("terminal_sigint")
def test_a_stopped_overwrite_run_says_to_resume_without_overwrite(tmp_path: Path) -> None:
    """The lines said 'run the same command again to resume', but the same command with --overwrite empties
    the output again and scores the file from its first row."""
    posts: list[int] = []

    def stops_on_the_third_post(reply: str) -> Reply:
        def answer(method: str, path: str, body: Any) -> tuple[int, Any]:
            if method == "POST":
                posts.append(len(body["texts"]))
                if len(posts) == 3:
                    if reply == "ctrl-c":
                        _thread.interrupt_main()  # what a terminal's Ctrl-C does to this process
                    else:
                        return 500, {"error": {"type": "internal_error", "message": "boom"}}
            return _normal(method, path, body)

        return answer

    source, out = _twenty_rows(tmp_path), tmp_path / "out.csv"
    out.write_text("an old output\n")
    args = ("-i", str(source), "-o", str(out), "--batch-rows", "4", "--concurrency", "1", "--overwrite")
    for reply, code in (("ctrl-c", 130), ("500", 1)):
        posts.clear()
        with _serve(stops_on_the_third_post(reply)) as (url, _):
            result = _cli(*args, "--url", url)
        assert result.exit_code == code, result.output
        held = len(out.read_text().splitlines()) - 1  # the header
        assert 8 <= held < 20
        assert result.stderr.splitlines()[-1].endswith(
            "run the same command without --overwrite to resume from there"
            if reply == "ctrl-c"
            else f"are in {out}; run the same command without --overwrite to resume"
        ), result.stderr
        assert _resumed(source, out) == held  # as it says: without --overwrite, it goes on from there


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_server_failing_mid_run_says_where_the_rows_scored_before_it_are(
    tmp_path: Path, suffix: str
) -> None:
    """The error line named only the server's failure: a CSV output cut short looked like a finished one."""
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    posts: list[int] = []

    def fails_on_the_third_post(method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "POST":
            posts.append(len(body["texts"]))
            if len(posts) == 3:
                return 500, {"error": {"type": "internal_error", "message": "boom"}}
        return _normal(method, path, body)

    source, out = _twenty_rows(tmp_path), tmp_path / f"out{suffix}"
    with _serve(fails_on_the_third_post) as (url, _):
        result = _cli(
            "-i", str(source), "-o", str(out), "--url", url, "--batch-rows", "4", "--concurrency", "1"
        )
    assert result.exit_code == 1, result.output
    where = f"{out}" if suffix == ".csv" else f"{out}.partial.jsonl (Parquet once complete)"
    assert result.stderr.splitlines() == [
        f"error: 500 internal_error: boom; the 8 row(s) scored before it are in {where}; "
        "run the same command again to resume"
    ]
    assert _resumed(source, out) == 8
