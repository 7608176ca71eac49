"""Which error shape a request is answered in, in one place: the path a route sees (root_path removed)
and the ecosystem (Infinity, TEI, KServe v2) whose routes answer on it.

The compatibility routes (compat.py) answer their own refusals through these Ecosystems, and so do the
middlewares that refuse before routing (admission.py: overloaded; body_limit.py: a body too large,
compressed or slow), so that one route answers one status in one shape. Any other path is /v1's:
labelwise's own error shape (http_errors.error_response).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from fastapi.responses import JSONResponse

from .http_errors import error_response, refusal_headers

# An ecosystem's error body from (status, our error code, message, request field or None).
ErrorShape = Callable[[int, str, str, str | None], dict[str, Any]]


def route_path(scope: dict) -> str:
    """The request's path as the routes match it: without the root_path a server mounted the app under
    (Ray Serve passes the route_prefix as root_path and leaves it in the path), as Starlette removes it."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :]
    return path


def infinity_error(status: int, code: str, message: str, field: str | None) -> dict[str, Any]:
    """Infinity (OpenAI style): {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": message, "type": code, "param": field, "code": status}}


# TEI's ErrorType (router/src/lib.rs), serialised as the enum's variant names: no serde rename.
TeiErrorType = Literal["Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty"]
TEI_ERROR_TYPES: tuple[str, ...] = get_args(TeiErrorType)


# The code of an empty text on a TEI route, which TEI answers 400 Empty (compat.EmptyTextError)
EMPTY_TEXT = "empty_text"


def tei_error(status: int, code: str, message: str, field: str | None) -> dict[str, Any]:
    """TEI: {"error", "error_type"}, the type one of TEI's (Validation, Overloaded, Unhealthy, Backend,
    Empty)."""
    if code == EMPTY_TEXT:
        kind = "Empty"
    # TEI has no timeout and its Backend is 424: request_timeout_s keeps our 504 as Overloaded, not
    # answered in time for load, its work cancelled, which a TEI client backs off and retries
    elif code in ("overloaded", "timeout") or status == 429:
        kind = "Overloaded"
    elif code == "not_ready":
        kind = "Unhealthy"
    elif status >= 500 or status == 424:
        kind = "Backend"
    else:
        kind = "Validation"
    return {"error": message, "error_type": kind}


def kserve_error(status: int, code: str, message: str, field: str | None) -> dict[str, Any]:
    """KServe v2 / Triton: {"error": message}."""
    return {"error": message}


@dataclass(frozen=True)
class Ecosystem:
    """An ecosystem's error answers: its body `shape`, and our statuses it answers with another
    (`statuses`, e.g. Infinity: an unknown model is 400)."""

    name: str
    shape: ErrorShape
    statuses: dict[int, int]

    def response(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None,
        retry_after_s: float | None = None,
        close: bool = False,
    ) -> JSONResponse:
        """The refusal in this ecosystem's shape and status; close: as error_response's."""
        status = self.statuses.get(status, status)
        headers = refusal_headers(status, retry_after_s)
        if close:
            headers = {**(headers or {}), "Connection": "close"}
        return JSONResponse(self.shape(status, code, message, field), status_code=status, headers=headers)


INFINITY = Ecosystem("infinity", infinity_error, {404: 400})
# TEI answers a failing backend (a NaN score, an inference error) 424 Backend, never 500 (router/src/http)
TEI = Ecosystem("tei", tei_error, {500: 424})
KSERVE = Ecosystem("kserve", kserve_error, {422: 400})  # the protocol answers bad input 400 (InvalidInput)

# The paths of the compatibility routes (compat.py), each with its ecosystem. `POST /` is TEI's predict;
# GET and HEAD on `/` are labelwise's own root.
_INFINITY_PATHS = frozenset({"/classify"})
_TEI_PATHS = frozenset({"/predict", "/invocations", "/info", "/health", "/ping"})
_KSERVE_PATH = re.compile(r"/v2(/health/(live|ready)|/models/[^/]+(/versions/[^/]+)?(/ready|/infer)?)?")


def ecosystem_of(scope: dict) -> Ecosystem | None:
    """The ecosystem whose route answers this request; None for labelwise's own (/v1, probes, unknown)."""
    path = route_path(scope)
    if path in _INFINITY_PATHS:
        return INFINITY
    if path in _TEI_PATHS or (path == "/" and scope.get("method") == "POST"):
        return TEI
    if _KSERVE_PATH.fullmatch(path):
        return KSERVE
    return None


def refusal_for(
    scope: dict,
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    retry_after_s: float | None = None,
    close: bool = False,
) -> JSONResponse:
    """A refusal made before routing, in the shape of the route the request was for."""
    ecosystem = ecosystem_of(scope)
    if ecosystem is None:
        return error_response(status, code, message, field=field, retry_after_s=retry_after_s, close=close)
    return ecosystem.response(status, code, message, field, retry_after_s, close)


__all__ = [
    "INFINITY",
    "KSERVE",
    "TEI",
    "TEI_ERROR_TYPES",
    "Ecosystem",
    "TeiErrorType",
    "ecosystem_of",
    "infinity_error",
    "kserve_error",
    "refusal_for",
    "route_path",
    "tei_error",
]
