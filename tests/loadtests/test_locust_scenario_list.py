"""A scenario list that `make loadtest` cannot use (an error status, a 200 that is not the list, an empty
list) ends the run at once, exit 1, said in one line: before, each Locust user died with a traceback of its
own and the run idled, sending nothing, until its run time was up (60 s by default)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.conftest import http_stub

from .test_locust_guards import _loadtest


@contextmanager
def _server(status: int, listing: bytes, posts: list[str]) -> Iterator[str]:
    """GET /readyz answers 200; GET /v1/scenarios answers status and listing; POSTs are counted."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(200, b'{"ready": true}') if self.path == "/readyz" else self._send(status, listing)

        def do_POST(self) -> None:
            posts.append(self.path)
            self._send(500, b"")

        def log_message(self, *args: object) -> None:
            pass

    with http_stub(Handler) as url:
        yield url


@pytest.mark.parametrize(
    ("status", "listing", "said"),
    [
        (500, b'{"error": "boom"}', "stopping the run: GET /v1/scenarios: HTTP 500"),
        (200, b"<html>a proxy's page</html>", "GET /v1/scenarios answered no scenario list"),
        (200, b'{"scenarios": []}', "the server lists no serving scenario: pass --scenarios"),
    ],
)
def test_an_unusable_scenario_list_ends_the_run_at_once(
    tmp_path: Path, status: int, listing: bytes, said: str
) -> None:
    posts: list[str] = []
    with _server(status, listing, posts) as url:
        start = time.monotonic()
        out = _loadtest(url, tmp_path, "--run-time-s", "40", "--users", "4")
        took = time.monotonic() - start
    logs = out.stdout + out.stderr
    assert out.returncode == 1, logs[-3000:]
    assert took < 25, f"the run went on for {took:.0f} s"
    assert logs.count("locustfile: stopping the run:") == 1 and said in logs, logs[-3000:]
    assert "Traceback" not in logs and "didn't have proper args" not in logs, logs[-3000:]
    assert not posts
    # The refused listing is in the report, as a failure.
    stats = next(tmp_path.glob("*_stats.csv")).read_text()
    assert "/v1/scenarios" in stats
