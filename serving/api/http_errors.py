"""Every exception -> one HTTP status and the one JSON error shape, in one place."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import NotReadyError, RequestTimeoutError, ServingError
from .request_id import request_id_of
from .schemas import ErrorBody, ErrorDetail

logger = logging.getLogger("labelwise.serving")
RETRY_AFTER_S = 1.0
# Starlette's own HTTP errors (unknown path, wrong method, unparseable body) -> the error type clients see
_HTTP_TYPES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
}


def retry_after_headers(retry_after_s: float | None) -> dict[str, str] | None:
    """The Retry-After header for a wait of retry_after_s (whole seconds, at least 1), or None."""
    return {"Retry-After": str(max(1, math.ceil(retry_after_s)))} if retry_after_s is not None else None


def refusal_headers(status: int, retry_after_s: float | None = None) -> dict[str, str] | None:
    """Retry-After for a wait, and on a 401 the scheme to authenticate with (RFC 9110)."""
    headers = retry_after_headers(retry_after_s) or {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return headers or None


def error_response(
    status: int,
    type_: str,
    message: str,
    field: str | None = None,
    retry_after_s: float | None = None,
    close: bool = False,
) -> JSONResponse:
    """The error shape. close: a refusal sent while part of the body is unread, so the server closes the
    connection after it (what the client sends next on it would be read as the rest of that body)."""
    body = ErrorBody(error=ErrorDetail(type=type_, message=message, code=status, field=field))
    headers = refusal_headers(status, retry_after_s)
    if close:
        headers = {**(headers or {}), "Connection": "close"}
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def unreadable_body(request: Request) -> tuple[int, str, str, str] | None:
    """(415, error type, message, field) for a body not declared as JSON (FastAPI hands such a body on as
    bytes, and the schema would only say it is "not a valid dictionary"); None when it was read as JSON.
    Only asked about refused requests. (A compressed body is refused before: body_limit.py.)"""
    if request.method != "POST":
        return None
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if is_json_media_type(content_type):
        return None
    named = repr(content_type[:60]) if content_type else "absent"
    message = f"Content-Type: {named}; send the body as JSON with Content-Type: application/json"
    return 415, "unsupported_media_type", message, "Content-Type"


def is_json_media_type(media_type: str) -> bool:
    """Whether FastAPI reads a body of this (lower-case, parameters off) media type as JSON:
    application/json and application/*+json, nothing else (not text/x+json)."""
    main, _, sub = media_type.partition("/")
    return main == "application" and "/" not in sub and (sub == "json" or sub.endswith("+json"))


def internal_message(request_id: str) -> str:
    """What a client is told about a server fault: where to look, never what went wrong."""
    return f"internal error; see the service log (request {request_id})"


def validation_refusal(exc: RequestValidationError) -> tuple[int, str, str]:
    """(status, field, message) for the first error of a request that failed validation.

    A body that is not JSON at all is a bad request (400) on the field `body`, with the parser's reason
    and the character where it stopped (FastAPI puts that offset where a field name would be), and so is
    an empty body; a JSON that breaks the schema is 422 on the field's dotted path."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        reason = str((first.get("ctx") or {}).get("error") or first.get("msg") or "decode error")
        where = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
        return 400, "body", f"body: not valid JSON ({reason}{where})"
    if loc == ("body",) and (first.get("type") == "missing" or ("input" in first and first["input"] is None)):
        # No body at all (FastAPI reads an empty body as a missing one; a JSON null, since FastAPI 0.165, as
        # a null model, "Input should be a valid dictionary"): not JSON either, and pydantic's message
        # would not say which.
        return 400, "body", "body: empty (or null); send the request as a JSON object"
    field = ".".join(str(p) for p in loc if p not in ("body", "header")) or "body"
    if len(field) > 100:  # a key the client made up (an unknown field): named, not echoed whole
        field = f"{field[:100]}... ({len(field)} characters)"
    message = str(first.get("msg"))
    if first.get("type") == "value_error":  # our own validator's words, without pydantic's "Value error, "
        message = message.removeprefix("Value error, ")
    return 422, field, f"{field}: {message}"


def http_refusal(exc: StarletteHTTPException) -> tuple[int, str, str, str | None]:
    """(status, error type, message, field) for Starlette's own HTTP errors: an unknown path, a wrong
    method, a body that cannot be parsed (invalid UTF-8, JSON nested past the parser's depth limit) or
    that passes max_body_bytes while it streams in. The field is `body` for the last two, as for a body
    that is not JSON (validation_refusal), else None."""
    type_ = _HTTP_TYPES.get(exc.status_code, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else "invalid request"
    if exc.status_code == 400:
        detail = unparsed_body_message(exc.__cause__) or (
            f"body: {detail.lower().rstrip('.')} (invalid JSON, nesting too deep, a number of over 4,300 "
            "digits, or not UTF-8)"
        )
    field = "body" if exc.status_code in (400, 408, 413) else None
    return exc.status_code, type_, detail, field


def unparsed_body_message(cause: BaseException | None) -> str | None:
    """What was wrong with a body that FastAPI could not parse, from the error its parser raised (FastAPI
    raises its 400 "There was an error parsing the body" from it): not UTF-8 (the byte where it stops
    being UTF-8), nested past the parser's depth, or a number past Python's 4,300 digits; None for
    another cause."""
    if isinstance(cause, UnicodeDecodeError):
        byte = cause.object[cause.start : cause.start + 1].hex()
        return f"body: not UTF-8 (byte 0x{byte} at byte {cause.start}); send the JSON body as UTF-8"
    if isinstance(cause, RecursionError):
        return "body: JSON nested too deeply for the parser"
    if isinstance(cause, ValueError) and "4300 digits" in str(cause):
        return "body: a number of over 4,300 digits; send numbers of at most 4,300 digits"
    return None


def quoted(text: str, limit: int) -> str:
    """`text` from the request, quoted for a message and cut to `limit` characters: a path or a method
    may be as long as the server lets it be, and the answer should not echo all of it."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def not_found_message(path: str) -> str:
    """A 404's message: the path asked for, and where the served scenarios and the API are listed."""
    return f"no route {quoted(path, 100)}; GET /v1/scenarios lists the served scenarios, /docs the API"


def method_not_allowed_message(method: str, path: str, allow: str) -> str:
    """A 405's message: the method, the path, and the methods that path takes (the Allow header's)."""
    return f"method {quoted(method, 20)} is not allowed on {quoted(path, 100)}; it takes {allow}"


# The attribute of a route's API-key dependency (routes.api_key_dependency) that tells, without raising,
# whether a request lacks the key.
KEY_REFUSAL = "labelwise_key_refusal"


def key_refusal(request: Request) -> ServingError | None:
    """The 401 of a request whose route wants an API key it lacks. FastAPI reads the body before the
    route's dependencies run, so a body that is not JSON was refused (400) before the key was asked for:
    the refusals of a body ask this first, and a client without the key is told that alone."""
    for dependant in getattr(request.scope.get("route"), "dependencies", ()):
        refusal = getattr(dependant.dependency, KEY_REFUSAL, None)
        refused = refusal(request) if refusal is not None else None
        if refused is not None:
            return refused
    return None


# The methods a 405's Allow header may name (asked of the app's routes one by one).
_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request, allow: str) -> str:
    """The Allow header of a 405: every method that some route of this path takes. Starlette's names only
    the first route that matched the path, and a path may have several (`/`: labelwise's GET, TEI's
    POST); every GET route answers HEAD too (a route of its own). Asked only on a 405."""
    from starlette.routing import Match

    methods = {m.strip() for m in allow.split(",") if m.strip()}
    routes = getattr(getattr(request.scope.get("app"), "router", None), "routes", ())
    for method in _METHODS:
        probe = {**request.scope, "method": method}
        if method not in methods and any(route.matches(probe)[0] == Match.FULL for route in routes):
            methods.add(method)
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI, on_error: Callable[[int, str], None] | None = None) -> None:
    """The app's error handlers, each answering in the error shape; on_error(status, path) hears of every
    refusal made here (the request metrics)."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        refused = key_refusal(request)
        if refused is not None:
            return await _serving(request, refused)
        unreadable = unreadable_body(request)
        if unreadable is not None:
            if on_error is not None:
                on_error(unreadable[0], request.url.path)
            return error_response(unreadable[0], unreadable[1], unreadable[2], field=unreadable[3])
        status, field, message = validation_refusal(exc)
        if on_error is not None:
            on_error(status, request.url.path)
        return error_response(status, "invalid_request", message, field=field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Raised by the router (no such path, a method the path does not take) or while the body is read:
        # in the shape of the route the path belongs to, as the refusals made before routing are.
        from .ecosystems import refusal_for

        refused = key_refusal(request) if exc.status_code == 400 else None
        if refused is not None:
            return await _serving(request, refused)
        unreadable = unreadable_body(request) if exc.status_code == 400 else None
        if unreadable is not None:
            if on_error is not None:
                on_error(unreadable[0], request.url.path)
            status, type_, detail, field = unreadable
            return refusal_for(request.scope, status, type_, detail, field=field)
        if on_error is not None:
            on_error(exc.status_code, request.url.path)
        _, type_, detail, field = http_refusal(exc)
        headers = dict(exc.headers or {})
        for key, value in headers.items():  # e.g. Allow on a 405
            if key.lower() == "allow":
                headers[key] = allowed_methods(request, value)
                detail = method_not_allowed_message(request.method, request.url.path, headers[key])
        if exc.status_code == 404:  # the router found no route for the path
            detail = not_found_message(request.url.path)
        response = refusal_for(request.scope, exc.status_code, type_, detail, field=field)
        response.headers.update(headers)
        return response

    @app.exception_handler(ServingError)
    async def _serving(request: Request, exc: ServingError) -> JSONResponse:
        # Raised outside counted() (a wrong key, a backend fault on another route): the classify route
        # answers what counted() has counted itself, as the fast path does.
        if on_error is not None:
            on_error(exc.status_code, request.url.path)
        return serving_error_response(exc, request_id_of(request), request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return unexpected_error_response(exc, request_id_of(request), request.url.path)


class StartTracking:
    """An ASGI `send` that notes whether the response has started: after that, a middleware can no
    longer answer in its place."""

    def __init__(self, send: Any) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


class UnexpectedErrorMiddleware:
    """Pure ASGI middleware inside RequestIdMiddleware: an exception no route handler answered gets its 500
    (or Ray's backpressure status) here, where the answer still carries the X-Request-Id, and ends here.
    Starlette's own handler for `Exception` sits outside every middleware of the app: its 500 went out
    without the id, and it raised the exception again into the server after answering."""

    def __init__(self, app: Any, on_error: Callable[[int, str], None] | None = None) -> None:
        self.app = app
        self.on_error = on_error  # called with the status and path of each answer made here (metrics)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracked = StartTracking(send)
        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if tracked.started:  # half an answer is out: the server can only drop the connection
                raise
            request_id = str(scope.get("state", {}).get("request_id", "-"))
            response = unexpected_error_response(exc, request_id, scope.get("path", ""))
            if self.on_error is not None:  # none of these went through counted() (routes.py)
                self.on_error(response.status_code, scope.get("path", ""))
            await response(scope, receive, send)


def serving_error_response(exc: ServingError, request_id: str, path: str) -> JSONResponse:
    """A ServingError in the error shape (the route's handler and the classify fast path)."""
    field = exc.field
    if exc.status_code >= 500 and not isinstance(exc, NotReadyError | RequestTimeoutError):
        logger.error("%s on %s (request %s): %s", exc.code, path, request_id, exc)
        return error_response(exc.status_code, exc.code, internal_message(request_id))
    retry = RETRY_AFTER_S if isinstance(exc, NotReadyError) else None
    return error_response(exc.status_code, exc.code, str(exc), field=field, retry_after_s=retry)


def unexpected_error_response(exc: Exception, request_id: str, path: str) -> JSONResponse:
    """Any other exception: Ray's backpressure as overloaded, else 500 with a fixed text."""
    backpressure = _backpressure(exc)
    if backpressure is not None:
        status, retry_after_s = backpressure
        return error_response(status, "overloaded", "service overloaded; retry later", None, retry_after_s)
    # Never leak internals: the message goes to the log, the client gets a fixed text.
    try:
        logger.exception("unexpected error on %s (request %s)", path, request_id, exc_info=exc)
    except Exception:  # a handler that could not write it (a lone surrogate in the text): the 500 still goes
        logger.error("unexpected %s on %s (request %s), not loggable", type(exc).__name__, path, request_id)
    return error_response(500, "internal_error", internal_message(request_id))


def backpressure_status(exc: Exception) -> int | None:
    """The status a BackPressureError is answered with (what the request metrics count); None for any
    other exception."""
    answer = _backpressure(exc)
    return None if answer is None else answer[0]


def _backpressure(exc: Exception) -> tuple[int, float] | None:
    """(status, Retry-After seconds) for Ray's BackPressureError (a separate ingress whose handle queue
    is full): the deployment's backpressure_config, i.e. the config's backpressure_status_code and
    retry_after_s; None for any other exception."""
    try:
        from ray.serve.exceptions import BackPressureError
    except ImportError:  # pragma: no cover - ray is part of the serving extra
        return None
    if isinstance(exc, BackPressureError):
        status = int(getattr(exc, "status_code", 503) or 503)
        retry_after_s = getattr(exc, "retry_after_s", None)
        return status, float(retry_after_s) if retry_after_s is not None else RETRY_AFTER_S
    return None
