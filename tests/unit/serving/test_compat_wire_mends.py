"""Wire mends of the compatibility routes: a KServe v2 tensor with no texts (shape [0], data []) is
refused naming its empty data, not as a shape that "does not match" the 0 elements it matches.
In-process over a real ClassifierService on published tiny versions (create_api, httpx's ASGI transport)."""

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
