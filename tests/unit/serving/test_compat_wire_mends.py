"""Wire mends of the compatibility routes: a KServe v2 tensor with no texts (shape [0], data []) is
refused naming its empty data, not as a shape that "does not match" the 0 elements it matches; TEI's
/info writes model_dtype in TEI's own words (float32, float16), not labelwise's precision names; an
output asking for Triton's classification extension is refused by name, not answered as the plain
tensor. In-process over a real ClassifierService on published tiny versions (create_api, httpx's ASGI
transport)."""

from __future__ import annotations

from typing import Any

import pytest

from model_repository import ModelRepository

from .conftest import serve_in_process

Client = Any  # an httpx.AsyncClient on the app


@pytest.mark.parametrize("shape", [[0], [0, 1], [3]])
def test_a_kserve_tensor_without_texts_is_refused_naming_its_empty_data(
    published_repo: ModelRepository, shape: list[int]
) -> None:
    async def check(client: Client) -> None:
        tensor = {"name": "text", "shape": shape, "datatype": "BYTES", "data": []}
        answer = await client.post("/v2/models/frozen_two/infer", json={"inputs": [tensor]})
        assert answer.status_code == 400, answer.text
        assert answer.json() == {"error": "inputs.0.data: empty; send at least one text"}
        # a shape that disagrees with texts that are there is still named as the shape
        tensor = {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["fine"]}
        answer = await client.post("/v2/models/frozen_two/infer", json={"inputs": [tensor]})
        assert answer.status_code == 400
        assert answer.json() == {"error": "inputs.0.shape: [2] does not match 1 elements of data"}

    serve_in_process(published_repo, check)


def test_tei_info_names_the_dtype_as_tei_does(published_repo: ModelRepository) -> None:
    async def check(client: Client) -> None:
        listed = (await client.get("/v1/scenarios")).json()["scenarios"]
        assert [s["precision"] for s in listed] == ["fp32"]
        info = await client.get("/info")
        assert info.status_code == 200, info.text
        assert info.json()["model_dtype"] == "float32"  # TEI's DType display; it said "fp32"

    serve_in_process(published_repo, check)


def test_a_kserve_output_asking_for_classification_is_refused_by_name(
    published_repo: ModelRepository,
) -> None:
    """tritonclient's InferRequestedOutput(name, class_count=k) expects k "score:index:label" strings per
    text (Triton's classification extension): the plain tensor it got instead was a 200 it misread."""

    async def check(client: Client) -> None:
        tensor = {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["fine"]}
        outputs = [{"name": "label"}, {"name": "scores", "parameters": {"classification": 2}}]
        answer = await client.post(
            "/v2/models/frozen_two/infer", json={"inputs": [tensor], "outputs": outputs}
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"].startswith("outputs.1.parameters.classification: the classification ")
        # class_count=0 (no classification) and binary_data, which the JSON answer serves, are as before
        outputs = [{"name": "scores", "parameters": {"classification": 0, "binary_data": True}}]
        answer = await client.post(
            "/v2/models/frozen_two/infer", json={"inputs": [tensor], "outputs": outputs}
        )
        assert answer.status_code == 200, answer.text
        assert [o["name"] for o in answer.json()["outputs"]] == ["scores"]

    serve_in_process(published_repo, check)


def test_a_binary_header_on_a_kserve_get_is_not_read_as_a_body(published_repo: ModelRepository) -> None:
    """Inference-Header-Content-Length on a GET (metadata, the probes), which has no body, was refused 400
    as a binary request whose header is longer than its body."""

    async def check(client: Client) -> None:
        headers = {"Inference-Header-Content-Length": "12"}
        for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/frozen_two", "/v2"):
            answer = await client.get(path, headers=headers)
            assert answer.status_code == 200, (path, answer.text)
        assert (await client.head("/v2/health/live", headers=headers)).status_code == 200

    serve_in_process(published_repo, check)
