"""POST /v1/classify with a valid JSON body, answered without FastAPI's per-request machinery.

FastAPI's path for one classify request (its exception and exit-stack middlewares, routing, dependency
solving, body parsing, the pydantic model built from a dict, the Response object) cost about a third of
the replica's CPU on one-text requests once the batch slots kept both cores busy: the same service
answered 1.4-1.6x the req/s behind a bare ASGI handler (docs/serving.md, "The classify fast path").

This middleware sits inside the request-id, admission and body-limit middlewares, so those apply
unchanged, and answers only what the route would answer the same way:
- the request is `POST /v1/classify` with a JSON content type (and, when an API key is configured, the
  right bearer key);
- the body validates as ClassifyRequest (pydantic, from the JSON bytes).
It then calls `answer_classify`, the function the route calls, and turns a ServingError or any other
exception into the error shape with the same functions as the app's handlers. Everything else (another
path or method, a missing key, a body that is not JSON or breaks the schema) goes on to FastAPI with
the body replayed, so 400/401/422 answers, and the OpenAPI schema, come from the route as before.

`ClassifyFrontDoor` is the same path placed in front of the whole app, for the local direct-ingress
server: it does the request-id, admission and body-limit work for the requests it answers itself.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from pydantic import ValidationError

from ..config import ServingConfig
from ..errors import ServingError
from ..metrics import ServingMetrics
from .admission import InFlight
from .body_limit import BodyTimeout
from .ecosystems import route_path
from .http_errors import error_response, serving_error_response, unexpected_error_response
from .request_id import set_request_id
from .routes import ClassifyBackend, answer_classify, classify_headers
from .schemas import ClassifyRequest

PATH = "/v1/classify"


def first_values(raw: Any) -> dict[bytes, bytes]:
    """Header name -> its first value, as Starlette reads a repeated header (the route and this path must
    agree on which Content-Type or Authorization counts)."""
    headers: dict[bytes, bytes] = {}
    for key, value in raw:
        headers.setdefault(key, value)
    return headers


class FastClassifyMiddleware:
    """Pure ASGI middleware: the classify route's happy path (see the module doc)."""

    def __init__(
        self, app: Any, backend: ClassifyBackend, config: ServingConfig, metrics: ServingMetrics
    ) -> None:
        self.app = app
        self.backend = backend
        self.config = config
        self.metrics = metrics
        self.key = config.api_key.encode() if config.api_key else None
        self.headers = [(b"content-type", b"application/json")] + [
            (k.lower().encode(), v.encode()) for k, v in classify_headers(config).items()
        ]

    def takes(self, scope: dict) -> dict[bytes, bytes] | None:
        """The request's headers when FastAPI would route it to the classify route, with a JSON body and
        the key; else None."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        if route_path(scope) != PATH:
            return None
        headers = first_values(scope.get("headers", ()))
        media_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if media_type != b"application/json":
            return None
        if headers.get(b"content-encoding", b"").strip().lower() not in (b"", b"identity"):
            return None  # compressed: the app's body limit refuses it (415)
        if self.key is not None:
            given = headers.get(b"authorization", b"")
            # (whitespace after the key is the header's, RFC 9110's optional whitespace: not the key's)
            if not (
                given[:7].lower() == b"bearer " and hmac.compare_digest(given[7:].rstrip(b" \t"), self.key)
            ):
                return None
        return headers

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self.takes(scope) is None:
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)  # the body limit outside raises here past max_body_bytes
        if body is None:  # the client left before its body arrived
            return
        request = _parse(body)
        if request is None:
            await self.app(scope, _replay(body, receive), send)  # the route answers 400 / 422
            return
        await self.answer(scope, receive, send, request)

    async def answer(self, scope: dict, receive: Any, send: Any, request: ClassifyRequest) -> None:
        """Answer a validated request: 200 with the JSON answer, or the error shape. A client that leaves
        before the answer cancels its request: its rows still waiting are skipped by the batcher and its
        admission slot is freed (Ray's own per-request wrapper, which this path skips, does the same)."""
        task = asyncio.current_task()
        watcher = asyncio.ensure_future(_cancel_when_gone(receive, task)) if task is not None else None
        try:
            payload = await answer_classify(request, self.backend, self.config, self.metrics)
        except asyncio.CancelledError:
            if watcher is None or not watcher.done() or watcher.cancelled() or not watcher.result():
                raise  # cancelled by someone else: let it through
            task.uncancel()  # type: ignore[union-attr]  # the client is gone: nothing to answer
            return
        except ServingError as exc:
            await serving_error_response(exc, _request_id(scope), PATH)(scope, receive, send)
            return
        except Exception as exc:
            await unexpected_error_response(exc, _request_id(scope), PATH)(scope, receive, send)
            return
        finally:
            if watcher is not None:
                watcher.cancel()
        headers = [*self.headers, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


class ClassifyFrontDoor(FastClassifyMiddleware):
    """The classify fast path in front of the whole app, on a local direct-ingress server
    (serving.direct_ingress.straight_to_app calls it instead of the FastAPI app).

    Inside the app, a valid classify request still went through FastAPI's own layers and the request-id,
    admission and body-limit middlewares, each wrapping `send` (8 % of the event loop's samples at c=32
    on the 2-core box). Here it does what those layers do for such a request itself: the request id in
    the scope's state, the admission count shared with AdmissionMiddleware (`in_flight`), and a
    declared Content-Length within max_body_bytes. Anything else (another route, no Content-Length, a
    body over the limit, a replica at its limit, a body that does not validate) goes to the whole app,
    which answers or refuses it as before. Behind Ray Serve the response's X-Request-Id is added by
    Ray's own middleware, outside this one."""

    def __init__(
        self,
        app: Any,
        backend: ClassifyBackend,
        config: ServingConfig,
        metrics: ServingMetrics,
        in_flight: InFlight,
    ) -> None:
        super().__init__(app, backend, config, metrics)
        self.in_flight = in_flight
        self.limit = config.max_ongoing_requests
        self.body_limit = config.body_limit_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        headers = self.takes(scope)
        declared = b"" if headers is None else headers.get(b"content-length", b"")
        if (
            headers is None
            or self.in_flight.count >= self.limit
            or not (declared.isdigit() and int(declared) <= self.body_limit)
        ):
            await self.app(scope, receive, send)  # answered, or refused, by the whole app
            return
        set_request_id(scope)  # the first X-Request-Id, as RequestIdMiddleware reads it
        self.in_flight.count += 1
        admitted = True
        try:
            try:  # a client that stops sending holds a slot: the body has request_timeout_s to arrive
                async with asyncio.timeout(self.config.request_timeout_s):
                    body = await _read_body(receive)
            except TimeoutError:
                self.metrics.requests.labels("_invalid", "408").inc()
                detail = BodyTimeout(self.config.request_timeout_s).detail
                refusal = error_response(408, "request_timeout", detail, field="body", close=True)
                await refusal(scope, receive, send)
                return
            if body is None:
                return
            request = _parse(body)
            if request is not None:
                await self.answer(scope, receive, send, request)
                return
            self.in_flight.count -= 1  # the whole app admits (and counts) it itself
            admitted = False
            await self.app(scope, _replay(body, receive), send)  # the route answers 400 / 422
        finally:
            if admitted:
                self.in_flight.count -= 1


async def _cancel_when_gone(receive: Any, task: asyncio.Task) -> bool:
    """Wait for the client to disconnect (after its whole body was read, uvicorn's receive() returns only
    then), and cancel the task answering it; True when it did."""
    message = await receive()
    if message.get("type") != "http.disconnect":
        return False
    task.cancel()
    return True


async def _read_body(receive: Any) -> bytes | None:
    """The whole request body; None when the client left before it arrived."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _parse(body: bytes) -> ClassifyRequest | None:
    try:
        return ClassifyRequest.model_validate_json(body)
    except ValidationError:
        return None


def _request_id(scope: dict) -> str:
    return str(scope.get("state", {}).get("request_id", "-"))


def _replay(body: bytes, receive: Any) -> Any:
    """A receive() that hands out the body already read, then waits on the connection as before."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


__all__ = ["ClassifyFrontDoor", "FastClassifyMiddleware"]
