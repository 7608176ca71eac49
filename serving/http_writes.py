"""One write per response: the direct-ingress HTTP server's writes coalesced within a loop iteration.

uvicorn writes a response's head when the app sends `http.response.start` and its body when the app
sends `http.response.body`: two `write` system calls, two TCP segments over loopback, two wake-ups of
the client, for every classify answer. On the 2-core box at c=32 those two writes were 13 % of the
replica's event-loop samples (py-spy), on the thread that parses, validates and answers every request.

`CoalescingTransport` holds what is written during one iteration of the event loop and hands it to the
real transport once, at the end of that iteration (`loop.call_soon`): the head and body of a response
sent back to back leave in one write. Order is kept (every write of the connection goes through it);
`close()` writes what is held first; `abort()` drops it, as the real transport drops its buffer. The
connection's protocol sees the real transport's flow control (pause_writing / resume_writing), one
iteration later at most.

`coalescing_protocol(base)` makes the subclass of uvicorn's HTTP protocol class that wraps its
transport so; `serving.direct_ingress` sets it on the replica's server where uvicorn would pick
httptools (`LABELWISE_COALESCE_WRITES=0` keeps uvicorn's own writes).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

ENV = "LABELWISE_COALESCE_WRITES"


class CoalescingTransport:
    """A transport whose writes within one loop iteration reach the real transport as one write."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._held is None:
            self._held = [data]
            self._loop.call_soon(self.flush)
        else:
            self._held.append(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Hand what is held to the real transport now (one write)."""
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        held = sum(len(chunk) for chunk in self._held) if self._held else 0
        return held + self._transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:  # everything else is the real transport's
        return getattr(self._transport, name)


def coalescing_protocol(base: type) -> type:
    """A subclass of the HTTP protocol class `base` whose connections write through CoalescingTransport."""

    class CoalescingHTTPProtocol(base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(CoalescingTransport(transport, asyncio.get_running_loop()))

    CoalescingHTTPProtocol.__name__ = CoalescingHTTPProtocol.__qualname__ = f"Coalescing{base.__name__}"
    return CoalescingHTTPProtocol


def coalesce_server_writes(server: Any) -> bool:
    """Set the coalescing protocol on a uvicorn Server not started yet; True when set.

    Only where uvicorn would run httptools (http="auto" or "httptools", no HTTP/2) and the switch is
    not off; otherwise the server keeps its own protocol."""
    config = getattr(server, "config", None)
    if os.environ.get(ENV, "1") == "0" or config is None or getattr(config, "loaded", True):
        return False
    if getattr(config, "http", None) not in ("auto", "httptools") or getattr(config, "http2", False):
        return False
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # no httptools: uvicorn's h11 protocol, left as it is
        return False
    config.http = coalescing_protocol(HttpToolsProtocol)
    return True


__all__ = ["ENV", "CoalescingTransport", "coalesce_server_writes", "coalescing_protocol"]
