"""direct_ingress.straight_to_app: which requests the replica's HTTP server hands straight to the deployment's
app and which stay on Ray's wrapper. The replica here is a plain object with the three attributes the
function reads (Ray's Replica is only built inside a Serve actor); `labelwise serve` runs it for real in
tests/serve_cli, where every request goes this way."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from serving.direct_ingress import straight_to_app


class _Replica:
    """The attributes of Ray's Replica that straight_to_app reads, and its per-request wrapper."""

    def __init__(self, user: Any, route_prefix: str | None = "/") -> None:
        self._user_callable_wrapper = SimpleNamespace(user_callable=user)
        self._route_prefix = route_prefix
        self.seen: list[str] = []

    async def _direct_ingress_asgi(self, scope: dict, receive: Any, send: Any) -> None:
        self.seen.append(scope.get("path", scope["type"]))


def _app(seen: list[str]) -> Any:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        seen.append(scope["path"])

    return app


def _send_all(server: Any) -> None:
    async def nothing() -> dict:
        return {}

    async def run() -> None:
        for scope in (
            {"type": "http", "path": "/v1/classify"},
            {"type": "http", "path": "/readyz"},
            {"type": "http", "path": "/-/healthz"},
            {"type": "http", "path": "/-/routes"},
            {"type": "websocket", "path": "/ws"},
        ):
            await server(scope, nothing, nothing)

    asyncio.run(run())


def test_the_classifier_app_gets_http_requests_and_ray_keeps_its_own_routes() -> None:
    app_seen: list[str] = []
    replica = _Replica(SimpleNamespace(app=_app(app_seen), service=object()))
    server = straight_to_app(replica._direct_ingress_asgi)
    assert server is not replica._direct_ingress_asgi
    _send_all(server)
    assert app_seen == ["/v1/classify", "/readyz"]
    assert replica.seen == ["/-/healthz", "/-/routes", "/ws"]


def test_a_separate_ingress_or_another_route_prefix_keeps_rays_path() -> None:
    separate = _Replica(SimpleNamespace(app=_app([]), backend=object()))  # no service: handle calls
    prefixed = _Replica(SimpleNamespace(app=_app([]), service=object()), route_prefix="/api")
    no_app = _Replica(SimpleNamespace(service=object()))
    for replica in (separate, prefixed, no_app):
        assert straight_to_app(replica._direct_ingress_asgi) == replica._direct_ingress_asgi

    async def plain(scope: dict, receive: Any, send: Any) -> None:  # not a Replica's bound method
        return None

    assert straight_to_app(plain) is plain


def test_the_apps_classify_front_door_is_called_when_it_has_one() -> None:
    app_seen: list[str] = []
    front_seen: list[str] = []
    app = SimpleNamespace(state=SimpleNamespace(classify_front_door=_app(front_seen)))
    replica = _Replica(SimpleNamespace(app=app, service=object()))
    _send_all(straight_to_app(replica._direct_ingress_asgi))
    assert front_seen == ["/v1/classify", "/readyz"] and app_seen == []
    assert replica.seen == ["/-/healthz", "/-/routes", "/ws"]
