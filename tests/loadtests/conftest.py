"""A tiny FastAPI server on 127.0.0.1 that speaks the /v1/classify shape and counts what it receives."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import Request  # at module level: the handlers' annotations are resolved here

from loadtests.bench_models import BenchModels, prepare_bench_models
from serving.local_ray import free_loopback_port

SLOW_EVERY = 10  # every 10th request waits SLOW_S: the slowest tenth fixes p99 from below
SLOW_S = 0.2
FAIL_EVERY = 7  # every 7th request answers 500
STALL_S = 2.5  # with behaviour["stall"]: every answer takes this long
RARE_EVERY = 200  # with behaviour["rare_slow"]: one answer in 200 takes RARE_SLOW_S, under 1 % of them
RARE_SLOW_S = 0.25
SLOW_BETA_S = 0.02  # with behaviour["slow_beta"]: each answer for scenario "beta" takes this long


@dataclass
class Counts:
    requests: int = 0
    texts: int = 0
    failed: int = 0
    slow: int = 0
    scenarios: dict[str, int] = field(default_factory=dict)
    paths: dict[str, int] = field(default_factory=dict)  # POSTs per request path


@dataclass
class TinyServer:
    url: str
    counts: Counts
    # "faults": slow and failing answers; "stall": every answer takes STALL_S; "slow_beta": see SLOW_BETA_S
    behaviour: dict[str, bool]


_free_port = free_loopback_port  # below the ephemeral range: Ray's own sockets never take it


def _app(counts: Counts, behaviour: dict[str, bool]) -> Any:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()

    # Also under /mounted: a server behind a route prefix (a Serve route_prefix).
    @app.post("/v1/classify")
    @app.post("/mounted/v1/classify")
    async def classify(body: dict[str, Any], request: Request) -> Any:
        counts.paths[request.url.path] = counts.paths.get(request.url.path, 0) + 1
        counts.requests += 1
        n = counts.requests
        counts.scenarios[body["scenario"]] = counts.scenarios.get(body["scenario"], 0) + 1
        if behaviour["faults"] and n % FAIL_EVERY == 0:
            counts.failed += 1
            return JSONResponse({"error": {"type": "internal", "message": "boom", "code": 500}}, 500)
        if behaviour["faults"] and n % SLOW_EVERY == 0:
            counts.slow += 1
            await asyncio.sleep(SLOW_S)
        if behaviour.get("stall"):
            await asyncio.sleep(STALL_S)
        if behaviour.get("rare_slow") and n % RARE_EVERY == 0:
            counts.slow += 1
            await asyncio.sleep(RARE_SLOW_S)
        if behaviour.get("slow_beta") and body["scenario"] == "beta":
            await asyncio.sleep(SLOW_BETA_S)
        counts.texts += len(body["texts"])
        results = [[{"label": "positive", "score": 0.9}] for _ in body["texts"]]
        return {"scenario": body["scenario"], "version": 1, "results": results, "truncated": [False]}

    @app.get("/readyz")
    @app.get("/mounted/readyz")
    async def readyz() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/classify")  # Infinity's shape: {"model", "input"} -> {"data": [[{label, score}...]...]}
    async def infinity_classify(body: dict[str, Any]) -> Any:
        counts.requests += 1
        counts.scenarios[body["model"]] = counts.scenarios.get(body["model"], 0) + 1
        counts.texts += len(body["input"])
        return {"object": "classify", "data": [[{"label": "positive", "score": 0.9}] for _ in body["input"]]}

    @app.get("/health")
    async def health() -> dict[str, float]:
        return {"unix": time.time()}

    @app.get("/v1/scenarios")
    async def scenarios() -> dict[str, Any]:
        # As serve-all lists them: served ones with their version, one still loading, one skipped.
        return {
            "scenarios": [
                {"name": "alpha", "version": 1},
                {"name": "beta", "version": 2},
                {"name": "loading", "version": None},
                {"name": "no-alias", "version": None, "skipped": True},
            ]
        }

    return app


@pytest.fixture
def tiny_server() -> Iterator[TinyServer]:
    """A fresh counting server per test; `behaviour['faults']` turns on slow and failing answers."""
    counts = Counts()
    behaviour = {"faults": False}
    with _served(_app(counts, behaviour)) as url:
        yield TinyServer(url, counts, behaviour)


@pytest.fixture(scope="session")
def tiny_bench(tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> BenchModels:
    """One LoRA and one frozen scenario on the tiny RoBERTa, fp32, one training step each."""
    root = tmp_path_factory.mktemp("bench-repo")
    return prepare_bench_models(
        root, n_lora=1, n_frozen=1, base_model=str(tiny_roberta_dir), precision="fp32", train_steps=1
    )


# ---- labelwise's own HTTP API, its API-key check included, over a stub backend ----
API_KEY = "bench-k3y"


@dataclass
class KeyedServer:
    url: str
    counts: Counts  # classify calls that got past the key check


class _StubBackend:
    """A ClassifyBackend (serving.api.routes) with one scenario, "alpha", answering at once."""

    def __init__(self, counts: Counts) -> None:
        self.counts = counts

    async def classify(
        self, scenario: str, texts: list[str], top_k: int | None, truncate: bool, *_flags: bool
    ) -> dict[str, Any]:
        self.counts.requests += 1
        self.counts.texts += len(texts)
        self.counts.scenarios[scenario] = self.counts.scenarios.get(scenario, 0) + 1
        results = [[{"label": "positive", "score": 0.9}] for _ in texts]
        return {"scenario": scenario, "version": 1, "results": results, "truncated": [False] * len(texts)}

    async def list_scenarios(self) -> list[dict[str, Any]]:
        return [{"name": "alpha", "alias": "production", "version": 1}]

    async def readiness(self) -> dict[str, Any]:
        return {"ready": True}

    async def engine_metrics(self) -> bytes:
        return b""


@contextlib.contextmanager
def _served(app: Any) -> Iterator[str]:
    """app under uvicorn on a free 127.0.0.1 port, in a thread; yields its URL."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the test server did not start within 10 s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def keyed_server() -> Iterator[KeyedServer]:
    """labelwise's API with api_key=API_KEY: /v1 answers 401 without `Authorization: Bearer API_KEY`."""
    from serving.api import create_api
    from serving.config import ServingConfig
    from serving.metrics import ServingMetrics

    counts = Counts()
    with tempfile.TemporaryDirectory() as repository:
        config = ServingConfig(repository=repository, api_key=API_KEY)
        with _served(create_api(_StubBackend(counts), config, ServingMetrics())) as url:
            yield KeyedServer(url, counts)


# The first line of a `python -c` stand-in for a server the bench stops: SIGINT ends it, as it ends the real
# servers, also where the test run ignores SIGINT (CI starts pytest in the background, and a child inherits
# the ignoring): without it each stop sat out its 30 s grace.
EXIT_ON_SIGINT = "import signal, sys; signal.signal(signal.SIGINT, lambda *_: sys.exit(0))"


def stand_in_server(
    ready_body: str,
    texts_key: str | None,
    answer_key: str,
    port_arg: str = "",
    post_delay: str = "0",
    refusal: str | None = None,
) -> str:
    """A `python -c` script standing in for a server the bench starts: GET answers `ready_body` at once,
    POST one result per text of the body's `texts_key` (None: one result, the body unread as JSON) under
    `answer_key`, after `post_delay` seconds (a Python expression: it may read sys.argv), or 503 with the
    body `refusal` when one is given. It listens on 127.0.0.1 at the port after `port_arg` in its
    arguments, or at its first argument."""
    port = f"sys.argv[sys.argv.index({port_arg!r}) + 1]" if port_arg else "sys.argv[1]"
    count = f"len(json.loads(body)[{texts_key!r}])" if texts_key else "1"
    return f"""
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
{EXIT_ON_SIGINT}
class StandIn(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def _answer(self, body, status=200):
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self._answer({ready_body.encode()!r})
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        time.sleep({post_delay})
        if {refusal is not None}:
            return self._answer({(refusal or "").encode()!r}, 503)
        results = [[{{"label": "x", "score": 1.0}}] for _ in range({count})]
        self._answer(json.dumps({{{answer_key!r}: results}}).encode())
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int({port})), StandIn).serve_forever()
"""
