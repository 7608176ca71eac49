"""Mends of the HTTP request path found in review: a refusal sent with part of the body unread closes the
connection (the next request on it was read as the rest of that body and never answered), a 401 and a
server fault are counted once in labelwise_requests_total, a Transfer-Encoding coding besides chunked is
refused 415 while a request without a body is never refused for its Content-Encoding, and HEAD is
answered wherever GET is. Over a real ClassifierService on published tiny versions: behind a real uvicorn
on 127.0.0.1 serving the classify front door, as a local direct-ingress replica does, where the
connection matters; in-process for the counts."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import re
import socket
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest

from model_repository import ModelRepository
from tests.unit.serving.conftest import serve_in_process
from tests.unit.serving.test_http_edges import FailingScenarioList

VALID = json.dumps({"scenario": "frozen_two", "texts": ["a fine day"]}).encode()
GET_HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"


def _config(repo: ModelRepository, **extra: Any) -> Any:
    from serving.config import ServingConfig

    return ServingConfig(repository=str(repo.root), scenarios=[{"name": "frozen_two"}], **extra)


BODY_DEADLINE_S = 3.0  # request_timeout_s: long enough that a loaded box orders two connections within it


@pytest.fixture(scope="module")
def live_server(published_repo: ModelRepository) -> Iterator[Any]:
    """uvicorn on 127.0.0.1 with the coalescing protocol, serving the app's classify front door (one
    request admitted at once, a 1024-byte body limit, BODY_DEADLINE_S for a body to arrive); yields its
    port and the front door. The keep-alive timeout is long, so that a connection left open shows as a
    read that times out."""
    pytest.importorskip("ray.serve")
    import uvicorn

    from serving.api import create_api
    from serving.http_framing import refuse_framing_as_json
    from serving.http_writes import coalesce_server_writes
    from serving.service import ClassifierService

    config = _config(
        published_repo, max_ongoing_requests=1, max_body_bytes=1024, request_timeout_s=BODY_DEADLINE_S
    )
    built: list[Any] = []

    def front_door() -> Any:  # built on the server's event loop, where it runs
        service = ClassifierService(config)
        service.registry.poll_once()
        built.append(create_api(service, config, service.metrics).state.classify_front_door)
        return built[0]

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(
            front_door,
            factory=True,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_keep_alive=30,
        )
    )
    assert coalesce_server_writes(server)
    assert refuse_framing_as_json(server)  # as serving.direct_ingress sets both
    thread = threading.Thread(target=lambda: server.run(sockets=[sock]), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield types.SimpleNamespace(port=sock.getsockname()[1], front_door=built[0])
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def live(live_server: Any) -> int:
    return live_server.port


def _connect(port: int) -> socket.socket:
    # past the body deadline, so that a 408 is read rather than the read timing out first
    return socket.create_connection(("127.0.0.1", port), timeout=BODY_DEADLINE_S + 10)


def _post(content_type: bytes, length: int, extra: bytes = b"") -> bytes:
    return (
        b"POST /v1/classify HTTP/1.1\r\nHost: t\r\ncontent-type: " + content_type + b"\r\n"
        b"content-length: %d\r\n" % length + extra + b"\r\n"
    )


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One answer read off the connection: status, headers (lower-case names), body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk, "connection closed within the answer"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed the connection after its answer (a read that times out means it did not:
    what the client sends next would be read as the rest of the refused body)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize(
    ("case", "request_head", "sent_body", "status"),
    [
        # The front door's own deadline (fast_classify.ClassifyFrontDoor).
        ("front door 408", _post(b"application/json", 100), VALID[:20], 408),
        # Not the fast path's content type: FastAPI's route reads it, the body limit's deadline cuts it.
        ("route 408", _post(b"application/vnd.x+json", 100), VALID[:20], 408),
        # A client that waits for 100 Continue sends nothing more: refused before the body is read.
        ("413 before the body", _post(b"application/json", 5000, b"expect: 100-continue\r\n"), b"", 413),
    ],
)
def test_a_refusal_with_the_body_unread_closes_the_connection(
    live: int, case: str, request_head: bytes, sent_body: bytes, status: int
) -> None:
    with _connect(live) as sock:
        sock.sendall(request_head + sent_body)
        got, headers, body = _answer(sock)
        assert got == status, (case, body)
        assert headers.get("connection") == "close", (case, headers)
        assert json.loads(body)["error"]["field"] == "body"
        assert _closed(sock), case


def test_an_overload_refusal_before_the_body_closes_the_connection(live_server: Any) -> None:
    in_flight = live_server.front_door.in_flight

    def wait_for_count(count: int, seconds: float) -> int:
        deadline = time.monotonic() + seconds
        while in_flight.count != count and time.monotonic() < deadline:
            time.sleep(0.005)
        return in_flight.count

    assert wait_for_count(0, 10) == 0  # the earlier tests' requests have all left
    with _connect(live_server.port) as holder, _connect(live_server.port) as sock:
        holder.sendall(_post(b"application/json", 100) + VALID[:20])  # holds the one admission slot
        # admitted, waiting for its body (what a sleep guessed before)
        assert wait_for_count(1, BODY_DEADLINE_S) == 1, "the holder was not admitted"
        sock.sendall(_post(b"application/json", len(VALID), b"expect: 100-continue\r\n"))
        got, headers, body = _answer(sock)
        assert got == 503 and json.loads(body)["error"]["type"] == "overloaded", body
        assert headers.get("connection") == "close" and _closed(sock)
        assert _answer(holder)[0] == 408  # its slot is free again


def test_an_answered_request_keeps_its_connection(live: int) -> None:
    with _connect(live) as sock:
        sock.sendall(_post(b"application/json", len(VALID)) + VALID)
        got, headers, _ = _answer(sock)
        assert got == 200 and "connection" not in headers
        sock.sendall(GET_HEALTHZ)
        assert _answer(sock)[0] == 200


def test_a_transfer_coding_besides_chunked_is_refused_415_and_a_probe_never_for_its_coding(live: int) -> None:
    body = gzip.compress(VALID)
    chunked = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    head = b"POST /v1/classify HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
    with _connect(live) as sock:
        sock.sendall(head + b"transfer-encoding: gzip, chunked\r\n\r\n" + chunked)
        got, _, answer = _answer(sock)
    error = json.loads(answer)["error"]
    assert got == 415 and error["field"] == "Transfer-Encoding", answer  # was 400 "invalid JSON"
    assert error["type"] == "unsupported_media_type" and "gzip, chunked" in error["message"]
    conn = http.client.HTTPConnection("127.0.0.1", live, timeout=3)
    for method, path in [("GET", "/healthz"), ("HEAD", "/healthz"), ("GET", "/readyz")]:
        conn.request(method, path, headers={"Content-Encoding": "gzip"})
        response = conn.getresponse()
        response.read()
        assert response.status == 200, (method, path)
    conn.close()


def test_a_content_coding_on_a_second_header_line_is_refused_415(live: int) -> None:
    """`Content-Encoding: identity` then `Content-Encoding: gzip` is one list, `identity, gzip` (RFC 9110):
    only the first line was read, and the gzip body was refused as "not valid JSON" (400)."""
    body = gzip.compress(VALID)
    head = b"POST /v1/classify HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
    lines = b"content-encoding: identity\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(body)
    with _connect(live) as sock:
        sock.sendall(head + lines + body)
        got, _, answer = _answer(sock)
    error = json.loads(answer)["error"]
    assert got == 415 and error["field"] == "Content-Encoding", answer
    assert "identity, gzip" in error["message"], answer


@pytest.mark.parametrize(
    ("framing", "reason"),
    [
        (b"content-length: abc\r\n", "Invalid character in Content-Length"),
        (b"content-length: 2\r\ncontent-length: 2\r\n", "Duplicate Content-Length"),
        (b"content-length: 2\r\ntransfer-encoding: chunked\r\n", "Content-Length"),
    ],
)
def test_a_request_the_http_parser_refuses_gets_the_error_shape(
    live: int, framing: bytes, reason: str
) -> None:
    """uvicorn answered these before the app saw them with a text/plain "Invalid HTTP request received."."""
    with _connect(live) as sock:
        sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: t\r\n" + framing + b"\r\n{}")
        status, headers, body = _answer(sock)
        assert _closed(sock)
    assert status == 400 and headers["content-type"] == "application/json", (headers, body)
    assert headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request" and error["code"] == 400, error
    assert (
        error["message"].startswith("the request's HTTP framing is invalid: ") and reason in error["message"]
    )


def test_head_is_answered_wherever_get_is_and_kept_out_of_the_schema(live: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", live, timeout=3)
    statuses = {}
    for path in ["/metrics", "/v1/scenarios", "/", "/healthz"]:
        for method in ("GET", "HEAD"):
            conn.request(method, path)
            response = conn.getresponse()
            statuses[method, path] = (response.status, response.read())
    conn.request("GET", "/openapi.json")
    schema = json.loads(conn.getresponse().read())
    conn.close()
    for path in ["/metrics", "/v1/scenarios", "/", "/healthz"]:
        head, get = statuses["HEAD", path], statuses["GET", path]
        assert head[0] == get[0] and head[1] == b"", (path, head, get[0])  # 405 before
    assert statuses["GET", "/"][0] == 404 and statuses["GET", "/v1/scenarios"][0] == 200
    paths = schema["paths"]
    assert set(paths["/v1/scenarios"]) == {"get"} and "/metrics" not in paths and "/" not in paths


class _Faulty(FailingScenarioList):
    """The service, except that listing scenarios and classifying fail as a bug would."""

    async def classify(self, *args: Any) -> dict:
        raise RuntimeError("secret detail of a bug")


def _count(metrics_text: str, scenario: str, status: int) -> float:
    pattern = rf'^labelwise_requests_total\{{scenario="{scenario}",status="{status}"\}} (\S+)$'
    found = re.search(pattern, metrics_text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_a_missing_key_and_a_server_fault_are_counted_once(published_repo: ModelRepository) -> None:
    pytest.importorskip("ray.serve")
    import httpx

    from serving.api import create_api
    from serving.service import ClassifierService

    config = _config(published_repo, api_key="k3y")
    key = {"Authorization": "Bearer k3y"}

    async def scenario() -> str:
        service = ClassifierService(config)
        await asyncio.to_thread(service.registry.poll_once)
        app = create_api(_Faulty(service), config, service.metrics)
        targets = {"app": app, "front door": app.state.classify_front_door}
        for target in targets.values():
            transport = httpx.ASGITransport(app=target, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                no_key = await client.post(
                    "/v1/classify", content=VALID, headers={"content-type": "application/json"}
                )
                assert no_key.status_code == 401
                assert (await client.get("/v1/scenarios")).status_code == 401
                assert (await client.get("/v1/scenarios", headers=key)).status_code == 500
                for content_type in ("application/json", "application/vnd.x+json"):  # fast path, route
                    headers = {**key, "content-type": content_type}
                    response = await client.post("/v1/classify", content=VALID, headers=headers)
                    assert response.status_code == 500, response.text
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return (await client.get("/metrics")).text

    text = asyncio.run(scenario())
    # labelwise_requests_total counts classify requests: the classify 401, once per door (not counted
    # before), and not GET /v1/scenarios' 401 or 500 (which it counted for a while)
    assert _count(text, "_invalid", 401) == 2
    assert _count(text, "_invalid", 500) == 0
    # A classify fault is counted where counted() sees it, under its scenario, and nowhere else.
    assert _count(text, "frozen_two", 500) == 4


def test_refusals_off_the_classify_paths_are_not_classify_requests(published_repo: ModelRepository) -> None:
    """A scanner's GET /wp-login.php (404), a 401 on /v1/scenarios or a DELETE on nothing were counted in
    labelwise_requests_total, "classify requests by scenario and status", and so in the dashboards'
    request rate and error ratio. Refusals on classify paths still are, on /v1 and each compat route."""
    seen: dict[str, str] = {}

    async def check(client: Any) -> None:
        assert (await client.get("/wp-login.php")).status_code == 404
        assert (await client.delete("/favicon.ico")).status_code == 404
        assert (await client.get("/v1/scenarios")).status_code == 401
        assert (await client.delete("/v1/classify")).status_code == 405  # the classify path: counted
        for path in ("/v1/classify", "/classify", "/predict", "/v2/models/frozen_two/infer"):
            assert (await client.post(path, json={})).status_code == 401  # counted
        seen["metrics"] = (await client.get("/metrics")).text

    serve_in_process(published_repo, check, api_key="k3y")
    text = seen["metrics"]
    assert _count(text, "_invalid", 404) == 0
    assert _count(text, "_invalid", 405) == 1
    assert _count(text, "_invalid", 401) == 4
