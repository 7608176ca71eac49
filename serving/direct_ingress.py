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
from typing import Any

logger = logging.getLogger("labelwise.serving")

_MARK = "_labelwise_rebind"
ENV = "LABELWISE_DIRECT_INGRESS_REBIND"
SHARED_PORT_ENV = "LABELWISE_DIRECT_INGRESS_PORT"


def allow_rebind() -> bool:
    """Patch the replica's direct-ingress server start to reuse the address; True when applied."""
    if os.environ.get(ENV) != "1":
        return False
    try:
        from ray.serve._private import replica as replica_module
    except ImportError:
        return False
    start = getattr(replica_module, "start_asgi_http_server", None)
    if start is None:
        logger.warning("direct ingress: this Ray has no start_asgi_http_server; a crash may hold the port")
        return False
    if getattr(start, _MARK, False):
        return True

    shared_port = os.environ.get(SHARED_PORT_ENV)

    async def start_reusing_address(app: Any, http_options: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["enable_so_reuseport"] = True
        if shared_port and int(shared_port) != http_options.port:
            http_options = http_options.model_copy(update={"port": int(shared_port)})
        return await start(app, http_options, *args, **kwargs)

    setattr(start_reusing_address, _MARK, True)
    replica_module.start_asgi_http_server = start_reusing_address
    return True


__all__ = ["ENV", "SHARED_PORT_ENV", "allow_rebind"]
