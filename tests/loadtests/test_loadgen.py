"""The closed-loop load generator counts what the server answered and computes percentiles by rank."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from loadtests.errors import ServerNotUpError
from loadtests.loadgen import LoadSpec, percentile, run_load, wait_ready

from .conftest import SLOW_S, TinyServer, _free_port

TEXTS = ["one short text", "another, slightly longer text here", "third"]


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([7.0], 99) == 7
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2
    assert percentile([1.0, 2.0, 3.0, 4.0], 51) == 3
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile(values, 101)


def test_counts_requests_texts_and_scenarios(tiny_server: TinyServer) -> None:
    spec = LoadSpec(
        url=tiny_server.url,
        scenarios=["alpha", "beta"],
        texts_per_request=3,
        concurrency=1,  # one in flight: the server sees exactly the measured requests
        duration_s=60,
        warmup_s=0,
        max_requests=40,
    )
    result = asyncio.run(run_load(spec, TEXTS))
    assert result.requests == 40
    assert result.errors == 0
    assert result.sequences == 120
    assert tiny_server.counts.requests == 40
    assert tiny_server.counts.texts == 120
    assert tiny_server.counts.scenarios == {"alpha": 20, "beta": 20}
    assert result.seq_per_s == pytest.approx(3 * result.req_per_s, rel=0.01)
    assert result.p50_ms is not None and result.p50_ms <= result.p90_ms <= result.p99_ms


def test_errors_and_slow_tail_land_in_the_figures(tiny_server: TinyServer) -> None:
    tiny_server.behaviour["faults"] = True
    spec = LoadSpec(
        url=tiny_server.url, scenarios=["alpha"], concurrency=1, duration_s=60, warmup_s=0, max_requests=70
    )
    result = asyncio.run(run_load(spec, TEXTS))
    assert result.requests + result.errors == 70
    assert result.errors == tiny_server.counts.failed == 10  # every 7th of 70
    assert result.error_kinds == {"HTTP 500": 10}
    # 6 of the 60 answered requests slept SLOW_S: a tenth, so the p99 is one of them.
    assert tiny_server.counts.slow == 6
    assert result.p99_ms >= SLOW_S * 1000


def test_a_slower_scenario_keeps_its_share_of_requests(tiny_server: TinyServer) -> None:
    # beta answers slower than alpha. Workers that each kept to one scenario would send alpha far more
    # often in the closed loop; the requests alternate between the scenarios whatever each one's speed.
    tiny_server.behaviour["slow_beta"] = True
    spec = LoadSpec(url=tiny_server.url, scenarios=["alpha", "beta"], concurrency=2, duration_s=60,
                    warmup_s=0, max_requests=60)  # fmt: skip
    result = asyncio.run(run_load(spec, TEXTS))
    assert result.requests == 60
    sent = tiny_server.counts.scenarios
    assert abs(sent["alpha"] - sent["beta"]) <= 1, sent


def test_concurrent_load_counts_every_answer(tiny_server: TinyServer) -> None:
    spec = LoadSpec(url=tiny_server.url, scenarios=["alpha"], concurrency=8, duration_s=60, warmup_s=0,
                    max_requests=200)  # fmt: skip
    result = asyncio.run(run_load(spec, TEXTS))
    assert result.requests == 200
    # In-flight requests at the stop are answered but not counted: at most concurrency - 1 more.
    assert 200 <= tiny_server.counts.requests <= 207


def test_wait_ready_gives_up_within_its_bound() -> None:
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    start = time.monotonic()
    with pytest.raises(ServerNotUpError, match="not ready after 1s"):
        asyncio.run(wait_ready(url, timeout_s=1.0, interval_s=0.2))
    assert time.monotonic() - start < 10


def test_a_ready_timeout_of_0_asks_once(tiny_server: TinyServer) -> None:
    """It sent no probe at all and said a server that was up "was not ready after 0s (last: no answer)"."""
    asyncio.run(wait_ready(tiny_server.url, timeout_s=0))
    with pytest.raises(ServerNotUpError, match="not ready after 0s"):
        asyncio.run(wait_ready(f"http://127.0.0.1:{_free_port()}", timeout_s=0))


def test_cli_prints_one_json_line(tiny_server: TinyServer) -> None:
    cmd = [sys.executable, "-m", "loadtests.loadgen", "--url", tiny_server.url, "--scenario", "alpha",
           "--concurrency", "2", "--warmup-s", "0", "--duration-s", "30", "--max-requests", "20"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["requests"] == 20 and result["texts_per_request"] == 1


def test_cli_refuses_remote_url() -> None:
    cmd = [sys.executable, "-m", "loadtests.loadgen", "--url", "http://example.com", "--scenario", "a"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "refusing to send load" in out.stderr


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: no narrower affinity to run on")
def test_client_cpu_share_counts_the_cores_the_process_may_run_on() -> None:
    # A container (or taskset) that allows one core of many: a client busy on it uses all it has.
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from loadtests.loadgen import cpu_share; print(cpu_share(1.0, 1.0))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert float(out.stdout) == 1.0


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (("--ready-timeout-s", "1"), 1, "loadgen: http://127.0.0.1:{port}/readyz was not ready after 1s"),
        (("--concurrency", "0"), 2, "loadgen: --concurrency: Input should be greater than or equal to 1"),
        (("--texts-file", "/nonexistent/t"), 2, "loadgen: --texts-file: sentences file /nonexistent/t "),
        (("--texts-file", "/tmp"), 2, "loadgen: --texts-file: "),  # a folder: asked wrong, not a failed run
    ],
)
def test_cli_says_what_went_wrong_in_one_line(args: tuple[str, ...], code: int, said: str) -> None:
    """A server that is not up, an option out of range, a missing texts file: one line on stderr and the
    exit code (1: it ran and failed, 2: asked wrong), not a Python traceback."""
    with socket.socket() as sock:  # a port on this machine that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        cmd = [sys.executable, "-m", "loadtests.loadgen", "--url", f"http://127.0.0.1:{port}",
               "--scenario", "a", "--duration-s", "1", *args]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == code, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == [out.stderr.strip()], out.stderr[-2000:]
    assert out.stderr.startswith(said.format(port=port)), out.stderr[-2000:]
    assert out.stdout == ""


@pytest.mark.parametrize("option", ["--duration-s", "--warmup-s", "--timeout-s"])
def test_a_time_that_is_not_finite_is_refused(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--duration-s inf` passed LoadSpec and ran a load without a bound; refused before any request."""
    from loadtests.loadgen import main

    assert main(["--scenario", "s", option, "inf"]) == 2
    said = capsys.readouterr().err
    assert said.startswith(f"loadgen: {option}: ") and "finite" in said, said
