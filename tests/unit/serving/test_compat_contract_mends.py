"""Review mends of the compatibility contract: KServe names, datatypes and ids that are not valid Unicode
are refused (a lone surrogate echoed in an answer was a bare 500); a 405 or 404 on a compatibility path
is in its ecosystem's shape, with HEAD in Allow where GET is; the unversioned KServe routes take no
`version` query parameter; TEI's /health documents its empty 200. In-process over a real
ClassifierService on published tiny versions (create_api, httpx's ASGI transport)."""

from __future__ import annotations

from typing import Any

import pytest

from model_repository import ModelRepository
from tests.unit.serving.test_http_review_mends import V2_BODY, _run, _shape

INFER = "/v2/models/frozen_two/infer"
LONE = "\ud800"


def _v2(**tensor: Any) -> dict[str, Any]:
    return {"inputs": [{**V2_BODY["inputs"][0], **tensor}]}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_v2(datatype=LONE), "inputs.0.datatype"),
        (_v2(name=LONE), "inputs.0.name"),
        ({**V2_BODY, "id": LONE}, "id"),
        ({**V2_BODY, "outputs": [{"name": LONE}]}, "outputs.0.name"),
    ],
)
def test_kserve_strings_that_are_not_unicode_are_refused_in_kserves_shape(
    published_repo: ModelRepository, body: dict[str, Any], field: str
) -> None:
    import json

    raw = json.dumps(
        body
    )  # ensure_ascii: the lone surrogate travels as the escape \ud800, as a client sends it
    assert "\\ud800" in raw

    async def probe(client: Any, backend: Any, app: Any) -> Any:
        return await client.post(INFER, content=raw, headers={"content-type": "application/json"})

    answer = _run(published_repo, probe)
    assert answer.status_code in (400, 422), answer.text
    assert _shape(answer.json()) == "kserve"
    assert field in answer.json()["error"] and "lone surrogate" in answer.json()["error"]
    assert answer.headers.get("x-request-id")


def test_a_wrong_datatype_is_named_as_sent(published_repo: ModelRepository) -> None:
    async def probe(client: Any, backend: Any, app: Any) -> Any:
        return await client.post(INFER, json=_v2(datatype="FP32"))

    answer = _run(published_repo, probe)
    assert answer.status_code == 400
    assert answer.json() == {"error": "inputs.0.datatype: 'FP32'; the texts are BYTES"}


@pytest.mark.parametrize(
    ("method", "path", "shape"),
    [
        ("DELETE", INFER, "kserve"),
        ("GET", "/predict", "tei"),
        ("POST", "/info", "tei"),
        ("GET", "/classify", "infinity"),
        ("PUT", "/v1/classify", "labelwise"),
    ],
)
def test_a_method_a_compat_path_does_not_take_is_answered_in_its_shape(
    published_repo: ModelRepository, method: str, path: str, shape: str
) -> None:
    async def probe(client: Any, backend: Any, app: Any) -> Any:
        return await client.request(method, path)

    answer = _run(published_repo, probe)
    assert answer.status_code == 405
    assert _shape(answer.json()) == shape
    assert answer.headers["allow"]


def test_allow_names_head_where_get_is_taken(published_repo: ModelRepository) -> None:
    async def probe(client: Any, backend: Any, app: Any) -> dict[str, str]:
        allowed = {}
        for path in ("/healthz", "/readyz", "/info", "/health", "/v2/models/frozen_two"):
            answer = await client.post(path, json={})
            assert answer.status_code == 405, (path, answer.status_code)
            allowed[path] = answer.headers["allow"]
            assert (await client.head(path)).status_code == 200, path
        return allowed

    for path, allow in _run(published_repo, probe).items():
        assert {"GET", "HEAD"} <= set(allow.split(", ")), (path, allow)


def test_allow_names_every_method_of_a_path_that_several_routes_share(
    published_repo: ModelRepository,
) -> None:
    """`/` is labelwise's root (GET, HEAD) and TEI's predict (POST): a 405 there names all three, not only
    the methods of the first route Starlette matched."""

    async def probe(client: Any, backend: Any, app: Any) -> dict[str, str]:
        allowed = {}
        for method, path in (("PUT", "/"), ("DELETE", "/"), ("PUT", "/predict"), ("POST", "/healthz")):
            answer = await client.request(method, path)
            assert answer.status_code == 405, (method, path, answer.status_code)
            allowed[f"{method} {path}"] = answer.headers["allow"]
        return allowed

    assert _run(published_repo, probe) == {
        "PUT /": "GET, HEAD, POST",
        "DELETE /": "GET, HEAD, POST",
        "PUT /predict": "POST",
        "POST /healthz": "GET, HEAD",
    }


def test_the_unversioned_kserve_routes_take_no_version_query_parameter(
    published_repo: ModelRepository,
) -> None:
    async def probe(client: Any, backend: Any, app: Any) -> tuple[Any, ...]:
        schema = (await client.get("/openapi.json")).json()
        metadata = await client.get("/v2/models/frozen_two?version=7")
        ready = await client.get("/v2/models/frozen_two/ready?version=7")
        infer = await client.post(f"{INFER}?version=7", json=V2_BODY)
        pinned = await client.get("/v2/models/frozen_two/versions/7")
        return schema, metadata, ready, infer, pinned

    schema, metadata, ready, infer, pinned = _run(published_repo, probe)
    for path in ("/v2/models/{scenario}", "/v2/models/{scenario}/ready", "/v2/models/{scenario}/infer"):
        for operation in schema["paths"][path].values():
            names = {p["name"] for p in operation.get("parameters", [])}
            assert "version" not in names, (path, names)
    assert metadata.status_code == ready.status_code == infer.status_code == 200
    assert metadata.json()["versions"] == ["1"]
    assert pinned.status_code == 404 and _shape(pinned.json()) == "kserve"


def test_tei_health_documents_its_empty_200(published_repo: ModelRepository) -> None:
    async def probe(client: Any, backend: Any, app: Any) -> tuple[Any, Any]:
        return (await client.get("/openapi.json")).json(), await client.get("/health")

    schema, health = _run(published_repo, probe)
    ok = schema["paths"]["/health"]["get"]["responses"]["200"]
    assert not ok.get("content"), ok
    assert health.status_code == 200 and health.content == b""


class _NotFinite:
    """The service, except that classify fails as the engine does on a NaN score (TEI's own Backend case)."""

    def __init__(self, service: Any) -> None:
        self._service = service

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)

    async def classify(self, *args: Any) -> dict:
        from serving.errors import ScoresNotFiniteError

        raise ScoresNotFiniteError("scenario 'frozen_two' version 1 gave non-finite scores")


def test_a_tei_backend_failure_is_424_backend_as_tei_answers_it(published_repo: ModelRepository) -> None:
    """TEI maps ErrorType::Backend to 424 FAILED_DEPENDENCY (router/src/http/server.rs); a 500 Backend is
    no answer TEI gives. /v1 keeps its 500."""

    async def probe(client: Any, backend: Any, app: Any) -> tuple[Any, ...]:
        tei = [
            await client.post(path, json={"inputs": "a fine day"})
            for path in ("/predict", "/", "/invocations")
        ]
        v1 = await client.post("/v1/classify", json={"scenario": "frozen_two", "texts": ["a fine day"]})
        return tei, v1, (await client.get("/openapi.json")).json()

    tei, v1, schema = _run(published_repo, probe, wrap=_NotFinite)
    for answer in tei:
        assert answer.status_code == 424, answer.text
        assert answer.json()["error_type"] == "Backend"
        assert "non-finite" not in answer.text  # an internal detail stays in the log
    assert v1.status_code == 500
    documented = schema["paths"]["/predict"]["post"]["responses"]
    assert "424" in documented and "500" not in documented


@pytest.mark.parametrize("sent", ["+19", " 19", "1_9", "19 ", "１９"])
def test_a_binary_header_size_that_is_not_ascii_digits_is_named_as_the_header(sent: str) -> None:
    """int() took "+19", " 19", "1_9" and fullwidth digits for 19, and a size so spelled that was wrong was
    blamed on the JSON header ('not valid JSON'): anything but ASCII digits is refused as the header."""
    from serving.api.compat import v2_binary_tensors
    from serving.errors import InvalidRequestError

    header = b'{"inputs": []}     '  # 19 bytes: the size each spelling above means
    with pytest.raises(InvalidRequestError, match=r"^Inference-Header-Content-Length: .* is not the size"):
        v2_binary_tensors(header, sent)
    assert v2_binary_tensors(header, "19") == {"inputs": []}


def test_a_tei_request_past_request_timeout_s_is_504_overloaded(published_repo: ModelRepository) -> None:
    """TEI has no timeout of its own; its Backend is 424 (router/src/http/server.rs), so 504 Backend was an
    answer TEI never gives. A timeout keeps our 504 and says Overloaded: the request was not served in time,
    its work is cancelled, and a TEI client backs off and retries it."""
    from tests.unit.serving.test_http_review_mends import _Held

    async def probe(client: Any, backend: Any, app: Any) -> tuple[Any, ...]:
        tei = await client.post("/predict", json={"inputs": "a fine day"})
        v1 = await client.post("/v1/classify", json={"scenario": "frozen_two", "texts": ["a fine day"]})
        return tei, v1

    tei, v1 = _run(published_repo, probe, wrap=_Held, request_timeout_s=0.2)
    assert tei.status_code == 504, tei.text
    assert tei.json() == {
        "error": "not answered within 0.2 s (request_timeout_s)",
        "error_type": "Overloaded",
    }
    assert v1.status_code == 504 and v1.json()["error"]["type"] == "timeout"


def test_every_kserve_route_says_an_unknown_model_is_not_found_in_one_wording(
    published_repo: ModelRepository,
) -> None:
    """The metadata and ready routes said 'unknown model' and infer the registry's 'unknown scenario': a
    KServe client names a model (Triton: "Request for unknown model: ... is not found"). Every /v2 model
    route now answers the same 404, the name not echoed; /v1 keeps its 'unknown scenario'."""

    async def probe(client: Any, backend: Any, app: Any) -> tuple[dict[str, Any], Any, list[Any]]:
        answers = {
            "metadata": await client.get("/v2/models/nope"),
            "ready": await client.get("/v2/models/nope/ready"),
            "version": await client.get("/v2/models/nope/versions/1"),
            "version ready": await client.get("/v2/models/nope/versions/1/ready"),
            "infer": await client.post("/v2/models/nope/infer", json=V2_BODY),
            "version infer": await client.post("/v2/models/nope/versions/1/infer", json=V2_BODY),
        }
        v1 = await client.post("/v1/classify", json={"scenario": "nope", "texts": ["a fine day"]})
        # TEI names the scenario in our header: its /info and /predict both say scenario, as /v1 does
        header = {"X-Labelwise-Scenario": "nope"}
        tei = [
            await client.get("/info", headers=header),
            await client.post("/predict", json={"inputs": "a fine day"}, headers=header),
        ]
        return {name: (r.status_code, r.json()) for name, r in answers.items()}, v1, tei

    got, v1, tei = _run(published_repo, probe)
    said = {"error": "unknown model: not found; GET /v1/scenarios lists the scenarios served here"}
    for name, answer in got.items():
        assert answer == (404, said), (name, answer)
    assert v1.status_code == 404 and v1.json()["error"]["message"].startswith("unknown scenario"), v1.text
    for answer in tei:
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"] == v1.json()["error"]["message"], answer.text
