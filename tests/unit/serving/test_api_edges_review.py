"""HTTP API edges found in review, on a real ClassifierService over published tiny versions, in-process:
the key is asked for before a body that is not JSON is refused, texts of only whitespace are refused on
every route, Infinity's `"model": ""` names no default, and KServe's data must have its tensor's shape."""

from __future__ import annotations

from typing import Any

import pytest

from model_repository import ModelRepository

from .conftest import serve_in_process

Client = Any  # an httpx.AsyncClient on the app


BROKEN = b'{"scen'  # not JSON: FastAPI refused it (400) before the route's key dependency ran
JSON = {"Content-Type": "application/json"}
ROUTES = ["/v1/classify", "/classify", "/predict", "/v2/models/frozen_two/infer"]


def test_a_body_that_is_not_json_is_refused_401_without_the_key_and_400_with_it(
    published_repo: ModelRepository,
) -> None:
    async def check(client: Client) -> None:
        for path in ROUTES:
            for body in (BROKEN, b"\xff\xfe"):
                anonymous = await client.post(path, content=body, headers=JSON)
                assert anonymous.status_code == 401, (path, body, anonymous.text)
                assert "API key" in anonymous.text and "JSON" not in anonymous.text
                keyed = await client.post(path, content=body, headers={**JSON, "Authorization": "Bearer k3y"})
                assert keyed.status_code == 400, (path, body, keyed.text)

    serve_in_process(published_repo, check, api_key="k3y")


@pytest.mark.parametrize("blank", ["   ", "\n\t ", "\u00a0", "\u3000"])
def test_a_text_of_only_whitespace_is_refused_on_every_route(
    published_repo: ModelRepository, blank: str
) -> None:
    async def check(client: Client) -> None:
        v1 = await client.post("/v1/classify", json={"scenario": "frozen_two", "texts": ["fine", blank]})
        assert v1.status_code == 422 and v1.json()["error"]["field"] == "texts.1"
        # In our validator's words, as the other routes say it (not "texts.1: Value error, a text ...").
        assert v1.json()["error"]["message"].startswith("texts.1: a text of only whitespace")
        infinity = await client.post("/classify", json={"model": "frozen_two", "input": [blank]})
        assert infinity.status_code == 422 and "only whitespace" in infinity.text
        assert "Value error" not in infinity.text
        tei = await client.post("/predict", json={"inputs": blank})
        assert tei.status_code == 422 and "inputs: a text of only whitespace" in tei.json()["error"]
        tensor = {"name": "t", "shape": [1], "datatype": "BYTES", "data": [blank]}
        v2 = await client.post("/v2/models/frozen_two/infer", json={"inputs": [tensor]})
        assert v2.status_code == 400 and "inputs.0.data.0: a text of only whitespace" in v2.json()["error"]
        # A text with something in it besides whitespace is a text.
        ok = await client.post(
            "/v1/classify", json={"scenario": "frozen_two", "texts": [f"{blank}hi{blank}"]}
        )
        assert ok.status_code == 200, ok.text

    serve_in_process(published_repo, check)


def test_the_schema_says_a_text_needs_more_than_whitespace(published_repo: ModelRepository) -> None:
    async def check(client: Client) -> None:
        schema = (await client.get("/openapi.json")).json()["components"]["schemas"]
        assert schema["ClassifyRequest"]["properties"]["texts"]["items"] == {
            "type": "string",
            "minLength": 1,
            "pattern": "\\S",
        }

    serve_in_process(published_repo, check)


def test_an_empty_infinity_model_name_is_a_name_not_the_default(published_repo: ModelRepository) -> None:
    async def check(client: Client) -> None:
        unnamed = await client.post("/classify", json={"model": "default/not-specified", "input": ["hi"]})
        assert unnamed.status_code == 200 and unnamed.json()["model"] == "frozen_two"
        empty = await client.post("/classify", json={"model": "", "input": ["hi"]})
        assert empty.status_code == 400 and "unknown scenario" in empty.text, empty.text
        # Infinity names the field of a refusal in `param`: an unknown model said `param: null`
        for name in ("", "nope"):
            error = (await client.post("/classify", json={"model": name, "input": ["hi"]})).json()["error"]
            assert error["code"] == 400 and error["param"] == "model", error
        # /v1 names the scenario in its path, body or a header: its unknown scenario names no field
        v1 = (await client.post("/v1/classify", json={"scenario": "nope", "texts": ["hi"]})).json()["error"]
        assert v1["code"] == 404 and v1.get("field") is None, v1

    serve_in_process(published_repo, check)


def test_kserve_data_must_have_its_tensors_shape_and_versions_are_numbers(
    published_repo: ModelRepository,
) -> None:
    def infer(shape: list[int], data: list[Any]) -> dict[str, Any]:
        return {"inputs": [{"name": "t", "shape": shape, "datatype": "BYTES", "data": data}]}

    async def check(client: Client) -> None:
        url = "/v2/models/frozen_two/infer"
        for shape, data in (([2], ["a", "b"]), ([2, 1], ["a", "b"]), ([2, 1], [["a"], ["b"]])):
            answer = await client.post(url, json=infer(shape, data))
            assert answer.status_code == 200 and answer.json()["outputs"][0]["shape"][0] == 2, answer.text
        for shape, data, problem in (
            ([2], [["a"], [["b"]]], "inputs.0.data.0: a list; the data of shape [2] is its texts, flat"),
            ([2], ["a", ["b"]], "inputs.0.data.1: a list"),
            (
                [2, 1],
                [["a"], ["b", "c"]],
                "inputs.0.data.1: 2 elements; a row of shape [2, 1] holds one text",
            ),
            ([2, 1], [["a"], [["b"]]], "inputs.0.data.1: not a non-empty string"),
        ):
            refused = await client.post(url, json=infer(shape, data))
            assert refused.status_code == 400 and problem in refused.json()["error"], (data, refused.text)
        assert (await client.get("/v2/models/frozen_two/versions/01/ready")).status_code == 200
        padded = await client.post("/v2/models/frozen_two/versions/01/infer", json=infer([1], ["a"]))
        assert padded.status_code == 200 and padded.json()["model_version"] == "1", padded.text
        assert (await client.get("/v2/models/frozen_two/versions/2/ready")).status_code == 404
        long = await client.get("/v2/models/frozen_two/versions/" + "1" * 5000 + "/ready")
        assert long.status_code == 404

    serve_in_process(published_repo, check)
