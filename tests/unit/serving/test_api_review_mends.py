"""HTTP API mends found in review: a lone surrogate in a TEI or KServe text is refused in the route's own
shape (it was a 500 from the tokenizer), an API key no request could send is refused at config time, and
the OpenAPI schema documents what each operation answers (no 422 on KServe's routes, which say 400; 500
where a backend fault is possible). In-process over a real ClassifierService on published tiny versions."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import ValidationError

from model_repository import ModelRepository

V2_PATHS = ["/v2/models/frozen_two/infer", "/v2/models/frozen_two/versions/1/infer"]
# A lone surrogate: json.dumps writes it as a `\ud800` escape with no pair, which no tokenizer reads.
LONE = "a\ud800b"


def _with_app(published_repo: ModelRepository, probe: Any) -> Any:
    pytest.importorskip("ray.serve")
    import httpx

    from serving.api import create_api
    from serving.config import ServingConfig
    from serving.service import ClassifierService

    config = ServingConfig(repository=str(published_repo.root), scenarios=[{"name": "frozen_two"}])

    async def scenario() -> Any:
        service = ClassifierService(config)
        await asyncio.to_thread(service.registry.poll_once)
        app = create_api(service, config, service.metrics)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await probe(app, client)

    return asyncio.run(scenario())


def test_a_lone_surrogate_is_refused_in_each_routes_own_shape(published_repo: ModelRepository) -> None:
    json_ = {"content-type": "application/json"}
    tei = {
        ("/predict", "one"): {"inputs": LONE},
        ("/", "one"): {"inputs": [LONE]},
        ("/invocations", "batch"): {"inputs": [["fine"], [LONE]]},
    }
    v2 = {"inputs": [{"name": "t", "shape": [2], "datatype": "BYTES", "data": ["fine", LONE]}]}

    async def probe(app: Any, client: Any) -> dict:
        got = {}
        for key, body in tei.items():
            got[key] = await client.post(key[0], content=json.dumps(body), headers=json_)
        for path in V2_PATHS:
            got[path] = await client.post(path, content=json.dumps(v2), headers=json_)
        return got

    got = _with_app(published_repo, probe)
    for (path, kind), response in ((k, v) for k, v in got.items() if isinstance(k, tuple)):
        assert response.status_code == 422, (path, response.text)
        body = response.json()
        named = "inputs.1" if kind == "batch" else "inputs"
        assert body["error_type"] == "Validation" and body["error"].startswith(f"{named}: "), body
        assert "not valid Unicode (lone surrogate" in body["error"]
    for path in V2_PATHS:
        response = got[path]
        assert response.status_code == 400, (path, response.text)
        assert set(response.json()) == {"error"}
        assert response.json()["error"].startswith("inputs.0.data.1: not valid Unicode (lone surrogate")


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("s3cret\n", "strip it"),  # a Secret made with kubectl create secret --from-file
        (" s3cret", "whitespace or a newline around it"),
        ("clé-secrète", "character 2 is not printable ASCII"),
        ("two words", "character 3 is not printable ASCII"),
    ],
)
def test_an_api_key_no_request_could_send_is_refused_from_args_files_and_the_environment(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, key: str, words: str
) -> None:
    from serving.config import FileServingConfig, ServingConfig

    with pytest.raises(ValidationError, match=words) as refused:
        ServingConfig(repository=str(tmp_path), api_key=key)
    assert key.strip() not in str(refused.value)  # Ray logs a replica's ValidationError whole: no key there
    with pytest.raises(ValidationError, match=words):
        FileServingConfig(repository=str(tmp_path), api_key=key)  # a deploy file
    monkeypatch.setenv("LABELWISE_API_KEY", key)  # the chart's Secret
    with pytest.raises(ValidationError, match=words):
        ServingConfig(repository=str(tmp_path))
    monkeypatch.setenv("LABELWISE_API_KEY", "Ab0-._~+/=!#$%&*")
    assert ServingConfig(repository=str(tmp_path)).api_key == "Ab0-._~+/=!#$%&*"


def test_openapi_documents_what_each_operation_answers(published_repo: ModelRepository) -> None:
    async def probe(app: Any, client: Any) -> tuple[dict, dict]:
        return app.openapi(), (await client.get("/openapi.json")).json()

    schema, served = _with_app(published_repo, probe)
    assert served == schema
    v2 = {path: ops for path, ops in schema["paths"].items() if path.startswith("/v2/models/")}
    assert len(v2) == 6
    for path, operations in v2.items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, (method, path)
            assert responses["400"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/V2ErrorBody"
            }, (method, path)
    assert "HTTPValidationError" not in str(schema)
    # A backend fault is a 500 with the request id there (test_http_edges' FailingScenarioList).
    assert "500" in schema["paths"]["/v1/scenarios"]["get"]["responses"]
    assert "500" in schema["paths"]["/readyz"]["get"]["responses"]
    assert "500" in schema["paths"]["/v2/health/ready"]["get"]["responses"]
    # Infinity answers an unknown model 400, never 404.
    assert "404" not in schema["paths"]["/classify"]["post"]["responses"]
    assert {"400", "422"} <= set(schema["paths"]["/classify"]["post"]["responses"])


class _ReadinessFails:
    """The service, except that readiness raises, as a separate ingress's handle does while its
    classifier replica is being replaced."""

    def __init__(self, service: Any) -> None:
        self._service = service

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)

    async def readiness(self) -> dict:
        from serving.errors import NotReadyError

        raise NotReadyError("the classifier replica became unavailable (ActorUnavailableError); retry")


def test_tei_health_answers_a_failed_readiness_in_teis_shape(published_repo: ModelRepository) -> None:
    pytest.importorskip("ray.serve")
    import httpx

    from serving.api import create_api
    from serving.config import ServingConfig
    from serving.service import ClassifierService

    config = ServingConfig(repository=str(published_repo.root), scenarios=[{"name": "frozen_two"}])

    async def scenario() -> Any:
        service = ClassifierService(config)
        await asyncio.to_thread(service.registry.poll_once)
        app = create_api(_ReadinessFails(service), config, service.metrics)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/health")

    response = asyncio.run(scenario())
    assert response.status_code == 503, response.text
    assert response.json()["error_type"] == "Unhealthy" and set(response.json()) == {"error", "error_type"}
    assert response.headers["retry-after"]
