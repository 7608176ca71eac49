"""Admission control in the app: a bounded number of API requests in flight, the rest refused at once.

Ray Serve has its own per-replica cap (max_ongoing_requests + max_queued_requests), but what it answers
past the cap is a text/plain "Request dropped due to backpressure", and the probes wait in the same
queue as classify traffic. So the app admits API requests itself, up to `max_ongoing_requests`, and
refuses the rest in the one JSON error shape with Retry-After; Ray's own cap is set well above it
(serving.app.ray_request_caps) so that it never answers first. Probes (/healthz, /readyz, /metrics) are
never counted and never refused: they answer within milliseconds however busy the replica is, under a
route prefix too (their path is read without the root_path). A refusal is in the shape of the route it
was for: labelwise's own, or the ecosystem's on a compatibility route (ecosystems.refusal_for).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .body_limit import declares_body
from .ecosystems import refusal_for, route_path

# Paths that are never refused for load: liveness, readiness, metrics (and their compat spellings).
PROBE_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/health", "/ping", "/v2/health/live", "/v2/health/ready"}
)


class InFlight:
    """The count of API requests in the app, shared by AdmissionMiddleware and the classify front door
    (fast_classify.ClassifyFrontDoor), which admits requests against the same limit."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class AdmissionMiddleware:
    """Pure ASGI middleware: at most `limit` non-probe HTTP requests in the app at once.

    A request over the limit gets `status` (429 or 503) with the route's error body and Retry-After,
    before its body is read; the count drops when the response has been sent (or the request failed)."""

    def __init__(
        self,
        app: Any,
        limit: int,
        status: int = 503,
        retry_after_s: float = 1.0,
        on_refuse: Callable[[int], None] | None = None,
        in_flight: InFlight | None = None,
    ) -> None:
        self.app = app
        self.limit = limit
        self.status = status
        self.retry_after_s = retry_after_s
        self.on_refuse = on_refuse
        self.in_flight = in_flight if in_flight is not None else InFlight()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or route_path(scope) in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight.count >= self.limit:
            if self.on_refuse is not None:
                self.on_refuse(self.status)
            message = f"service overloaded: {self.limit} requests in flight on this replica; retry later"
            # Refused before its body is read: a client waiting on `Expect: 100-continue`, or slow to send,
            # would have what it sends next read as that body, so the connection closes after this.
            refusal = refusal_for(
                scope,
                self.status,
                "overloaded",
                message,
                retry_after_s=self.retry_after_s,
                close=declares_body(scope),
            )
            await refusal(scope, receive, send)
            return
        self.in_flight.count += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight.count -= 1


__all__ = ["PROBE_PATHS", "AdmissionMiddleware", "InFlight"]
