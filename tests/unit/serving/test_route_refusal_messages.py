"""A 404 names the path asked for and where the API is listed; a 405 names the method, the path and the
methods the path takes, as its Allow header does. A very long path or method is cut in the message. In
the one error shape on /v1's paths and in each ecosystem's shape on the compatibility routes, in-process
over a real ClassifierService on published tiny versions."""

from __future__ import annotations

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
