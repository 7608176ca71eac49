"""What Locust counts as an answer: a redirect is a failure and is never followed (it could lead the load
off this machine), a 200 that is not the classify answer is a failure, a refused connection is a failure
(it raised in the locustfile and went uncounted), and a run in which no classify request was made exits
non-zero. Bad options are refused by `loadtests.run` in one line, exit 2. Locust runs in child processes."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.conftest import http_stub

from .test_locust_guards import _loadtest

GOOD = {"scenario": "s", "version": 1}


@contextmanager
def _server(post: str, hits: list[str]) -> Iterator[str]:
    """A stand-in on 127.0.0.1: GET /readyz and /v1/scenarios answer; POST answers as `post` says."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in {"content-type": "application/json", **(headers or {})}.items():
                self.send_header(key, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(200, b'{"scenarios": [{"name": "s", "version": 1}], "ready": true}')

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            hits.append(self.path)
            n = len(body["texts"])
            if post.startswith("redirect "):
                self._send(307, b"", {"location": post.split(" ", 1)[1]})
            elif post == "hang up":  # no answer at all: the client sees the connection closed
                self.close_connection = True
                self.connection.shutdown(2)
            elif post == "html":
                self._send(200, b"<html>oops</html>", {"content-type": "text/html"})
            elif post == "empty rows":
                self._send(200, json.dumps({**GOOD, "results": [[]] * n}).encode())
            else:
                rows = [[{"label": "a", "score": 1.0}]] * n
                self._send(200, json.dumps({**GOOD, "results": rows}).encode())

        def log_message(self, *args: object) -> None:
            pass

    with http_stub(Handler) as url:
        yield url


def _classify_counts(reports: Path) -> tuple[int, int]:
    """(requests, failures) of the classify rows in Locust's stats CSV."""
    (stats,) = reports.glob("*_stats.csv")
    rows = [r for r in csv.DictReader(stats.open()) if r["Name"].startswith("/v1/classify")]
    return sum(int(r["Request Count"]) for r in rows), sum(int(r["Failure Count"]) for r in rows)


def test_a_redirect_is_a_failure_and_is_not_followed(tmp_path: Path) -> None:
    elsewhere: list[str] = []
    with _server("ok", elsewhere) as target, _server(f"redirect {target}/v1/classify", []) as url:
        out = _loadtest(url, tmp_path, "--scenarios", "s", "--run-time-s", "2")
    requests, failures = _classify_counts(tmp_path)
    assert requests > 0 and failures == requests, out.stdout[-2000:]
    assert elsewhere == []  # the load never reached the host the redirect named
    assert out.returncode != 0


@pytest.mark.parametrize("post", ["html", "empty rows", "hang up"])
def test_what_is_not_the_answer_is_a_failure(tmp_path: Path, post: str) -> None:
    with _server(post, []) as url:
        out = _loadtest(url, tmp_path, "--scenarios", "s", "--run-time-s", "2")
    requests, failures = _classify_counts(tmp_path)
    assert requests > 0 and failures == requests, out.stdout[-2000:]
    assert out.returncode != 0
    with _server("ok", []) as url:  # the same run against right answers: no failure
        good = _loadtest(url, tmp_path / "good", "--scenarios", "s", "--run-time-s", "2")
    assert good.returncode == 0, good.stdout[-2000:] + good.stderr[-2000:]
    assert _classify_counts(tmp_path / "good")[1] == 0


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--weights", "one=3,many=2"), "loadtest: --weights: expected one=N,batch=M"),
        (("--spawn-rate", "0"), "loadtest: --spawn-rate must be > 0, got 0"),
        (
            ("--texts-file", "/nonexistent/texts.txt"),
            "loadtest: --texts-file: sentences file /nonexistent/texts.txt does not exist",
        ),
    ],
)
def test_bad_options_are_refused_before_locust_starts(
    tmp_path: Path, args: tuple[str, ...], said: str
) -> None:
    with _server("ok", []) as url:
        out = _loadtest(url, tmp_path, *args)
    assert out.returncode == 2 and said in out.stderr, out.stderr[-2000:]
    assert not list(tmp_path.glob("*.html"))


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("texts.csv", "id,body\n1,hello\n", "expected a 'text' column"),
        ("texts.txt", "\n  \n", "holds no non-empty line"),
    ],
)
def test_a_texts_file_without_texts_is_refused_before_locust_starts(
    tmp_path: Path, name: str, content: str, said: str
) -> None:
    """A --texts-file that exists but holds no text passed run.py's check and failed inside Locust, as a
    traceback from its init hook (exit 1, a stats CSV written); it is refused in one line, exit 2."""
    texts = tmp_path / name
    texts.write_text(content)
    reports = tmp_path / "reports"
    hits: list[str] = []
    with _server("ok", hits) as url:
        out = _loadtest(url, reports, "--texts-file", str(texts))
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert "loadtest: --texts-file: " in out.stderr and said in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and not hits and not reports.exists()


def test_a_one_second_run_counts_what_it_sent(tmp_path: Path) -> None:
    """run.py read whether anything was classified from Locust's stats CSV, which Locust rewrites once a
    second and does not write again at the end: a 1 s run read 0 and exited 1 ("no classify request was
    answered") after hundreds of answers. The JSON stats, written once the run is over, count them."""
    hits: list[str] = []
    with _server("ok", hits) as url:
        out = _loadtest(url, tmp_path, "--scenarios", "s", "--run-time-s", "1")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (stats,) = tmp_path.glob("*.json")
    entries = json.loads(stats.read_text())
    counted = sum(e["num_requests"] for e in entries if e["name"].startswith("/v1/classify"))
    assert counted > 0 and abs(counted - len(hits)) <= 32, (counted, len(hits))  # 32 users: a request each


def test_scenarios_listed_with_spaces_are_the_scenarios_named(tmp_path: Path) -> None:
    """--scenarios "s, s": the second name was " s", a scenario no server has (every request for it failed,
    exit 1)."""
    hits: list[str] = []
    with _server("ok", hits) as url:
        out = _loadtest(url, tmp_path, "--scenarios", "s, s ,", "--run-time-s", "2")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    requests, failures = _classify_counts(tmp_path)
    assert requests > 0 and failures == 0, (requests, failures)


def test_a_host_with_the_wrong_path_says_so(tmp_path: Path) -> None:
    """--host http://127.0.0.1:PORT/v1/classify (the endpoint, not the base URL): /readyz answered 404 and
    the message said "start the server first", about a server that was up."""
    from http.server import SimpleHTTPRequestHandler

    class NotFound(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    with http_stub(NotFound) as url:
        out = _loadtest(f"{url}/v1/classify", tmp_path, "--ready-timeout-s", "1")
    assert out.returncode == 1, out.stderr[-2000:]
    assert "(last: HTTP 404); nothing is served at that path: give the server's base URL" in out.stderr
    assert "start the server first" not in out.stderr


def test_the_python_load_generator_follows_no_redirect(tmp_path: Path) -> None:
    """aiohttp follows redirects by default, and the loopback guard checks only the URL it is given: a
    302 sent the Python generator's load (and its readiness poll) wherever Location named."""
    import asyncio

    from loadtests.loadgen import LoadSpec, run_load

    elsewhere: list[str] = []
    with _server("ok", elsewhere) as target, _server(f"redirect {target}/v1/classify", []) as url:
        spec = LoadSpec(url=url, scenarios=["s"], concurrency=2, duration_s=0.5, warmup_s=0)
        result = asyncio.run(run_load(spec, ["hello"]))
    assert elsewhere == []  # never reached the address the redirect named
    assert result.requests == 0 and result.errors > 0
    assert set(result.error_kinds) == {"HTTP 307"}, result.error_kinds
