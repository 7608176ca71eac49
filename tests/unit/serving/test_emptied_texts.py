"""A text that its version's recorded cleaning leaves empty (only markup or a URL, with strip_html /
strip_urls on, the default) is refused 422 on every route, naming the route's own field, as training
refuses such a row: its model would read nothing and still answer a label. Real ClassifierService over
published tiny versions, in-process."""

from __future__ import annotations

from typing import Any

import pytest

from model_repository import ModelRepository
from model_repository.text import TextNormalization

from .conftest import serve_in_process

Client = Any  # an httpx.AsyncClient on the app


@pytest.mark.parametrize("markup", ["<b></b>", "https://example.com/x?y=1", "<p> </p> www.example.com"])
def test_a_text_left_empty_by_its_versions_cleaning_is_refused_on_every_route(
    published_repo: ModelRepository, markup: str
) -> None:
    assert published_repo.load_manifest("frozen_two", 1).text_normalization == TextNormalization()

    async def check(client: Client) -> None:
        v1 = await client.post("/v1/classify", json={"scenario": "frozen_two", "texts": ["fine", markup]})
        assert v1.status_code == 422, v1.text
        error = v1.json()["error"]
        assert error["type"] == "invalid_request" and error["field"] == "texts.1"
        assert error["message"].startswith("texts.1: nothing is left of it once cleaned")
        assert "strip_html, strip_urls" in error["message"] and markup not in error["message"]
        infinity = await client.post("/classify", json={"model": "frozen_two", "input": ["fine", markup]})
        assert infinity.status_code == 422 and infinity.json()["error"]["param"] == "input.1"
        assert infinity.json()["error"]["message"].startswith("input.1: nothing is left")
        tei = await client.post("/predict", json={"inputs": markup})
        assert tei.status_code == 422 and tei.json()["error_type"] == "Validation"
        assert tei.json()["error"].startswith("inputs: nothing is left")
        batch = await client.post("/predict", json={"inputs": [["fine"], [markup]]})
        assert batch.status_code == 422 and batch.json()["error"].startswith("inputs.1: nothing is left")
        tensor = {"name": "t", "shape": [2], "datatype": "BYTES", "data": ["fine", markup]}
        v2 = await client.post("/v2/models/frozen_two/infer", json={"inputs": [tensor]})
        assert v2.status_code == 400 and v2.json()["error"].startswith("inputs.0.data.1: nothing is left")
        # Markup around words is cleaned away and the words are classified.
        ok = await client.post(
            "/v1/classify", json={"scenario": "frozen_two", "texts": [f"{markup} fine {markup}"]}
        )
        assert ok.status_code == 200 and ok.json()["usage"]["tokens"][0] > 0, ok.text

    serve_in_process(published_repo, check)
