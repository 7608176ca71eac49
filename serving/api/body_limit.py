"""A request body limit enforced before any parsing: from Content-Length, and while the body streams."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.exceptions import HTTPException

from .ecosystems import refusal_for
from .http_errors import StartTracking


class BodyTooLarge(HTTPException):
    """Raised inside receive() when a streamed body passes the limit: FastAPI passes an HTTPException
    through its body parsing untouched, and the error handlers answer it 413 in the error shape."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(413, f"body: request body over {limit_bytes} bytes (max_body_bytes)")


class BodyTimeout(HTTPException):
    """Raised inside receive() when a body has not arrived in full within `timeout_s` of its first read:
    a client that stops sending would otherwise hold an admission slot as long as its connection lives."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(408, f"body: not received in full within {timeout_s:g} s (request_timeout_s)")


def declares_body(scope: dict) -> bool:
    """Whether the request says a body follows (a Transfer-Encoding, or a Content-Length other than 0)."""
    for key, value in scope.get("headers", ()):
        if key == b"transfer-encoding" or (key == b"content-length" and value.strip().lstrip(b"0")):
            return True
    return False


def _coding_not_undone(headers: Any) -> tuple[str, bytes] | None:
    """(header, value) for a body coded in a way nothing here undoes: a Content-Encoding other than
    identity, or a Transfer-Encoding with a coding besides chunked (`gzip, chunked`: the server only
    dechunks, and the app would get gzip bytes); None for a body read as sent."""
    # every Content-Encoding line, as one list (RFC 9110): `identity` on one and `gzip` on the next is gzip
    if codings := [v for k, v in headers if k == b"content-encoding"]:
        encoding = b", ".join(codings)
        if any(c.strip() not in (b"", b"identity") for c in encoding.lower().split(b",")):
            return "Content-Encoding", encoding
    transfer = b", ".join(v for k, v in headers if k == b"transfer-encoding")
    if any(c.strip() not in (b"", b"chunked", b"identity") for c in transfer.lower().split(b",")):
        return "Transfer-Encoding", transfer
    return None


class BodyLimitMiddleware:
    """Pure ASGI middleware: 413 in the route's error shape (labelwise's, or on a compatibility route its
    ecosystem's: ecosystems.refusal_for) for a body over `limit_bytes`, nothing parsed; 415 for
    a compressed one (a Content-Encoding, or a Transfer-Encoding coding, other than chunked or identity:
    bodies are read as sent). Each refusal here, and any answer to a body cut off by the limit or the
    deadline, closes the connection after it: the unread rest would be read as the next request.

    A declared Content-Length over the limit is refused before one byte is read; a chunked body (or a
    Content-Length that lies) is counted as it streams and refused the moment it passes the limit, so
    a 100 MB body never sits in the replica's memory.
    """

    def __init__(
        self, app: Any, limit_bytes: int, on_refuse: Any = None, timeout_s: float | None = None
    ) -> None:
        self.app = app
        self.limit_bytes = limit_bytes
        self.timeout_s = timeout_s  # the whole body within this of the first read (None: no deadline)
        self.on_refuse = on_refuse  # called with the status and path of each refusal made here (metrics)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        coded = _coding_not_undone(scope.get("headers", ()))
        if coded is not None and declares_body(scope):  # a probe has no body: never refused for its coding
            header, named = coded[0], coded[1].decode("latin-1")[:40]
            message = f"{header}: {named!r} is not read here; send the JSON body uncompressed"
            await self._refuse(scope, receive, send, 415, "unsupported_media_type", message, header)
            return
        declared = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
        if declared is not None:
            try:
                too_large = int(declared) > self.limit_bytes
            except ValueError:
                await self._refuse(scope, receive, send, 400, "invalid_request", "invalid Content-Length")
                return
            if too_large:
                await self._refuse(
                    scope, receive, send, 413, "body_too_large", BodyTooLarge(self.limit_bytes).detail
                )
                return
        seen = 0
        deadline: float | None = None
        complete = False
        tracked = _CloseWhenCut(send)

        async def limited_receive() -> dict:
            nonlocal seen, deadline, complete
            if complete or self.timeout_s is None:
                message = await receive()  # after the body: a wait for the disconnect, no deadline
            else:
                loop = asyncio.get_running_loop()
                deadline = deadline if deadline is not None else loop.time() + self.timeout_s
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await receive()
                except TimeoutError:
                    tracked.cut = True
                    raise BodyTimeout(self.timeout_s) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit_bytes:
                    tracked.cut = True
                    raise BodyTooLarge(self.limit_bytes)
                complete = not message.get("more_body", False)
            return message

        try:
            await self.app(scope, limited_receive, tracked)
        except BodyTooLarge as exc:  # raised outside the routes' error handlers
            if not tracked.started:
                await self._refuse(scope, receive, send, 413, "body_too_large", exc.detail)
        except BodyTimeout as exc:
            if not tracked.started:
                await self._refuse(scope, receive, send, 408, "request_timeout", exc.detail)

    async def _refuse(
        self, scope: dict, receive: Any, send: Any, status: int, type_: str, message: str, field: str = "body"
    ) -> None:
        if self.on_refuse is not None:
            self.on_refuse(status, scope.get("path", ""))
        await refusal_for(scope, status, type_, message, field=field, close=True)(scope, receive, send)


class _CloseWhenCut(StartTracking):
    """StartTracking that adds `Connection: close` to the answer once the body was cut off (refused with
    part of it unread), whichever handler answers it: the route's own, or a compat route's."""

    cut = False

    async def __call__(self, message: dict) -> None:  # StartTracking's, inlined: once per message sent
        if message["type"] == "http.response.start":
            self.started = True
            if self.cut:
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
        await self.send(message)


__all__ = ["BodyLimitMiddleware", "BodyTimeout", "BodyTooLarge", "declares_body"]
