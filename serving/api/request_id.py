"""X-Request-Id: taken from the request when it is a sane token, else made here; kept in the request's
state for log lines and error messages, and sent back on every response, refusals included.

On a Serve replica, Ray's own request-id middleware runs in front of the app: it puts the caller's id
(or a new one) into the request and echoes it in the response, so this one only reads it there."""

from __future__ import annotations

import os
import re
from typing import Any

from starlette.requests import Request

REQUEST_ID_HEADER = "X-Request-Id"
# What a caller may choose: short, printable, no spaces (it goes into log lines as it is).
_ACCEPTED = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")


def request_id_of(request: Request) -> str:
    """This request's id ("-" outside the middleware, e.g. in a unit test of one route)."""
    return str(getattr(request.state, "request_id", "-"))


class RequestIdMiddleware:
    """Pure ASGI middleware: a request id per HTTP request, echoed in the X-Request-Id response header."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.echo = not _behind_ray_serve()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = set_request_id(scope)
        if not self.echo:
            await self.app(scope, receive, send)
            return
        raw = request_id.encode("latin-1")

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", raw)]}
            await send(message)

        await self.app(scope, receive, send_with_id)


def new_request_id() -> str:
    """32 random hex digits, as uuid4().hex spells them: os.urandom without building a UUID object,
    0.5 against 4.3 µs on the 2-core box, paid on every request that brings no id of its own."""
    return os.urandom(16).hex()


def set_request_id(scope: dict, given: bytes | None = None) -> str:
    """The request's id, from its X-Request-Id (`given`, when the caller has read the headers already)
    when that is a sane token, else a new one; kept in the scope's state, where log lines and error
    answers read it."""
    if given is None:
        given = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), b"")
    text = given.decode("latin-1")
    request_id = text if _ACCEPTED.fullmatch(text) else new_request_id()
    scope.setdefault("state", {})["request_id"] = request_id
    return request_id


class SaneRequestIdMiddleware:
    """Pure ASGI middleware for Ray Serve's HTTP servers (its proxy, and each replica's direct ingress),
    outside Ray's own request-id middleware, which echoes the caller's X-Request-Id as it came (any
    length, any characters) while the app, logs and error messages use a sane one: before Ray reads it,
    the header is left as the caller's first X-Request-Id when that one is sane, or replaced by a new
    one, so the id in the response is the one in the log. Ray installs it from
    RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH (ray_http_middlewares), set by `labelwise serve` and the
    chart."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = scope.get("headers") or []
            given = [v for k, v in headers if k.lower() == b"x-request-id"]
            if len(given) != 1 or not _ACCEPTED.fullmatch(given[0].decode("latin-1")):
                kept = given[0] if given and _ACCEPTED.fullmatch(given[0].decode("latin-1")) else None
                value = kept if kept is not None else new_request_id().encode()
                rest = [(k, v) for k, v in headers if k.lower() != b"x-request-id"]
                scope = {**scope, "headers": [*rest, (b"x-request-id", value)]}
        await self.app(scope, receive, send)


def ray_http_middlewares() -> list[Any]:
    """What RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH names: the middlewares Ray puts around its HTTP
    servers, outside its own request-id middleware."""
    from starlette.middleware import Middleware

    return [Middleware(SaneRequestIdMiddleware)]


RAY_MIDDLEWARES_PATH = "serving.api.request_id.ray_http_middlewares"


def _behind_ray_serve() -> bool:
    """Whether this app runs on a Serve replica (whose HTTP server already echoes X-Request-Id)."""
    try:
        from ray import serve

        serve.get_replica_context()
    except Exception:  # not in a replica (a unit test, the seed server), or no ray at all
        return False
    return True


__all__ = [
    "RAY_MIDDLEWARES_PATH",
    "REQUEST_ID_HEADER",
    "RequestIdMiddleware",
    "SaneRequestIdMiddleware",
    "ray_http_middlewares",
    "request_id_of",
    "set_request_id",
]
