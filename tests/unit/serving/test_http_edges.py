"""Edges of the HTTP surface found in review: repeated headers read the same way by the classify fast path
and the FastAPI route, a server fault answered with the request id and kept from the server, JSON nested
too deeply in a KServe binary header, HEAD on every probe, one operationId per operation, and TEI's
`inputs` refused by what it is. In-process over a real ClassifierService on published tiny versions."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

import pytest

from model_repository import ModelRepository

JSON = {"content-type": "application/json"}
BODY = json.dumps({"scenario": "frozen_two", "texts": ["a fine day"]}).encode()


class FailingScenarioList:
    """The service, except that listing scenarios fails as a bug would."""

    def __init__(self, service: Any) -> None:
        self._service = service

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)

    async def list_scenarios(self) -> list[dict]:
        raise RuntimeError("secret detail of a bug")


def _run(published_repo: ModelRepository, probe: Any, **fields: Any) -> Any:
    pytest.importorskip("ray.serve")
    import httpx

    from serving.api import create_api
    from serving.config import ServingConfig
    from serving.service import ClassifierService

    config = ServingConfig(repository=str(published_repo.root), scenarios=[{"name": "frozen_two"}], **fields)

    async def scenario() -> Any:
        service = ClassifierService(config)
        await asyncio.to_thread(service.registry.poll_once)
        apps = {
            "fast": create_api(service, config, service.metrics),
            "route": create_api(service, config, service.metrics, fast_classify=False),
            "failing": create_api(FailingScenarioList(service), config, service.metrics, fast_classify=False),
        }
        clients = {
            name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
            for name, app in apps.items()
        }
        try:
            return await probe(clients)
        finally:
            for client in clients.values():
                await client.aclose()

    return asyncio.run(scenario())


def test_a_repeated_header_counts_by_its_first_value_on_both_classify_paths(
    published_repo: ModelRepository,
) -> None:
    async def probe(clients: dict) -> dict:
        key, bad = ("authorization", "Bearer k3y"), ("authorization", "Bearer nope")
        text, json_ = ("content-type", "text/plain"), ("content-type", "application/json")
        cases = {
            "text first": [text, json_, key],
            "json first": [json_, text, key],
            "bad key first": [json_, bad, key],
            "good key first": [json_, key, bad],
        }
        got = {}
        for case, headers in cases.items():
            for path in ("fast", "route"):
                response = await clients[path].post("/v1/classify", content=BODY, headers=headers)
                got[case, path] = response.status_code
        return got

    got = _run(published_repo, probe, api_key="k3y")
    expected = {"text first": 415, "json first": 200, "bad key first": 401, "good key first": 200}
    for (case, path), status in got.items():
        assert status == expected[case], (case, path, status)


def test_a_server_fault_answers_500_with_the_request_id_and_does_not_reach_the_server(
    published_repo: ModelRepository,
) -> None:
    async def probe(clients: dict) -> Any:
        # httpx's ASGI transport raises what the app lets out: before, the exception followed the 500.
        return await clients["failing"].get("/v1/scenarios", headers={"X-Request-Id": "my-id-3"})

    response = _run(published_repo, probe)
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "my-id-3"
    message = response.json()["error"]["message"]
    assert "my-id-3" in message and "secret" not in message


def test_kserve_binary_header_nested_too_deeply_is_a_400(published_repo: ModelRepository) -> None:
    response = _binary_infer(published_repo, "5", ',"x":' + "[" * 3000 + "]" * 3000)
    assert response.status_code == 400, response.text
    assert "nested too deeply" in response.text


def _binary_infer(published_repo: ModelRepository, size: str, after_inputs: str = "") -> Any:
    """The answer to a KServe binary-tensor request: one BYTES input announcing `size` bytes (as JSON text),
    `after_inputs` more of the JSON header, then one 1-byte element."""
    tensor = '{"name":"t","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":' + size + "}}"
    header = ('{"inputs":[' + tensor + "]" + after_inputs + "}").encode()

    async def probe(clients: dict) -> Any:
        return await clients["fast"].post(
            "/v2/models/frozen_two/infer",
            content=header + struct.pack("<I", 1) + b"a",
            headers={"Inference-Header-Content-Length": str(len(header))},
        )

    return _run(published_repo, probe)


def test_every_probe_answers_head_and_every_operation_has_its_own_id(published_repo: ModelRepository) -> None:
    probes = ["/healthz", "/readyz", "/health", "/ping", "/v2/health/live", "/v2/health/ready"]

    async def probe(clients: dict) -> tuple[dict, dict]:
        heads = {path: (await clients["fast"].head(path)).status_code for path in probes}
        return heads, (await clients["fast"].get("/openapi.json")).json()

    heads, schema = _run(published_repo, probe)
    assert heads == dict.fromkeys(probes, 200)
    ids = [op["operationId"] for methods in schema["paths"].values() for op in methods.values()]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    tei = schema["paths"]["/predict"]["post"]["responses"]
    assert {"400", "415", "504"} <= set(tei)
    # KServe v2: a compressed body (tritonclient's request compression) is answered 415, so it is
    # documented; a path parameter is a string, never null
    versioned = "/v2/models/{scenario}/versions/{version}"
    assert "415" in schema["paths"]["/v2/models/{scenario}/infer"]["post"]["responses"]
    for path, method in ((versioned, "get"), (versioned + "/ready", "get"), (versioned + "/infer", "post")):
        (version,) = [p for p in schema["paths"][path][method]["parameters"] if p["name"] == "version"]
        assert version["required"] and version["schema"] == {"type": "string", "title": "Version"}, version


@pytest.mark.parametrize(
    ("inputs", "field", "words"),
    [
        (None, "inputs", "null"),
        (5, "inputs", "a number"),
        ({"a": 1}, "inputs", "an object"),
        ([["a"], "b"], "inputs", "mixed"),
        ([["a"], 3], "inputs.1", "a number"),
        ([["a"], [None]], "inputs.1", "a list holding null"),
        ("x" * 40, "inputs", "40 characters"),
        ([["ok"], ["x" * 40]], "inputs.1", "40 characters"),
    ],
)
def test_tei_inputs_are_refused_by_what_they_are(
    published_repo: ModelRepository, inputs: Any, field: str, words: str
) -> None:
    async def probe(clients: dict) -> Any:
        return await clients["fast"].post("/predict", json={"inputs": inputs})

    response = _run(published_repo, probe, max_chars_per_text=30)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error.startswith(f"{field}: ") and words in error, error
    assert ".str" not in error and "list[" not in error


@pytest.mark.parametrize(("inputs", "field"), [("", "inputs"), ([["ok"], [""]], "inputs.1")])
def test_an_empty_tei_text_is_tei_s_own_400_empty(
    published_repo: ModelRepository, inputs: Any, field: str
) -> None:
    """TEI refuses an empty input 400 with error_type Empty (its tokenizer's TextEmbeddingsError::Empty),
    not 422 Validation as other bad input."""

    async def probe(clients: dict) -> Any:
        return await clients["fast"].post("/predict", json={"inputs": inputs})

    response = _run(published_repo, probe)
    assert response.status_code == 400, response.text
    assert response.json() == {"error": f"{field}: an empty text", "error_type": "Empty"}


@pytest.mark.parametrize("size", ["5.0", "true", '"5"', "-1"])
def test_kserve_binary_data_size_that_is_no_byte_count_is_named_so(
    published_repo: ModelRepository, size: str
) -> None:
    """5.0 with 5 bytes left was refused as "5.0 bytes, 5 left in the body", and true was read as 1: the
    refusal says the size is not a byte count."""
    response = _binary_infer(published_repo, size)
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": f"inputs.0.parameters.binary_data_size: {size} is not a byte count; send the size of the "
        "input's binary data as a whole number"
    }


def test_a_kserve_output_asked_for_twice_is_a_400(published_repo: ModelRepository) -> None:
    """It was answered twice: two output tensors of one name, which a KServe client maps by name."""
    body = {
        "inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["hi"]}],
        "outputs": [{"name": "label"}, {"name": "label"}],
    }

    async def probe(clients: dict) -> Any:
        return await clients["fast"].post("/v2/models/frozen_two/infer", json=body)

    response = _run(published_repo, probe)
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "outputs: 'label' is asked for twice; name each output once"}
