"""Direct ingress (the local default): let a replacement replica bind the port its dead predecessor held.

Ray 2.60's direct ingress binds the ingress replica's HTTP socket without SO_REUSEADDR. When a replica
dies with clients connected, its connections sit in TIME_WAIT on that port for 60 s, and until they
expire every bind of the port fails: Ray then marks the port blocked and retries, and a one-port range
(what `labelwise serve` uses, so that the service stays on the port the user asked for) means a
minute or more of outage after any crash (measured: no answer for over 60 s, 1,100 failed requests).

Ray's own helper for its proxies binds with SO_REUSEADDR and SO_REUSEPORT; the replica's server has
that switch too but passes it off. `allow_rebind` turns it on for the replica's HTTP server. Both
options only admit sockets of the same user. It is applied only where labelwise itself set up direct
ingress (the env vars below, set by serving.local_ray), and a Ray without that internal keeps Ray's
behaviour, with a warning.

The same option lets several ingress replicas share one port: the controller hands each replica its
own port of a range (one per replica, from the user's), and `allow_rebind` binds the user's port
instead, so every replica listens on it and the kernel spreads new connections over them (Linux's
SO_REUSEPORT balancing, by a hash of the connection's addresses). Each replica then parses, batches
and answers its own connections in its own process: one Python process per replica on the request
path, where a single replica is bound by one process's GIL (docs/serving.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from .http_framing import refuse_framing_as_json
from .http_writes import coalesce_server_writes

logger = logging.getLogger("labelwise.serving")

_MARK = "_labelwise_rebind"
ENV = "LABELWISE_DIRECT_INGRESS_REBIND"
SHARED_PORT_ENV = "LABELWISE_DIRECT_INGRESS_PORT"
APP_DIRECT_ENV = "LABELWISE_DIRECT_INGRESS_APP"


def swap_replica_function(name: str, replace: Callable[[Any], Any], mark: str, missing: str) -> bool:
    """Swap ray.serve._private.replica's function `name` (module-level, or a class's method as
    `Class.method`) for replace(the current one), marked with `mark` so that a second call (the module
    imported again) keeps the first swap. True when swapped now or before; False, logging `missing`, when
    this Ray has no such function."""
    try:
        from ray.serve._private import replica as replica_module
    except ImportError:
        return False
    *owners, attribute = name.split(".")
    owner: Any = replica_module
    for part in owners:
        owner = getattr(owner, part, None)
    current = getattr(owner, attribute, None)
    if current is None:
        logger.warning(missing)
        return False
    if getattr(current, mark, False):
        return True
    replacement = replace(current)
    setattr(replacement, mark, True)
    setattr(owner, attribute, replacement)
    return True


def allow_rebind() -> bool:
    """Patch the replica's direct-ingress server start to reuse the address; True when applied."""
    if os.environ.get(ENV) != "1":
        return False
    shared_port = os.environ.get(SHARED_PORT_ENV)

    def reusing_address(start: Any) -> Any:
        async def start_reusing_address(app: Any, http_options: Any, *args: Any, **kwargs: Any) -> Any:
            kwargs["enable_so_reuseport"] = True
            if shared_port and int(shared_port) != http_options.port:
                http_options = http_options.model_copy(update={"port": int(shared_port)})
            if os.environ.get(APP_DIRECT_ENV) == "1":
                app = straight_to_app(app)
            started = await start(app, http_options, *args, **kwargs)
            # Ray created the server's task but it has not run yet: its protocol can still be chosen.
            server = started[1] if isinstance(started, tuple) and len(started) == 2 else None
            coalesce_server_writes(server)
            refuse_framing_as_json(server)  # over the coalescing protocol: its 400 leaves in one write
            return started

        return start_reusing_address

    return swap_replica_function(
        "start_asgi_http_server",
        reusing_address,
        _MARK,
        "direct ingress: this Ray has no start_asgi_http_server; a crash may hold the port",
    )


# Ray's own routes on a direct-ingress replica: they stay on Ray's request path, once the app's
# ray_route_refusal (serving.api.routes) has let them through.
_RAY_ROUTES = frozenset({"/-/healthz", "/-/routes"})


def guarding_ray_routes(ray_asgi: Any, app: Any) -> Any:
    """Ray's request path, with the requests to Ray's own routes that the app refuses (a POST, /-/routes
    without the API key) answered by the app's refusal; unchanged for an app that has none."""
    refuse = getattr(getattr(app, "state", None), "ray_route_refusal", None)
    if refuse is None:
        return ray_asgi

    async def guarded(scope: dict, receive: Any, send: Any) -> None:
        refusal = refuse(scope) if scope["type"] == "http" and scope["path"] in _RAY_ROUTES else None
        if refusal is None:
            await ray_asgi(scope, receive, send)
        else:
            await refusal(scope, receive, send)

    return guarded


def straight_to_app(ray_asgi: Any) -> Any:
    """The replica's HTTP server calling the deployment's own ASGI app (the FastAPI app of
    ClassifierIngress, combined mode) on the server's event loop, instead of Ray's per-request wrapper
    around it. On where LABELWISE_DIRECT_INGRESS_APP is 1: a local `labelwise serve` sets it unless it
    is set already (0 keeps Ray's path).

    Ray's wrapper (Replica._direct_ingress_asgi) counts each request for Serve (ongoing requests,
    queue limits, request metrics, the access log line) and runs the app on the user-code event loop,
    a hop to another thread and back for every message. Locally none of that is used: the app admits
    and refuses requests itself, keeps its own metrics, and no proxy or balancer sits in front. Ray's
    own routes (/-/healthz, /-/routes) still take Ray's path, past the app's refusals
    (guarding_ray_routes). Returns Ray's wrapper, with that guard alone for a separate ingress, when the
    replica is not what this expects (another Ray, a route prefix other than "/", no ASGI app)."""
    replica = getattr(ray_asgi, "__self__", None)
    wrapper = getattr(replica, "_user_callable_wrapper", None)
    user = getattr(wrapper, "user_callable", None)
    app = getattr(user, "app", None)
    if getattr(user, "service", None) is None:  # a separate ingress: its handle calls stay on Ray's loop
        return ray_asgi if app is None else guarding_ray_routes(ray_asgi, app)
    if app is None or getattr(replica, "_route_prefix", "/") not in ("/", None):
        logger.warning("direct ingress: the replica's ASGI app is not reachable; keeping Ray's request path")
        return ray_asgi

    # The app's classify front door (serving.api.fast_classify.ClassifyFrontDoor) when it has one: valid
    # classify requests answered before FastAPI's layers, everything else handed to the app.
    front = getattr(getattr(app, "state", None), "classify_front_door", None) or app
    ray_path = guarding_ray_routes(ray_asgi, app)

    async def serve(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in _RAY_ROUTES:
            await front(scope, receive, send)
        else:
            await ray_path(scope, receive, send)

    return serve


__all__ = [
    "APP_DIRECT_ENV",
    "ENV",
    "SHARED_PORT_ENV",
    "allow_rebind",
    "straight_to_app",
    "swap_replica_function",
]
