"""The classify fast path (serving/api/fast_classify.py) answers exactly as the FastAPI route does, and hands
everything else to it: the same requests sent to the app with and without it, on a real ClassifierService
over published tiny versions, in-process."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import pytest

from model_repository import ModelRepository

from .conftest import read_asgi_body

LONG = " ".join(["word"] * 40)  # over the tiny versions' 16 tokens, under max_chars_per_text
VALID = {"scenario": "frozen_two", "texts": ["great value", "awful"]}
JSON = {"Content-Type": "application/json"}

# (name, method, headers, body): every answer is compared between the two apps
CASES: list[tuple[str, str, dict[str, str], Any]] = [
    ("valid", "POST", JSON, VALID),
    ("options", "POST", JSON, {**VALID, "top_k": 1, "raw_scores": True, "abstain": True}),
    ("charset", "POST", {"Content-Type": "application/json; charset=utf-8"}, VALID),
    ("truncated", "POST", JSON, {"scenario": "frozen_two", "texts": [LONG]}),
    ("too long, no truncation", "POST", JSON, {"scenario": "frozen_two", "texts": [LONG], "truncate": False}),
    ("unknown scenario", "POST", JSON, {"scenario": "nope", "texts": ["hi"]}),
    ("too many texts", "POST", JSON, {"scenario": "frozen_two", "texts": ["a"] * 5}),
    ("text over max chars", "POST", JSON, {"scenario": "frozen_two", "texts": ["x" * 300]}),
    ("empty texts", "POST", JSON, {"scenario": "frozen_two", "texts": []}),
    ("empty text", "POST", JSON, {"scenario": "frozen_two", "texts": [""]}),
    ("extra field", "POST", JSON, {**VALID, "colour": "red"}),
    ("top_k 0", "POST", JSON, {**VALID, "top_k": 0}),
    ("scenario not a string", "POST", JSON, {"scenario": 3, "texts": ["hi"]}),
    ("not JSON", "POST", JSON, b"{scenario: frozen_two"),
    ("not UTF-8", "POST", JSON, b'{"scenario": "frozen_two", "texts": ["\xff"]}'),
    ("JSON list", "POST", JSON, b"[1, 2]"),
    ("empty body", "POST", JSON, b""),
    ("null body", "POST", JSON, b"null"),
    ("text/plain", "POST", {"Content-Type": "text/plain"}, VALID),
    ("no content type", "POST", {}, VALID),
    ("GET", "GET", {}, None),
    ("gzip", "POST", {**JSON, "Content-Encoding": "gzip"}, gzip.compress(json.dumps(VALID).encode())),
    ("says gzip, is not", "POST", {**JSON, "Content-Encoding": "gzip"}, VALID),
    ("trailing slash", "POST", JSON, VALID),
]
COMPARED_HEADERS = (
    "content-type",
    "content-length",
    "retry-after",
    "x-labelwise-max-texts-per-request",
    "allow",
    "www-authenticate",
)


def _config(repo: ModelRepository, **extra: Any):
    from serving.config import ServingConfig

    return ServingConfig(
        repository=str(repo.root),
        scenarios=[{"name": "frozen_two"}],
        max_texts_per_request=4,
        max_chars_per_text=200,
        **extra,
    )


async def _answers(app: Any, cases: list[tuple[str, str, dict[str, str], Any]]) -> dict[str, tuple]:
    import httpx

    out = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for name, method, headers, body in cases:
            content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
            path = "/v1/classify/" if name == "trailing slash" else "/v1/classify"
            response = await client.request(method, path, headers=headers, content=content)
            kept = {h: response.headers.get(h) for h in COMPARED_HEADERS}
            out[name] = (response.status_code, response.content, kept)
    return out


def _both(repo: ModelRepository, cases: list, **extra: Any) -> tuple[dict, dict]:
    pytest.importorskip("ray.serve")
    from serving.api import create_api
    from serving.service import ClassifierService

    config = _config(repo, **extra)

    async def scenario() -> tuple[dict, dict]:
        service = ClassifierService(config)
        await asyncio.to_thread(service.registry.poll_once)
        app = create_api(service, config, service.metrics)
        fast = await _answers(app, cases)
        front = await _answers(app.state.classify_front_door, cases)
        assert front == fast, [name for name in fast if front[name] != fast[name]]
        route = await _answers(create_api(service, config, service.metrics, fast_classify=False), cases)
        return fast, route

    return asyncio.run(scenario())


def test_the_fast_path_answers_every_request_exactly_as_the_route(published_repo: ModelRepository) -> None:
    fast, route = _both(published_repo, CASES)
    for name, *_ in CASES:
        assert fast[name] == route[name], name
    # The cases cover what they say: answers, refusals by the backend and by validation.
    statuses = {name: fast[name][0] for name in fast}
    assert statuses["valid"] == statuses["options"] == statuses["truncated"] == 200
    assert json.loads(fast["truncated"][1])["truncated"] == [True]
    assert statuses["too long, no truncation"] == 413
    assert statuses["unknown scenario"] == 404
    assert statuses["too many texts"] == statuses["text over max chars"] == statuses["extra field"] == 422
    assert statuses["not JSON"] == 400
    not_json = json.loads(fast["not JSON"][1])["error"]
    # Named as the body, with the parser's reason and where it stopped (not the offset as a field name).
    assert not_json["field"] == "body" and not_json["message"].startswith("body: not valid JSON (")
    assert "at character 1)" in not_json["message"], not_json
    # A body that is not UTF-8 is named as the body too, as on the compat routes.
    not_utf8 = json.loads(fast["not UTF-8"][1])["error"]
    assert statuses["not UTF-8"] == 400 and not_utf8["field"] == "body", not_utf8
    assert "not UTF-8" in not_utf8["message"], not_utf8
    # An empty body is not JSON either: 400 on the body saying so, not 422 "body: Field required".
    empty = json.loads(fast["empty body"][1])["error"]
    assert statuses["empty body"] == 400 and empty["field"] == "body", empty
    assert empty["message"].startswith("body: empty"), empty
    # and so is a JSON null, which the same message names (FastAPI 0.165 validates null as the model)
    assert fast["null body"][:2] == fast["empty body"][:2]
    assert statuses["GET"] == 405
    # A body not declared as JSON, or compressed, is 415 naming the header (not "not a dictionary").
    for name, header in [
        ("text/plain", "Content-Type"),
        ("no content type", "Content-Type"),
        ("gzip", "Content-Encoding"),
        ("says gzip, is not", "Content-Encoding"),
    ]:
        error = json.loads(fast[name][1])["error"]
        assert statuses[name] == 415 and error["field"] == header, (name, error)
        assert error["type"] == "unsupported_media_type", error
    # /v1/classify/ is an unknown path in the error shape, not a redirect.
    assert statuses["trailing slash"] == 404 and json.loads(fast["trailing slash"][1])["error"]["type"]
    assert json.loads(fast["too many texts"][1])["error"]["field"] == "texts"


def test_with_an_api_key_only_the_right_bearer_key_is_answered(published_repo: ModelRepository) -> None:
    keyed = [
        ("no key", "POST", JSON, VALID),
        ("wrong key", "POST", {**JSON, "Authorization": "Bearer nope"}, VALID),
        ("not bearer", "POST", {**JSON, "Authorization": "Basic k3y"}, VALID),
        ("right key", "POST", {**JSON, "Authorization": "Bearer k3y"}, VALID),
        ("right key, lower-case scheme", "POST", {**JSON, "Authorization": "bearer k3y"}, VALID),
    ]
    fast, route = _both(published_repo, keyed, api_key="k3y")
    assert fast == route
    assert [fast[name][0] for name, *_ in keyed] == [401, 401, 401, 200, 200]
    assert [fast[name][2]["www-authenticate"] for name, *_ in keyed] == ["Bearer"] * 3 + [None] * 2


def test_the_middleware_answers_valid_requests_itself_and_replays_the_rest_to_the_app(
    published_repo: ModelRepository,
) -> None:
    pytest.importorskip("ray.serve")
    import httpx

    from serving.api.fast_classify import FastClassifyMiddleware
    from serving.service import ClassifierService

    config = _config(published_repo)
    reached: list[bytes] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:  # what FastAPI would be
        reached.append(await read_asgi_body(receive))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def scenario() -> list[int]:
        service = ClassifierService(config)
        await asyncio.to_thread(service.registry.poll_once)
        middleware = FastClassifyMiddleware(app, service, config, service.metrics)
        transport = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [
                (await client.post("/v1/classify", json=VALID)).status_code,
                (await client.post("/v1/classify", content=b'{"scenario": 1}', headers=JSON)).status_code,
                (await client.post("/v1/scenarios", json=VALID)).status_code,
            ]

    assert asyncio.run(scenario()) == [200, 299, 299]
    assert reached[0] == b'{"scenario": 1}'  # the body it had read, replayed whole
    assert json.loads(reached[1]) == VALID


def test_the_front_door_shares_the_admission_count_and_leaves_refusals_to_the_app(
    published_repo: ModelRepository,
) -> None:
    """ClassifyFrontDoor (in front of the whole app on a direct-ingress server): a replica at its limit,
    or a body over max_body_bytes, is refused by the app's own middlewares, in the error shape."""
    pytest.importorskip("ray.serve")
    import httpx

    from serving.api import create_api
    from serving.service import ClassifierService

    config = _config(published_repo, max_ongoing_requests=2, max_body_bytes=1024)

    async def scenario() -> list[tuple[int, str | None]]:
        service = ClassifierService(config)
        await asyncio.to_thread(service.registry.poll_once)
        front = create_api(service, config, service.metrics).state.classify_front_door
        out = []
        transport = httpx.ASGITransport(app=front)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

            async def post(body: Any) -> None:
                response = await client.post("/v1/classify", json=body)
                error = response.json().get("error", {}).get("type") if response.status_code != 200 else None
                out.append((response.status_code, error))

            await post(VALID)
            assert front.in_flight.count == 0  # released after the answer
            front.in_flight.count = 2  # two requests in flight, counted by either door
            await post(VALID)
            front.in_flight.count = 0
            await post({"scenario": "frozen_two", "texts": ["x" * 150] * 8})  # body over 1024 bytes
            await post({"scenario": "frozen_two", "texts": "not a list"})  # replayed to the route
            assert front.in_flight.count == 0
        return out

    assert asyncio.run(scenario()) == [
        (200, None),
        (503, "overloaded"),
        (413, "body_too_large"),
        (422, "invalid_request"),
    ]


def test_probes_take_head_refusals_before_routing_are_counted_and_openapi_names_what_is_answered(
    published_repo: ModelRepository,
) -> None:
    pytest.importorskip("ray.serve")
    import httpx

    from serving.api import create_api
    from serving.service import ClassifierService

    config = _config(published_repo, max_body_bytes=1024)

    async def scenario() -> dict[str, Any]:
        service = ClassifierService(config)
        await asyncio.to_thread(service.registry.poll_once)
        app = create_api(service, config, service.metrics)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            big = json.dumps({"scenario": "frozen_two", "texts": ["x" * 2000]}).encode()
            return {
                "head healthz": await client.head("/healthz"),
                "head readyz": await client.head("/readyz"),
                "too big": await client.post("/v1/classify", content=big, headers=JSON),
                "metrics": (await client.get("/metrics")).text,
                "openapi": (await client.get("/openapi.json")).json(),
            }

    got = asyncio.run(scenario())
    assert got["head healthz"].status_code == 200 and got["head readyz"].status_code == 200
    assert got["too big"].status_code == 413
    # A refusal made before routing is counted like any other refused request.
    assert 'labelwise_requests_total{scenario="_invalid",status="413"} 1.0' in got["metrics"]
    paths = got["openapi"]["paths"]
    assert {"400", "413", "415", "422", "504"} <= set(paths["/v1/classify"]["post"]["responses"])
    assert {"401", "429", "503"} <= set(paths["/v1/scenarios"]["get"]["responses"])
    schemas = got["openapi"]["components"]["schemas"]
    raw = schemas["ClassifyResponse"]["properties"]["raw_scores"]
    assert (
        "LabelLogit" in json.dumps(raw)
        and "logit" in schemas["LabelLogit"]["properties"]["score"]["description"]
    )


def test_a_client_that_leaves_cancels_its_rows_and_frees_its_slot(published_repo: ModelRepository) -> None:
    """The front door skips Ray's per-request wrapper, which cancels a request whose client left: it does
    that itself, so the rows of a client that gave up are not run and its admission slot is freed."""
    pytest.importorskip("ray.serve")
    import threading
    import time

    from serving.api import create_api
    from serving.service import ClassifierService

    config = _config(published_repo, max_concurrent_batches=1)
    body = json.dumps({"scenario": "frozen_two", "texts": ["first text", "second text"]}).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/classify",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }

    async def scenario() -> tuple[list[int], list[dict], int]:
        service = ClassifierService(config)
        await asyncio.to_thread(service.registry.poll_once)
        ran: list[int] = []
        run = service.batcher._run
        started, gate = threading.Event(), threading.Event()

        def slow(rows):  # type: ignore[no-untyped-def]  # the stayer's pass holds until the others left
            started.set()
            gate.wait(10)
            ran.append(len(rows))
            return run(rows)

        service.batcher._run = slow
        front = create_api(service, config, service.metrics).state.classify_front_door
        sent: list[dict] = []

        async def client(leaves_after: float | None) -> None:
            messages = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive() -> dict:
                if messages:
                    return messages.pop()
                await asyncio.sleep(leaves_after if leaves_after is not None else 30)
                return {"type": "http.disconnect"}

            async def send(message: dict) -> None:
                sent.append({"leaves": leaves_after, **message})

            await front(dict(scope), receive, send)

        stayer = asyncio.ensure_future(client(None))  # its pass runs first, held
        deadline = time.monotonic() + 10
        while not started.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        assert started.is_set(), "the stayer's pass never started"
        await asyncio.gather(*(client(0.1) for _ in range(4)))  # give up at 0.1 s, before their rows run
        gate.set()
        await stayer
        return ran, sent, front.in_flight.count

    ran, sent, in_flight = asyncio.run(scenario())
    assert ran == [2]  # only the client that stayed had its rows run
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200]
    assert all(m["leaves"] is None for m in sent) and in_flight == 0


@pytest.mark.parametrize("front_door", [True, False])
def test_a_body_that_stops_arriving_is_answered_408_and_frees_its_slot(
    published_repo: ModelRepository, front_door: bool
) -> None:
    """A client that sends part of its body and then nothing would hold an admission slot as long as its
    connection lives: the body has request_timeout_s to arrive, then the answer is 408 on `body`."""
    pytest.importorskip("ray.serve")
    from serving.api import create_api
    from serving.service import ClassifierService

    config = _config(published_repo, request_timeout_s=0.3)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/classify",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
    }

    async def scenario() -> tuple[list[dict], int]:
        service = ClassifierService(config)
        app = create_api(service, config, service.metrics)
        target = app.state.classify_front_door if front_door else app
        parts = [{"type": "http.request", "body": b'{"scenario": "fro', "more_body": True}]
        sent: list[dict] = []

        async def receive() -> dict:
            if parts:
                return parts.pop()
            await asyncio.sleep(30)  # the rest never comes
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        await asyncio.wait_for(target(dict(scope), receive, send), timeout=10)
        count = app.state.classify_front_door.in_flight.count
        return sent, count

    sent, in_flight = asyncio.run(scenario())
    assert sent[0]["status"] == 408 and in_flight == 0
    error = json.loads(sent[1]["body"])["error"]
    assert error["type"] == "request_timeout" and error["field"] == "body", error


def test_only_application_json_types_are_read_as_json_on_both_paths(published_repo: ModelRepository) -> None:
    """FastAPI reads application/json and application/*+json as JSON, nothing else: text/x+json is a body
    not declared as JSON (415 on Content-Type), not a JSON body that is "not a valid dictionary" (422)."""
    cases = [
        ("text/x+json", "POST", {"Content-Type": "text/x+json"}, VALID),
        ("application/vnd.x+json", "POST", {"Content-Type": "application/vnd.x+json"}, VALID),
    ]
    fast, route = _both(published_repo, cases)
    assert fast == route
    error = json.loads(fast["text/x+json"][1])["error"]
    assert fast["text/x+json"][0] == 415 and error["field"] == "Content-Type", error
    assert fast["application/vnd.x+json"][0] == 200


def test_top_k_takes_an_integral_number_on_both_paths(published_repo: ModelRepository) -> None:
    """The schema says `type: integer`, which JSON Schema meets with 1.0; 1.5, true and "1" stay refused
    as before, by the same message."""
    values = ["1", "1.0", "2", "2e0", "1.5", "true", '"1"', "0.0"]
    body = '{"scenario": "frozen_two", "texts": ["great value", "awful"], "top_k": %s}'
    fast, route = _both(published_repo, [(v, "POST", JSON, (body % v).encode()) for v in values])
    assert fast == route
    assert fast["1.0"] == fast["1"] and fast["2e0"] == fast["2"]  # was 422 "should be a valid integer"
    assert fast["1"][0] == 200 and [len(labels) for labels in json.loads(fast["1"][1])["results"]] == [1, 1]
    for value in ("1.5", "true", '"1"'):
        error = json.loads(fast[value][1])["error"]
        assert fast[value][0] == 422 and error["message"] == "top_k: Input should be a valid integer", error
    below = json.loads(fast["0.0"][1])["error"]
    assert fast["0.0"][0] == 422 and "greater than or equal to 1" in below["message"], below


def test_openapi_keeps_top_k_an_integer_of_at_least_one(published_repo: ModelRepository) -> None:
    pytest.importorskip("ray.serve")
    from serving.api import create_api
    from serving.service import ClassifierService

    config = _config(published_repo)
    service = ClassifierService(config)
    schema = create_api(service, config, service.metrics).openapi()
    top_k = schema["components"]["schemas"]["ClassifyRequest"]["properties"]["top_k"]
    assert {"type": "integer", "minimum": 1} in top_k["anyOf"], top_k
