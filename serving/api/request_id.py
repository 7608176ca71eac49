"""X-Request-Id: taken from the request when it is a sane token, else made here; kept in the request's
state for log lines and error messages, and sent back on every response, refusals included.

On a Serve replica, Ray's own request-id middleware runs in front of the app: it puts the caller's id
(or a new one) into the request and echoes it in the response, so this one only reads it there."""

from __future__ import annotations

import re
import uuid
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


def set_request_id(scope: dict, given: bytes | None = None) -> str:
    """The request's id, from its X-Request-Id (`given`, when the caller has read the headers already)
    when that is a sane token, else a new one; kept in the scope's state, where log lines and error
    answers read it."""
    if given is None:
        given = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), b"")
    text = given.decode("latin-1")
    request_id = text if _ACCEPTED.fullmatch(text) else uuid.uuid4().hex
    scope.setdefault("state", {})["request_id"] = request_id
    return request_id


def _behind_ray_serve() -> bool:
    """Whether this app runs on a Serve replica (whose HTTP server already echoes X-Request-Id)."""
    try:
        from ray import serve

        serve.get_replica_context()
    except Exception:  # not in a replica (a unit test, the seed server), or no ray at all
        return False
    return True


__all__ = ["REQUEST_ID_HEADER", "RequestIdMiddleware", "request_id_of", "set_request_id"]
