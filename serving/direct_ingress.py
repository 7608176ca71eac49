"""Direct ingress (the local default): let a replacement replica bind the port its dead predecessor held.

Ray 2.60's direct ingress binds the ingress replica's HTTP socket without SO_REUSEADDR. When a replica
dies with clients connected, its connections sit in TIME_WAIT on that port for 60 s, and until they
expire every bind of the port fails: Ray then marks the port blocked and retries, and a one-port range
(what `labelwise serve` uses, so that the service stays on the port the user asked for) means a
minute or more of outage after any crash (measured: no answer for over 60 s, 1,100 failed requests).

Ray's own helper for its proxies binds with SO_REUSEADDR and SO_REUSEPORT; the replica's server has
that switch too but passes it off. `allow_rebind` turns it on for the replica's HTTP server. Both
options only admit sockets of the same user, and the one-port range already limits the app to one
ingress replica. It is applied only where labelwise itself set up direct ingress (the env var below,
set by serving.local_ray), and a Ray without that internal keeps Ray's behaviour, with a warning.
"""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger("labelwise.serving")

_MARK = "_labelwise_rebind"
ENV = "LABELWISE_DIRECT_INGRESS_REBIND"


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

    async def start_reusing_address(*args: Any, **kwargs: Any) -> Any:
        kwargs["enable_so_reuseport"] = True
        return await start(*args, **kwargs)

    setattr(start_reusing_address, _MARK, True)
    replica_module.start_asgi_http_server = start_reusing_address
    return True


__all__ = ["ENV", "allow_rebind"]
