"""serving.http_writes: a response's writes within one loop iteration leave as one write, over real TCP
connections on 127.0.0.1 (a bare asyncio server, then uvicorn with the coalescing protocol)."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from serving.http_writes import CoalescingTransport, coalesce_server_writes, coalescing_protocol

from .conftest import read_asgi_body


class _Counted:
    """The real transport, with every write it is handed recorded."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


Script = Callable[[CoalescingTransport, asyncio.AbstractEventLoop], Any]


def _serve_once(script: Script) -> tuple[bytes, list]:
    """A TCP server on 127.0.0.1 runs `script` on its side of one connection; returns what the client read
    until EOF and the writes the real transport was handed."""
    counted: list[_Counted] = []
    tasks: list[asyncio.Task] = []

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        class Proto(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                real = _Counted(transport)  # type: ignore[arg-type]
                counted.append(real)
                result = script(CoalescingTransport(real, loop), loop)  # type: ignore[arg-type]
                if asyncio.iscoroutine(result):
                    tasks.append(loop.create_task(result))

        server = await loop.create_server(Proto, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        server.close()
        done.set_result(None)
        return data

    data = asyncio.run(main())
    return data, counted[0].writes


def test_writes_in_one_iteration_leave_as_one_write_and_close_sends_them_first() -> None:
    def script(t: CoalescingTransport, loop: asyncio.AbstractEventLoop) -> None:
        t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        t.write(b"ok")
        assert t.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        t.close()  # in the same iteration: what is held goes out before the connection closes

    data, writes = _serve_once(script)
    assert data == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    assert writes == [data]


def test_writes_in_later_iterations_leave_separately_and_in_order() -> None:
    async def script(t: CoalescingTransport, loop: asyncio.AbstractEventLoop) -> None:
        t.write(b"a")
        t.writelines([b"b", b"c"])
        await asyncio.sleep(0.01)
        t.write(b"d")
        await asyncio.sleep(0.01)
        assert t.get_extra_info("peername")[0] == "127.0.0.1"  # the rest is the real transport's
        t.close()

    data, writes = _serve_once(script)
    assert data == b"abcd"
    assert writes == [b"abc", b"d"]


def test_abort_drops_what_is_held() -> None:
    def script(t: CoalescingTransport, loop: asyncio.AbstractEventLoop) -> None:
        t.write(b"never sent")
        t.abort()

    data, writes = _serve_once(script)
    assert data == b"" and writes == []


@pytest.fixture
def uvicorn_coalescing() -> Iterator[tuple[int, list[_Counted]]]:
    """uvicorn on 127.0.0.1 with the coalescing protocol set by coalesce_server_writes, serving an app
    that answers /stream in three body messages and anything else in one; yields its port and, per
    connection, the writes its real transport was handed."""
    import uvicorn

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_asgi_body(receive)
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for part in (b"one,", b"two,"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
                await asyncio.sleep(0.01)
            await send({"type": "http.response.body", "body": b"three"})
            return
        payload = b"echo:" + body
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False))
    assert coalesce_server_writes(server)
    assert server.config.http.__name__ == "CoalescingHttpToolsProtocol"
    connections: list[_Counted] = []

    class Counting(server.config.http):  # type: ignore[misc, name-defined]
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            connections.append(_Counted(transport))
            super().connection_made(connections[-1])

    server.config.http = Counting
    thread = threading.Thread(target=lambda: server.run(sockets=[sock]), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield port, connections
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_uvicorn_writes_each_answer_once(uvicorn_coalescing: tuple[int, list[_Counted]]) -> None:
    port, connections = uvicorn_coalescing
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for i in range(3):  # keep-alive: three requests on one connection
        conn.request("POST", "/x", body=f"req{i}".encode())
        response = conn.getresponse()
        assert response.status == 200 and response.read() == f"echo:req{i}".encode()
    (real,) = connections
    assert len(real.writes) == 3  # head and body of each answer in one write (uvicorn alone: 6)
    for i, write in enumerate(real.writes):
        assert write.startswith(b"HTTP/1.1 200 OK") and write.endswith(b"echo:req%d" % i)
    conn.request("GET", "/stream")
    response = conn.getresponse()
    assert response.status == 200 and response.read() == b"one,two,three"  # chunked, in order
    assert len(real.writes) == 3 + 3  # parts sent in later iterations leave as they come
    conn.request("HEAD", "/x")
    response = conn.getresponse()
    assert response.status == 200 and response.read() == b""
    conn.close()


def test_the_server_keeps_its_own_protocol_when_switched_off_or_not_httptools(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvicorn

    async def app(scope: dict, receive: Any, send: Any) -> None:
        return None

    monkeypatch.setenv("LABELWISE_COALESCE_WRITES", "0")
    assert not coalesce_server_writes(uvicorn.Server(uvicorn.Config(app)))
    monkeypatch.delenv("LABELWISE_COALESCE_WRITES")
    assert not coalesce_server_writes(uvicorn.Server(uvicorn.Config(app, http="h11")))
    assert not coalesce_server_writes(None)
    loaded = uvicorn.Config(app, lifespan="off")
    loaded.load()
    assert not coalesce_server_writes(uvicorn.Server(loaded))  # too late: its protocol is chosen
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    made = coalescing_protocol(HttpToolsProtocol)
    assert issubclass(made, HttpToolsProtocol) and made.__name__ == "CoalescingHttpToolsProtocol"


def test_the_framing_refusal_goes_over_any_protocol_and_uvicorns_400_stays_where_it_cannot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """serving.http_framing over a protocol named by uvicorn's string, or over a class (the coalescing
    one); a protocol without send_400_response keeps its own answer, with a warning."""
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from serving.http_framing import refuse_framing_as_json

    async def app(scope: dict, receive: Any, send: Any) -> None:
        return None

    named = uvicorn.Server(uvicorn.Config(app, http="h11"))
    assert refuse_framing_as_json(named) and issubclass(named.config.http, H11Protocol)
    coalescing = uvicorn.Server(uvicorn.Config(app))
    assert coalesce_server_writes(coalescing) and refuse_framing_as_json(coalescing)
    assert coalescing.config.http.__name__ == "FramingRefusalCoalescingHttpToolsProtocol"
    bare = uvicorn.Server(uvicorn.Config(app, http=asyncio.Protocol))
    assert not refuse_framing_as_json(bare) and bare.config.http is asyncio.Protocol
    assert "no send_400_response" in caplog.text
