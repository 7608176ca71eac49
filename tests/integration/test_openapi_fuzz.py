"""A bounded fuzz run of the service's own OpenAPI schema (schemathesis) against the real app: whatever
a client sends, the answer is never a 5xx, and every refusal is in the one JSON error shape, except on
the compatibility routes, each of which refuses in its own ecosystem's documented shape (docs/compat.md)."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import ServedApp

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402 - hypothesis comes with schemathesis

pytestmark = pytest.mark.integration


TEI_PATHS = ("/predict", "/info", "/health", "/ping")


def _in_compat_shape(path: str, body: Any, status: int) -> bool:
    """Whether `body` is the error shape of the compatibility route at `path` (None: not such a route)."""
    if path == "/classify":  # Infinity (OpenAI style)
        error = body.get("error") if isinstance(body, dict) else None
        return (
            isinstance(error, dict)
            and set(error) == {"message", "type", "param", "code"}
            and error["code"] == status
            and bool(error["message"])
        )
    if path in TEI_PATHS:
        return (
            isinstance(body, dict)
            and set(body) == {"error", "error_type"}
            and bool(body["error"])
            and body["error_type"]
            in {"Validation", "Tokenizer", "Backend", "Overloaded", "Unhealthy", "Empty"}
        )
    # KServe v2 / Triton
    return (
        isinstance(body, dict)
        and set(body) == {"error"}
        and isinstance(body["error"], str)
        and bool(body["error"])
    )


def test_no_input_gets_a_server_error_or_another_error_shape(served: ServedApp) -> None:
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/v1/classify",
        "/v1/scenarios",
        "/readyz",
        "/classify",
        "/predict",
        "/info",
        "/health",
        "/ping",
        "/v2/health/ready",
        "/v2/models/{scenario}/infer",
        "/v2/models/{scenario}/versions/{version}/infer",
    }
    seen: dict[str, set[int]] = {}

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40,
            deadline=None,
            derandomize=True,  # the same examples every run: a failure is reproducible, not a flake
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def one(case: Any) -> None:
            response = case.call(base_url=served.url, timeout=30)
            body = str(case.body)[:200]
            where = f"{case.method} {case.path} {body} -> {response.status_code} {response.text[:200]}"
            seen.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)
            # 503 is an answer (not ready yet, overloaded); 500 and 502 would be the service failing, and
            # so would 424, TEI's status for it.
            assert response.status_code not in (424, 500, 502), where
            if response.status_code < 400 or case.method.upper() == "HEAD":  # HEAD: the headers alone
                return
            content_type = response.headers.get("content-type") or [""]  # schemathesis: header -> values
            assert content_type[0].startswith("application/json"), where
            if case.path == "/readyz":  # readiness answers 503 with its own body, not an error
                assert response.json()["ready"] is False, where
                return
            if case.path == "/classify" or case.path in TEI_PATHS or case.path.startswith("/v2"):
                assert _in_compat_shape(case.path, response.json(), response.status_code), where
                return
            error = response.json()["error"]
            assert error["code"] == response.status_code and error["type"] and error["message"], where

        one()
    print(f"\nfuzzed: {seen}")
    # The run reached refusals as well as answers on the classify route.
    assert any(s >= 400 for s in seen["POST /v1/classify"]) and 200 in seen["GET /v1/scenarios"]
    # The compatibility routes were reached and refused bad input in their own shapes.
    for route in ("POST /classify", "POST /predict", "POST /v2/models/{scenario}/infer"):
        assert any(s >= 400 for s in seen[route]), (route, seen[route])
