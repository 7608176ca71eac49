"""Overload against `labelwise serve` as a user runs it (direct ingress): every answer is a 200 or a JSON
refusal with Retry-After (never Ray's text/plain backpressure), and the probes keep answering. Probe
latency is printed, not asserted: the benchmarks measure it."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from model_repository import ModelRepository

from .conftest import SCENARIO
from .serve_process import ServeProcess

pytestmark = pytest.mark.integration

CLIENTS = 1000  # concurrent connections, each a closed loop
ADMITTED = 16  # max_ongoing_requests: far fewer than the clients, so most requests meet the limit
LOAD_S = 8.0


async def _flood(url: str, statuses: Counter, bad: list[str]) -> None:
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    body = {"scenario": SCENARIO, "texts": ["one short sentence to classify"]}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        stop_at = time.monotonic() + LOAD_S

        async def one_client() -> None:
            while time.monotonic() < stop_at:
                try:
                    response = await client.post("/v1/classify", json=body)
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                    await asyncio.sleep(0.05)
                    continue
                statuses[response.status_code] += 1
                if not response.headers.get("content-type", "").startswith("application/json"):
                    bad.append(
                        f"{response.status_code} {response.headers.get('content-type')}: {response.text[:80]}"
                    )
                elif response.status_code in (429, 503):
                    error = response.json()["error"]
                    if error["type"] != "overloaded" or "retry-after" not in response.headers:
                        bad.append(f"{response.status_code} {error}")
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(one_client() for _ in range(CLIENTS)))


def _probe(url: str, stop: threading.Event, latencies: list[float], statuses: Counter) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            for path in ("/healthz", "/readyz"):
                start = time.perf_counter()
                try:
                    response = client.get(path)
                except httpx.HTTPError as exc:  # a probe with no answer is a failed probe, recorded
                    statuses[(path, type(exc).__name__)] += 1
                    continue
                latencies.append(time.perf_counter() - start)
                statuses[(path, response.status_code)] += 1
            time.sleep(0.05)


def test_overload_gets_json_refusals_and_probes_keep_answering(
    one_scenario_repo: ModelRepository, tmp_path: Path
) -> None:
    pytest.importorskip("psutil")
    args = {
        "repository": str(one_scenario_repo.root),
        "scenarios": [{"name": SCENARIO}],
        "max_ongoing_requests": ADMITTED,
    }
    with ServeProcess(tmp_path, args) as server:
        server.wait_ready()
        idle: list[float] = []
        _probe_for(server.url, 1.0, idle, Counter())
        statuses: Counter = Counter()
        bad: list[str] = []
        latencies: list[float] = []
        probe_statuses: Counter = Counter()
        stop = threading.Event()
        prober = threading.Thread(target=_probe, args=(server.url, stop, latencies, probe_statuses))
        prober.start()
        try:
            asyncio.run(_flood(server.url, statuses, bad))
        finally:
            stop.set()
            prober.join(timeout=30)
        median = statistics.median(latencies)
        p95 = statistics.quantiles(latencies, n=20)[-1]
        print(
            f"\n{CLIENTS} clients for {LOAD_S:g} s, {ADMITTED} admitted: {dict(statuses)}; probes "
            f"{len(latencies)}, median {median * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
            f"max {max(latencies) * 1000:.1f} ms (idle median {statistics.median(idle) * 1000:.1f} ms)"
        )
        assert not bad, bad[:5]
        answered = {s for s in statuses if isinstance(s, int)}
        assert answered <= {200, 503}, statuses
        assert statuses[200] > 0 and statuses[503] > 0, statuses  # served, and the limit was reached
        assert set(probe_statuses) == {("/healthz", 200), ("/readyz", 200)}, probe_statuses
        # After the flood the service is still up and answers normally.
        response = httpx.post(f"{server.url}/v1/classify", json={"scenario": SCENARIO, "texts": ["a"]})
        assert response.status_code == 200


def _probe_for(url: str, seconds: float, latencies: list[float], statuses: Counter) -> None:
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    _probe(url, stop, latencies, statuses)
