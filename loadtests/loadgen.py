"""A lean closed-loop HTTP load generator: C workers, each sends its next request when the last returns.

Run it in its own process (`python -m loadtests.loadgen ...`, one JSON line on stdout) so that it does
not share an event loop, or a GIL, with the server it measures. Bodies are encoded once up front and
responses are not parsed beyond a sample, so the client spends little CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
from collections import Counter
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from model_repository.errors import EXIT_RUNTIME, EXIT_USAGE

from .ceiling import all_cores
from .errors import LoadTestError, LoadTestOptionError, ServerNotUpError
from .loopback import require_loopback
from .request_shapes import API_KEY_ENV, SHAPES, RequestShape, auth_headers, results_of, shape_named
from .request_shapes import build_bodies as _shape_bodies
from .sentences import load_sentences

CLASSIFY_PATH = SHAPES["labelwise"].path
READY_PATH = SHAPES["labelwise"].ready_path
_CHECK_EVERY = 64  # parse one response in this many, to catch a server that answers 200 with nonsense


class LoadSpec(BaseModel):
    """One closed-loop load: who to hit, with what, for how long."""

    url: str = Field(description="Server base URL; must be loopback.")
    scenarios: list[str] = Field(
        min_length=1, description="Scenarios; requests cycle through them uniformly."
    )
    texts_per_request: int = Field(default=1, ge=1, description="Texts in each request body.")
    concurrency: int = Field(default=8, ge=1, description="Workers, each with one request in flight.")
    # the times are finite: inf ran a load (or waited on a request) without a bound
    duration_s: float = Field(
        default=10.0, gt=0, allow_inf_nan=False, description="Measured time after the warm-up."
    )
    warmup_s: float = Field(
        default=2.0, ge=0, allow_inf_nan=False, description="Time under load before measuring starts."
    )
    max_requests: int | None = Field(
        default=None, ge=1, description="Stop the measured phase after this many."
    )
    timeout_s: float = Field(default=30.0, gt=0, allow_inf_nan=False, description="Per-request timeout.")
    seed: int = Field(default=0, description="Seed for picking texts.")
    shape: str = Field(
        default="labelwise", description="Request shape: labelwise (also the seed) or infinity."
    )
    api_key: str | None = Field(
        default=None,
        exclude=True,
        repr=False,
        description="Bearer key for a server with an api_key (sent as Authorization); never in a report.",
    )

    def request_shape(self) -> RequestShape:
        return shape_named(self.shape)


class LoadResult(BaseModel):
    """What the measured phase saw."""

    requests: int = Field(description="Requests answered with HTTP 200 in the measured phase.")
    errors: int = Field(
        description="Requests that failed (non-200 or transport error) in the measured phase."
    )
    error_kinds: dict[str, int] = Field(default_factory=dict, description="Failures by status or exception.")
    sequences: int = Field(description="Texts classified (200 responses x texts per request).")
    elapsed_s: float = Field(description="Wall time of the measured phase.")
    req_per_s: float = Field(description="Successful requests per second.")
    seq_per_s: float = Field(description="Texts classified per second.")
    p50_ms: float | None = Field(description="Median latency of successful requests.")
    p90_ms: float | None = Field(description="90th percentile latency.")
    p99_ms: float | None = Field(description="99th percentile latency.")
    mean_ms: float | None = Field(description="Mean latency.")
    concurrency: int = Field(description="Workers.")
    texts_per_request: int = Field(description="Texts per request.")
    scenarios: list[str] = Field(description="Scenarios the load cycled through.")
    driver: str = Field(default="python", description="What generated the load: python or wrk.")
    client_cpu_s: float | None = Field(
        default=None, description="CPU seconds (user + system) the client spent in the measured phase."
    )
    client_cpu_share: float | None = Field(
        default=None, description="client_cpu_s / elapsed_s / logical cores: the machine's share it took."
    )


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of an ascending list; None when empty."""
    if not sorted_values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n*q/100), at least 1
    return sorted_values[int(rank) - 1]


def build_bodies(spec: LoadSpec, texts: list[str]) -> list[tuple[str, bytes]]:
    """Pre-encoded JSON bodies in the spec's request shape, scenarios alternating."""
    return _shape_bodies(spec.request_shape(), spec.scenarios, texts, spec.texts_per_request, spec.seed)


async def wait_ready(
    url: str, timeout_s: float, interval_s: float = 0.5, ready_path: str = READY_PATH
) -> None:
    """Poll GET ready_path (/readyz) until 200, or raise ServerNotUpError after timeout_s (asked at least
    once: a timeout of 0 is one probe, not none, which failed a server that was up)."""
    import aiohttp

    base = require_loopback(url)
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                # a redirect is no answer: following it could lead off this machine
                timeout = aiohttp.ClientTimeout(total=2)
                async with session.get(base + ready_path, timeout=timeout, allow_redirects=False) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                last = type(exc).__name__
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(interval_s)
    if last == "HTTP 404":  # a server answers, with nothing there: a URL with a path, or another server
        advice = (
            "nothing is served at that path: give the server's base URL, e.g. http://127.0.0.1:8000 "
            "(with a path only for a server under a route prefix)"
        )
    else:
        advice = "start the server first, e.g. `labelwise serve`"
    raise ServerNotUpError(
        f"{base}{ready_path} was not ready after {timeout_s:.0f}s (last: {last}); {advice}"
    )


async def run_load(spec: LoadSpec, texts: list[str]) -> LoadResult:
    """Drive the closed loop and return the measured phase's figures."""
    import aiohttp

    base = require_loopback(spec.url)
    shape = spec.request_shape()
    bodies = build_bodies(spec, texts)
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    state = {"measuring": False, "stop": False, "count": 0}
    connector = aiohttp.TCPConnector(limit=spec.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    headers = {"content-type": "application/json", **auth_headers(spec.api_key)}
    # One counter for every worker, as wrk's script keeps for its connections: each request takes the next
    # body, so the scenarios keep their shares. A worker with bodies of its own would send one scenario only
    # (body b is scenarios[b % n]), and a slower scenario would get fewer requests in the closed loop.
    next_body = itertools.count()

    async def worker(session: aiohttp.ClientSession) -> None:
        sent = 0
        while not state["stop"]:
            _scenario, body = bodies[next(next_body) % len(bodies)]
            sent += 1
            start = time.perf_counter()
            try:
                # never follow a redirect (it could lead the load off this machine): a 3xx is an error
                async with session.post(
                    base + shape.path, data=body, headers=headers, allow_redirects=False
                ) as resp:
                    payload = await resp.read()
                    status = resp.status
                kind = None if status == 200 else f"HTTP {status}"
                if kind is None and sent % _CHECK_EVERY == 1:
                    _, kind = results_of(payload, spec.texts_per_request, shape.results_key)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                kind = type(exc).__name__
            elapsed = time.perf_counter() - start
            if not state["measuring"] or state["stop"]:
                continue
            if kind is None:
                latencies.append(elapsed)
            else:
                failures[kind] += 1
            state["count"] += 1
            if spec.max_requests and state["count"] >= spec.max_requests:
                state["stop"] = True

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(worker(session)) for _ in range(spec.concurrency)]
        await asyncio.sleep(spec.warmup_s)
        state["measuring"] = True
        cpu0 = _cpu_s()
        t0 = time.perf_counter()
        deadline = t0 + spec.duration_s
        while not state["stop"] and time.perf_counter() < deadline:
            await asyncio.sleep(0.02)
        state["stop"] = True
        elapsed_s = time.perf_counter() - t0
        cpu_s = _cpu_s() - cpu0
        # In-flight requests finish (bounded by the request timeout) but are not counted.
        await asyncio.gather(*tasks)
    result = summarize(latencies, failures, elapsed_s, spec)
    result.client_cpu_s = round(cpu_s, 3)
    result.client_cpu_share = cpu_share(cpu_s, elapsed_s)
    return result


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def cpu_share(cpu_s: float, wall_s: float, cores: int | None = None) -> float | None:
    """The fraction of the machine a client used: CPU time / wall time / the cores it may run on (the
    affinity mask, as for the ceiling: a container's share, not the host's cores)."""
    cores = cores or all_cores()
    return round(cpu_s / wall_s / cores, 4) if wall_s > 0 else None


def summarize(
    latencies_s: list[float], failures: Counter[str], elapsed_s: float, spec: LoadSpec
) -> LoadResult:
    ordered = sorted(v * 1000 for v in latencies_s)
    n = len(ordered)
    elapsed_s = max(elapsed_s, 1e-9)
    return LoadResult(
        requests=n,
        errors=sum(failures.values()),
        error_kinds=dict(failures),
        sequences=n * spec.texts_per_request,
        elapsed_s=round(elapsed_s, 3),
        req_per_s=round(n / elapsed_s, 2),
        seq_per_s=round(n * spec.texts_per_request / elapsed_s, 2),
        p50_ms=_round(percentile(ordered, 50)),
        p90_ms=_round(percentile(ordered, 90)),
        p99_ms=_round(percentile(ordered, 99)),
        mean_ms=_round(sum(ordered) / n if n else None),
        concurrency=spec.concurrency,
        texts_per_request=spec.texts_per_request,
        scenarios=spec.scenarios,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.loadgen",
        description=__doc__.splitlines()[0],
        epilog=f"{API_KEY_ENV}: the bearer key of a server with an api_key.",
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--scenario", action="append", required=True, help="Repeat for a uniform mix.")
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--max-requests", type=int, default=None)
    parser.add_argument("--timeout-s", type=float, default=30.0, help="Per-request timeout.")
    parser.add_argument("--seed", type=int, default=0, help="Seed for picking texts.")
    parser.add_argument("--texts-file", default=None, help=".txt (one per line) or .csv with a text column")
    parser.add_argument("--ready-timeout-s", type=float, default=10.0)
    parser.add_argument("--shape", default="labelwise", choices=sorted(SHAPES), help="Request shape.")
    args = parser.parse_args(argv)
    try:
        return _run_cli(args)
    except (LoadTestError, ValidationError, OSError, ValueError) as exc:
        # One line (run_in_subprocess reports the last one), not a traceback: a server that is not up, a
        # URL off this machine, an option out of range, a texts file without texts.
        said = str(exc) if not isinstance(exc, ValidationError) else _validation_line(exc)
        print(f"loadgen: {said}", file=sys.stderr)
        if isinstance(exc, LoadTestError):
            return exc.exit_code
        # a socket or a disk that failed while it ran: 1; an option out of range: 2
        return EXIT_RUNTIME if isinstance(exc, OSError) else EXIT_USAGE


def _validation_line(exc: ValidationError) -> str:
    return "; ".join(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors())


def _run_cli(args: argparse.Namespace) -> int:
    spec = LoadSpec(
        url=args.url,
        scenarios=args.scenario,
        texts_per_request=args.texts_per_request,
        concurrency=args.concurrency,
        duration_s=args.duration_s,
        warmup_s=args.warmup_s,
        max_requests=args.max_requests,
        timeout_s=args.timeout_s,
        seed=args.seed,
        shape=args.shape,
        api_key=os.environ.get(API_KEY_ENV) or None,
    )
    try:
        texts = load_sentences(args.texts_file)
    except (OSError, ValueError) as exc:  # not there, a folder, no text in it: asked wrong (exit 2)
        raise LoadTestOptionError(f"--texts-file: {exc}") from None
    _use_uvloop()

    async def _main() -> LoadResult:
        await wait_ready(spec.url, args.ready_timeout_s, ready_path=spec.request_shape().ready_path)
        return await run_load(spec, texts)

    result = asyncio.run(_main())
    sys.stdout.write(result.model_dump_json() + "\n")
    return 0


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_in_subprocess(
    spec: LoadSpec, texts_file: str | None, ready_timeout_s: float = 10.0
) -> dict[str, Any]:
    """Run one load in a child process and return its JSON result (raises on failure)."""
    import subprocess

    from .errors import BenchError

    cmd = [sys.executable, "-m", "loadtests.loadgen", "--url", spec.url]
    for scenario in spec.scenarios:
        cmd += ["--scenario", scenario]
    cmd += [
        "--texts-per-request", str(spec.texts_per_request),
        "--concurrency", str(spec.concurrency),
        "--duration-s", str(spec.duration_s),
        "--warmup-s", str(spec.warmup_s),
        "--ready-timeout-s", str(ready_timeout_s),
        "--timeout-s", str(spec.timeout_s),  # the child used 30 s and seed 0 whatever the spec said
        "--seed", str(spec.seed),
        "--shape", spec.shape,
    ]  # fmt: skip
    if spec.max_requests:
        cmd += ["--max-requests", str(spec.max_requests)]
    if texts_file:
        cmd += ["--texts-file", texts_file]
    # The key goes through the environment, not the command line that `ps` shows; the spec's own, or none.
    env = {k: v for k, v in os.environ.items() if k != API_KEY_ENV}
    if spec.api_key:
        env[API_KEY_ENV] = spec.api_key
    bound_s = ready_timeout_s + spec.warmup_s + spec.duration_s + spec.timeout_s + 30
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=bound_s, env=env)
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise BenchError(f"load generator failed (exit {out.returncode}): {tail[0]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    raise SystemExit(main())
