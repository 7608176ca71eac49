"""A 404 names the path asked for and where the API is listed; a 405 names the method, the path and the
methods the path takes, as its Allow header does. A very long path or method is cut in the message. In
the one error shape on /v1's paths and in each ecosystem's shape on the compatibility routes, in-process
over a real ClassifierService on published tiny versions."""

from __future__ import annotations

import json
from typing import Any

from model_repository import ModelRepository
from tests.unit.serving.conftest import serve_in_process


def test_a_404_and_a_405_name_what_was_asked_and_where_to_go(published_repo: ModelRepository) -> None:
    seen: dict[str, Any] = {}

    async def check(client: Any) -> None:
        seen["unknown"] = await client.get("/v1/clasify")
        seen["long"] = await client.get("/" + "x" * 5000)
        seen["get_classify"] = await client.get("/v1/classify")
        seen["put_root"] = await client.put("/", json={})
        seen["get_tei"] = await client.get("/predict")

    serve_in_process(published_repo, check)

    unknown = seen["unknown"]
    assert unknown.status_code == 404
    error = unknown.json()["error"]
    assert error["type"] == "not_found" and error["code"] == 404
    assert "'/v1/clasify'" in error["message"], error  # was "Not Found"
    assert "GET /v1/scenarios" in error["message"] and "/docs" in error["message"]

    long_error = seen["long"].json()["error"]["message"]
    assert len(long_error) < 300 and "(5001 characters)" in long_error, long_error

    wrong_method = seen["get_classify"]
    assert wrong_method.status_code == 405
    error = wrong_method.json()["error"]
    assert error["type"] == "method_not_allowed"
    assert wrong_method.headers["allow"] == "POST"
    assert error["message"] == "method 'GET' is not allowed on '/v1/classify'; it takes POST", error

    put_root = seen["put_root"]  # labelwise's GET and HEAD on /, TEI's POST
    assert put_root.status_code == 405 and put_root.headers["allow"] == "GET, HEAD, POST"
    message = put_root.json()["error"]["message"]
    assert message == "method 'PUT' is not allowed on '/'; it takes GET, HEAD, POST", message

    tei = seen["get_tei"]  # TEI's route: TEI's shape, with the same words
    assert tei.status_code == 405 and tei.json()["error_type"] == "Validation"
    assert tei.json()["error"] == "method 'GET' is not allowed on '/predict'; it takes POST", tei.json()


def test_a_body_the_parser_cannot_read_is_refused_for_what_is_wrong_with_it(
    published_repo: ModelRepository,
) -> None:
    """A body that is not UTF-8, nested past the parser's depth or holding a number of over 4,300 digits was
    refused with one message listing all four causes ("invalid JSON, nesting too deep, ... or not UTF-8"):
    it names the one that holds, and for a body not UTF-8 the byte where it stops being UTF-8, as a body
    that is not JSON is named with the character where the parser stopped. On /v1 and each compat route."""
    bodies = {
        "latin-1": b'{"scenario": "frozen_two", "texts": ["caf\xe9"]}',
        "deep": b'{"texts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "digits": b'{"texts": ["a"], "top_k": 1' + b"0" * 5000 + b"}",
    }
    seen: dict[tuple[str, str], Any] = {}

    async def check(client: Any) -> None:
        # application/vnd.x+json: the route, as the fast path hands on what it cannot validate
        for path in ("/v1/classify", "/classify", "/predict", "/v2/models/frozen_two/infer"):
            for name, body in bodies.items():
                headers = {"content-type": "application/vnd.x+json"}
                seen[(path, name)] = await client.post(path, content=body, headers=headers)

    serve_in_process(published_repo, check, max_body_bytes=1_000_000)
    for (path, name), answer in seen.items():
        assert answer.status_code == 400, (path, name, answer.text)
        body = answer.json()
        message = body["error"] if isinstance(body["error"], str) else body["error"]["message"]
        assert message.startswith("body: ") and " or " not in message, (path, name, message)
        if name == "latin-1":
            assert "not UTF-8" in message and "byte 41" in message and "0xe9" in message, message
        elif name == "deep":
            assert "nested too deeply" in message, message
        else:
            assert "4,300 digits" in message, message


def test_a_long_name_sent_by_the_client_is_cut_in_the_refusal(published_repo: ModelRepository) -> None:
    """A KServe datatype, output name or version, or an unknown field of /v1, was echoed whole in the
    refusal (a 3,000-character datatype made a 3,000-character message): cut as a long path is."""
    tensor = {"name": "t", "shape": [1], "datatype": "BYTES", "data": ["fine"]}
    seen: dict[str, Any] = {}

    async def check(client: Any) -> None:
        infer = "/v2/models/frozen_two/infer"
        seen["datatype"] = await client.post(infer, json={"inputs": [{**tensor, "datatype": "B" * 3000}]})
        outputs = [{"name": "o" * 3000}]
        seen["output"] = await client.post(infer, json={"inputs": [tensor], "outputs": outputs})
        seen["version"] = await client.get("/v2/models/frozen_two/versions/" + "1" * 3000)
        for door, content_type in (("fast", "application/json"), ("route", "application/vnd.x+json")):
            body = {"scenario": "frozen_two", "texts": ["fine"], "x" * 3000: 1}
            headers = {"content-type": content_type}
            seen[door] = await client.post("/v1/classify", content=json.dumps(body), headers=headers)

    serve_in_process(published_repo, check)
    for name, answer in seen.items():
        assert answer.status_code in (400, 404, 422), (name, answer.text)
        error = answer.json()["error"]
        message = error if isinstance(error, str) else error["message"]
        assert len(message) < 300 and "(3000 characters)" in message, (name, message)
        if not isinstance(error, str):
            assert len(error["field"]) < 200 and error["field"].startswith("xxx"), error["field"]
