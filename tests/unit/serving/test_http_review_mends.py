"""Mends of the HTTP layer found in review: the probes are never refused for load under a route prefix
(Ray Serve passes the prefix as root_path and leaves it in the path); a refusal made before routing
(overloaded, a body too large or compressed) is in the shape of the route it was for, the one that
route answers the same status in; HEAD is answered wherever GET is, on the compatibility routes too;
TEI's error_type is sent as TEI sends it (its ErrorType's variant names); and a compatibility route's
refusal made before counted() (validation, the API key, no default scenario) is counted once as
`_invalid`. In-process over a real ClassifierService on published tiny versions; a slot is held by a
classify call that waits until the test lets it go."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from model_repository import ModelRepository
from tests.unit.serving.test_request_path_mends import _count

JSON = {"content-type": "application/json"}
V1 = {"scenario": "frozen_two", "texts": ["a fine day"]}
V2_BODY = {"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["a fine day"]}]}
# (path, JSON body) of one request to each compatibility route that takes a body
COMPAT_POSTS = {
    "tei": ("/predict", {"inputs": "a fine day"}),
    "tei /": ("/", {"inputs": "a fine day"}),
    "tei /invocations": ("/invocations", {"inputs": "a fine day"}),
    "infinity": ("/classify", {"model": "frozen_two", "input": ["a fine day"]}),
    "kserve": ("/v2/models/frozen_two/infer", V2_BODY),
}
TEI_TYPES = {"Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty"}


def _shape(body: Any) -> str:
    """Which error shape a body is in: labelwise's, TEI's, Infinity's or KServe's."""
    if isinstance(body, dict) and set(body) == {"error", "error_type"}:
        assert body["error_type"] in TEI_TYPES, body
        return "tei"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}:
        return "infinity"
    if isinstance(error, dict) and {"type", "message", "code"} <= set(error):
        return "labelwise"
    if isinstance(body, dict) and set(body) == {"error"} and isinstance(error, str):
        return "kserve"
    raise AssertionError(f"no known error shape: {body!r}")


def _expected_shape(case: str) -> str:
    return case.split()[0]


class _Held:
    """The service, except that classify waits until `release` is set: the request holds its
    admission slot meanwhile (`entered` is set once it does)."""

    def __init__(self, service: Any) -> None:
        self._service = service
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)

    async def classify(self, *args: Any) -> dict:
        self.entered.set()
        await self.release.wait()
        return await self._service.classify(*args)


class _Faulty:
    """The service, except that classify fails as a bug would (a backend fault)."""

    def __init__(self, service: Any) -> None:
        self._service = service

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)

    async def classify(self, *args: Any) -> dict:
        raise RuntimeError("secret detail of a bug")


def _run(
    published_repo: ModelRepository,
    probe: Callable[..., Awaitable[Any]],
    wrap: Any = None,
    root_path: str = "",
    scenarios: tuple[str, ...] = ("frozen_two",),
    **fields: Any,
) -> Any:
    """probe(client, backend, app) over create_api on a ClassifierService (wrapped by `wrap`), served
    in-process with the given root_path (the path keeps it, as Ray Serve's proxy passes it)."""
    pytest.importorskip("ray.serve")
    import httpx

    from serving.api import create_api
    from serving.config import ServingConfig
    from serving.service import ClassifierService

    config = ServingConfig(
        repository=str(published_repo.root), scenarios=[{"name": n} for n in scenarios], **fields
    )

    async def scenario() -> Any:
        service = ClassifierService(config)
        await asyncio.to_thread(service.registry.poll_once)
        backend = wrap(service) if wrap is not None else service
        app = create_api(backend, config, service.metrics)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, root_path=root_path)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await probe(client, backend, app)

    return asyncio.run(scenario())


async def _holding_the_slot(client: Any, backend: _Held, prefix: str, then: Any) -> Any:
    """then() while one classify request holds the replica's only admission slot."""
    held = asyncio.ensure_future(client.post(f"{prefix}/v1/classify", json=V1))
    await asyncio.wait_for(backend.entered.wait(), 10)
    try:
        return await then()
    finally:
        backend.release.set()
        assert (await held).status_code == 200


# ---- 1. probes under a route prefix --------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_probes_are_never_refused_for_load_under_a_route_prefix(
    published_repo: ModelRepository, prefix: str
) -> None:
    probes = ["/healthz", "/readyz", "/metrics", "/health", "/v2/health/live", "/v2/health/ready"]

    async def probe(client: Any, backend: _Held, app: Any) -> dict:
        async def then() -> dict:
            got = {path: (await client.get(prefix + path)).status_code for path in probes}
            got["/v1/scenarios"] = (await client.get(f"{prefix}/v1/scenarios")).status_code
            return got

        return await _holding_the_slot(client, backend, prefix, then)

    got = _run(published_repo, probe, wrap=_Held, root_path=prefix, max_ongoing_requests=1)
    # The replica is full (an API request is refused) and every probe answers all the same: 503 before
    # under /api, where the path still held the prefix.
    assert got.pop("/v1/scenarios") == 503
    assert got == dict.fromkeys(probes, 200), got


def test_the_classify_fast_path_still_answers_under_a_route_prefix(published_repo: ModelRepository) -> None:
    async def probe(client: Any, backend: Any, app: Any) -> Any:
        return await client.post("/api/v1/classify", json=V1)

    response = _run(published_repo, probe, root_path="/api")
    assert response.status_code == 200 and response.json()["results"], response.text


# ---- 2. refusals before routing in the route's own shape ---------------------------------------


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_an_overload_refusal_is_in_the_routes_own_shape(published_repo: ModelRepository, prefix: str) -> None:
    async def probe(client: Any, backend: _Held, app: Any) -> dict:
        async def then() -> dict:
            got = {}
            for case, (path, body) in COMPAT_POSTS.items():
                got[case] = await client.post(prefix + path, json=body)
            got["labelwise"] = await client.post(f"{prefix}/v1/classify", json=V1)
            got["tei /info"] = await client.get(f"{prefix}/info")
            got["kserve /v2"] = await client.get(f"{prefix}/v2")
            got["labelwise GET /"] = await client.get(f"{prefix}/")
            return got

        return await _holding_the_slot(client, backend, prefix, then)

    got = _run(
        published_repo,
        probe,
        wrap=_Held,
        root_path=prefix,
        max_ongoing_requests=1,
        backpressure_status_code=429,
        retry_after_s=2,
    )
    for case, response in got.items():
        assert response.status_code == 429, (case, response.text)
        assert response.headers["retry-after"] == "2", case
        assert _shape(response.json()) == _expected_shape(case), (case, response.text)
    assert got["tei"].json()["error_type"] == "Overloaded"
    assert got["infinity"].json()["error"]["code"] == 429
    assert got["infinity"].json()["error"]["type"] == "overloaded"


def test_a_body_refused_before_routing_is_in_the_shape_its_route_answers_that_status_in(
    published_repo: ModelRepository,
) -> None:
    big = "x" * 2000

    async def chunks(data: bytes) -> Any:  # no Content-Length: the route's own limit cuts it (413)
        for i in range(0, len(data), 256):
            yield data[i : i + 256]

    async def probe(client: Any, backend: Any, app: Any) -> dict:
        got = {}
        for case, (path, body) in {**COMPAT_POSTS, "labelwise": ("/v1/classify", V1)}.items():
            padded = json.dumps({**body, "pad": big}).encode()
            declared = await client.post(path, content=padded, headers=JSON)
            streamed = await client.post(path, content=chunks(padded), headers=JSON)
            gzip = {**JSON, "content-encoding": "gzip"}
            coded = await client.post(path, content=json.dumps(body).encode(), headers=gzip)
            got[case] = declared, streamed, coded
        return got

    got = _run(published_repo, probe, max_body_bytes=1024)
    for case, (declared, streamed, coded) in got.items():
        # A Content-Length over the limit (refused before routing) and a chunked body that passes it
        # (refused by the route, which has read it): one status, one shape.
        assert declared.status_code == streamed.status_code == 413, (case, declared.text, streamed.text)
        assert _shape(declared.json()) == _shape(streamed.json()) == _expected_shape(case), case
        assert declared.headers["connection"] == "close", case
        assert coded.status_code == 415 and _shape(coded.json()) == _expected_shape(case), (case, coded.text)
    infinity = got["infinity"][0].json()["error"]
    assert infinity["code"] == 413 and infinity["param"] == "body", infinity
    assert got["tei"][0].json()["error_type"] == "Validation"


def test_the_ecosystem_of_a_path_is_the_one_its_routes_answer_in(published_repo: ModelRepository) -> None:
    """Each compatibility operation in /openapi.json, and the ones kept out of it, is mapped to the
    ecosystem of its tag: the middlewares and the routes agree on the shape of every path."""
    from serving.api.ecosystems import ecosystem_of

    async def probe(client: Any, backend: Any, app: Any) -> dict:
        return (await client.get("/openapi.json")).json()

    schema = _run(published_repo, probe)
    tags = {"compat: TEI": "tei", "compat: Infinity": "infinity", "compat: KServe v2 / Triton": "kserve"}
    operations = [
        (method.upper(), path, tags.get(next(iter(op.get("tags") or []), "")))
        for path, methods in schema["paths"].items()
        for method, op in methods.items()
    ]
    operations += [("POST", "/", "tei"), ("POST", "/invocations", "tei"), ("GET", "/", None)]
    for method, path, expected in operations:
        concrete = path.replace("{scenario}", "frozen_two").replace("{version}", "1")
        for root in ("", "/api"):
            scope = {"type": "http", "method": method, "path": root + concrete, "root_path": root}
            ecosystem = ecosystem_of(scope)
            assert (ecosystem.name if ecosystem else None) == expected, (method, path, root)
    assert {e for _, _, e in operations} == {"tei", "infinity", "kserve", None}


# ---- 3. HEAD wherever GET --------------------------------------------------------------------------


def test_head_is_answered_wherever_get_is(published_repo: ModelRepository) -> None:
    async def probe(client: Any, backend: Any, app: Any) -> dict:
        schema = (await client.get("/openapi.json")).json()
        paths = [p for p, methods in schema["paths"].items() if "get" in methods] + ["/metrics", "/"]
        got = {}
        for path in paths:
            concrete = path.replace("{scenario}", "frozen_two").replace("{version}", "1")
            got[path] = (await client.get(concrete)).status_code, await client.head(concrete)
        return got

    got = _run(published_repo, probe)
    assert {"/info", "/v2", "/v2/models/{scenario}/versions/{version}/ready"} <= set(got)
    for path, (get_status, head) in got.items():
        assert head.status_code == get_status != 405, (path, head.status_code, get_status)


def test_head_on_a_compat_route_is_behind_the_key_and_out_of_the_schema(
    published_repo: ModelRepository,
) -> None:
    async def probe(client: Any, backend: Any, app: Any) -> tuple[int, int, dict]:
        no_key = (await client.head("/v2/models/frozen_two")).status_code
        key = {"Authorization": "Bearer k3y"}
        with_key = (await client.head("/v2/models/frozen_two/ready", headers=key)).status_code
        return no_key, with_key, (await client.get("/openapi.json")).json()

    no_key, with_key, schema = _run(published_repo, probe, api_key="k3y")
    assert (no_key, with_key) == (401, 200)
    assert all("head" not in methods for methods in schema["paths"].values())


# ---- 4. TEI's error_type as TEI sends it ------------------------------------------------------------


def test_tei_error_types_are_the_variant_names_tei_sends(published_repo: ModelRepository) -> None:
    async def probe(client: Any, backend: Any, app: Any) -> dict:
        return {
            "validation": await client.post("/predict", json={"inputs": ["q", "a"]}),
            "backend": await client.post("/predict", json={"inputs": "a fine day"}),
            "schema": (await client.get("/openapi.json")).json(),
        }

    got = _run(published_repo, probe, wrap=_Faulty)
    assert got["validation"].status_code == 422 and got["validation"].json()["error_type"] == "Validation"
    assert got["backend"].status_code == 424 and got["backend"].json()["error_type"] == "Backend"
    documented = got["schema"]["components"]["schemas"]["TeiErrorBody"]["properties"]["error_type"]
    assert set(documented["enum"]) == TEI_TYPES


def test_tei_health_says_unhealthy_as_tei_does(published_repo: ModelRepository) -> None:
    class NotReady:
        def __init__(self, service: Any) -> None:
            self._service = service

        def __getattr__(self, name: str) -> Any:
            return getattr(self._service, name)

        async def readiness(self) -> dict:
            return {"ready": False, "missing": ["frozen_two"]}

    async def probe(client: Any, backend: Any, app: Any) -> Any:
        return await client.get("/health")

    response = _run(published_repo, probe, wrap=NotReady)
    assert response.status_code == 503
    assert response.json() == {"error": "unhealthy", "error_type": "Unhealthy"}


# ---- 5. compat refusals before counted() counted once ----------------------------------------------


def test_compat_refusals_before_counted_are_counted_once_as_invalid(published_repo: ModelRepository) -> None:
    key = {"Authorization": "Bearer k3y"}
    infer = "/v2/models/frozen_two/infer"

    async def probe(client: Any, backend: Any, app: Any) -> str:
        before = [
            # no key: 401 on each ecosystem's route
            ("/predict", None, {"inputs": "hi"}, 401),
            ("/classify", None, {"model": "frozen_two", "input": ["hi"]}, 401),
            (infer, None, V2_BODY, 401),
            # refused before the route knows its scenario: 422 each
            ("/predict", "frozen_two", {"inputs": "hi", "truncation_direction": "left"}, 422),
            ("/predict", "frozen_two", {"inputs": ["q", "a"]}, 422),
            ("/predict", None, {"inputs": "hi"}, 422),  # two scenarios served, no default
            ("/classify", None, {"input": ["hi"]}, 422),  # the same on Infinity
        ]
        for path, scenario, body, status in before:
            headers = {**(key if status != 401 else {})}
            if scenario is not None:
                headers["X-Labelwise-Scenario"] = scenario
            response = await client.post(path, json=body, headers=headers)
            assert response.status_code == status, (path, body, response.text)
        # Refused inside counted(): under the scenario, not again as _invalid.
        too_many = {"model": "frozen_two", "input": ["hi"] * 3}
        assert (await client.post("/classify", json=too_many, headers=key)).status_code == 422
        bad_output = {**V2_BODY, "outputs": [{"name": "nope"}]}
        assert (await client.post(infer, json=bad_output, headers=key)).status_code == 400
        # The KServe probes are never counted.
        assert (await client.get("/v2/health/ready")).status_code == 200
        return (await client.get("/metrics")).text

    text = _run(
        published_repo,
        probe,
        scenarios=("frozen_two", "frozen_three"),
        api_key="k3y",
        max_texts_per_request=2,
    )
    assert _count(text, "_invalid", 401) == 3  # 0 before
    assert _count(text, "_invalid", 422) == 4  # 0 before
    assert _count(text, "frozen_two", 422) == 2  # Infinity's too many texts; KServe's unknown output
    assert _count(text, "_invalid", 400) == 0


def test_a_compat_backend_fault_is_counted_once(published_repo: ModelRepository) -> None:
    async def probe(client: Any, backend: Any, app: Any) -> str:
        # TEI answers a backend fault 424; counted with labelwise's own status, 500
        for path, body, status in (
            ("/predict", {"inputs": "hi"}, 424),
            ("/v2/models/frozen_two/infer", V2_BODY, 500),
        ):
            assert (await client.post(path, json=body)).status_code == status
        return (await client.get("/metrics")).text

    text = _run(published_repo, probe, wrap=_Faulty)
    assert _count(text, "frozen_two", 500) == 2 and _count(text, "_invalid", 500) == 0
