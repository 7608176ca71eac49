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
"""

from __future__ import annotations

import hmac
from typing import Any

from pydantic import ValidationError

from ..config import ServingConfig
from ..errors import ServingError
from ..metrics import ServingMetrics
from .http_errors import serving_error_response, unexpected_error_response
from .routes import ClassifyBackend, answer_classify, classify_headers
from .schemas import ClassifyRequest

PATH = "/v1/classify"


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

    def takes(self, scope: dict) -> bool:
        """Whether FastAPI would route this request to the classify route, with a JSON body and the key."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return False
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if path != PATH:
            return False
        headers = dict(scope.get("headers", ()))
        media_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if media_type != b"application/json":
            return False
        if self.key is None:
            return True
        given = headers.get(b"authorization", b"")
        return given[:7].lower() == b"bearer " and hmac.compare_digest(given[7:], self.key)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if not self.takes(scope):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()  # the body limit outside raises here past max_body_bytes
            if message["type"] != "http.request":  # the client left before its body arrived
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            request = ClassifyRequest.model_validate_json(body)
        except ValidationError:
            await self.app(scope, _replay(body, receive), send)  # the route answers 400 / 422
            return
        try:
            payload = await answer_classify(request, self.backend, self.config, self.metrics)
        except ServingError as exc:
            await serving_error_response(exc, _request_id(scope), PATH)(scope, receive, send)
            return
        except Exception as exc:
            await unexpected_error_response(exc, _request_id(scope), PATH)(scope, receive, send)
            return
        headers = [*self.headers, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


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


__all__ = ["FastClassifyMiddleware"]
