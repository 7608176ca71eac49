"""A request the replica's HTTP parser refuses is answered in the service's error shape, not uvicorn's text.

uvicorn answers a request whose framing its parser cannot read (`Content-Length: abc`, two Content-Length
headers, Content-Length beside Transfer-Encoding) before any app sees it: a text/plain "Invalid HTTP
request received." and a closed connection. Every other 4xx of the service is the JSON of
serving.api.http_errors.error_response, so a client reading `error.message` got a decode error instead.

`framing_refusal_protocol(base)` makes the subclass of uvicorn's HTTP protocol class `base` whose 400 is
that shape (type invalid_request, the parser's reason in the message, `connection: close` kept);
`refuse_framing_as_json` sets it on the replica's server (serving.direct_ingress), over the coalescing
protocol of serving.http_writes when that is set. A uvicorn without `send_400_response` keeps its own 400.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

logger = logging.getLogger("labelwise.serving")

# The parser's reason is its own text (h11's may quote the line it refused): cut, as a path is in a 404.
_REASON_CHARS = 200


def framing_refusal(reason: str) -> bytes:
    """The head's headers and the body of the 400 for a request the parser refused for `reason`, as bytes
    that follow the status line."""
    from .api.http_errors import error_response  # here: the replica has FastAPI; `import serving` stays cheap

    reason = reason if len(reason) <= _REASON_CHARS else f"{reason[:_REASON_CHARS]}..."
    message = f"the request's HTTP framing is invalid: {reason}"
    response = error_response(400, "invalid_request", message, close=True)
    head = b"".join(name + b": " + value + b"\r\n" for name, value in response.raw_headers)
    return head + b"\r\n" + response.body


def framing_refusal_protocol(base: type) -> type:
    """A subclass of the HTTP protocol class `base` whose parser refusals are answered in the error shape."""

    class FramingRefusalProtocol(base):  # type: ignore[misc, valid-type]
        def send_400_response(self, msg: str) -> None:
            # uvicorn calls this inside its `except` for the parser's error, whose text names the problem
            # (its own msg is a fixed "Invalid HTTP request received.").
            error = sys.exc_info()[1]
            reason = str(error) if error is not None and str(error) else msg.rstrip(".")
            defaults = b"".join(
                name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
            )
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\n" + defaults + framing_refusal(reason))
            self.transport.close()

    FramingRefusalProtocol.__name__ = FramingRefusalProtocol.__qualname__ = f"FramingRefusal{base.__name__}"
    return FramingRefusalProtocol


def refuse_framing_as_json(server: Any) -> bool:
    """Set the framing-refusal protocol on a uvicorn Server not started yet, over whatever protocol it has
    (a class, or uvicorn's name for one); True when set. HTTP/2 and a uvicorn whose protocol has no
    send_400_response keep their own answer (the latter with a warning)."""
    config = getattr(server, "config", None)
    if config is None or getattr(config, "loaded", True) or getattr(config, "http2", False):
        return False
    base = config.http
    if isinstance(base, str):
        from uvicorn.config import HTTP_PROTOCOLS
        from uvicorn.importer import import_from_string

        base = import_from_string(HTTP_PROTOCOLS.get(base, base))
    if not callable(getattr(base, "send_400_response", None)):
        logger.warning(
            "uvicorn's %s has no send_400_response: a malformed request gets its text/plain 400", base
        )
        return False
    config.http = framing_refusal_protocol(base)
    return True


__all__ = ["framing_refusal", "framing_refusal_protocol", "refuse_framing_as_json"]
