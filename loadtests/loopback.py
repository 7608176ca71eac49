"""The loopback guard: load tests and benchmarks only ever talk to this machine."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from .errors import NotLoopbackError

# The one name kept (RFC 6761 reserves it for loopback); any other is refused, never resolved: the
# clients would look it up through DNS.
_LOOPBACK_NAME = "localhost"


def require_loopback(url: str) -> str:
    """Return url without a trailing slash if its host is a loopback address, else raise NotLoopbackError.

    Names are not resolved (a resolver could map anything anywhere): only literal loopback IPs and
    the name localhost pass.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise NotLoopbackError(f"target {url!r}: expected an http:// URL such as http://127.0.0.1:8000")
    host = (parts.hostname or "").lower()
    if not host:
        raise NotLoopbackError(f"target {url!r} names no host; use http://127.0.0.1:8000")
    try:
        parts.port  # noqa: B018 - raises on a port that no connection can use (99999, abc)
    except ValueError:
        raise NotLoopbackError(f"target {url!r}: invalid port; use e.g. http://127.0.0.1:8000") from None
    # The clients append paths to the URL: they would land after it. An empty ?/# counts (urlsplit reads
    # it as no query), as "http://127.0.0.1:8000?" sent /readyz as the query of GET /.
    if "?" in url or "#" in url:
        raise NotLoopbackError(f"target {url!r}: a base URL takes no ?query or #fragment")
    if host != _LOOPBACK_NAME:
        try:
            is_loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            is_loopback = False
        if not is_loopback:
            raise NotLoopbackError(
                f"refusing to send load to {host!r} ({url}): load tests and benchmarks only target this "
                "machine: a literal loopback IP (127.0.0.0/8 or ::1) or the name localhost, no other name"
            )
    return url.rstrip("/")
