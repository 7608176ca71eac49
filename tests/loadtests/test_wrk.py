"""The wrk driver: its Lua script really runs in wrk against a local server, and its figures add up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loadtests.errors import BenchError
from loadtests.load_drivers import resolve_driver, run_one_load
from loadtests.loadgen import LoadSpec
from loadtests.request_shapes import SHAPES
from loadtests.wrk import find_wrk, lua_script, lua_string, parse_done_line, parse_wrk_text, run_wrk

from .conftest import RARE_SLOW_S, SLOW_S, TinyServer

TEXTS = ['a "quoted" text with a \\ backslash', "ünïcödé ✓ text", "plain text", "line\nbreak"]
needs_wrk = pytest.mark.skipif(find_wrk() is None, reason="wrk is not installed (`make wrk`)")

# wrk 4.1's report for a run with --latency, as it prints it (units vary per value).
WRK_TEXT = """Running 3s test @ http://127.0.0.1:8123/v1/classify
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   151.20ms   20.13ms 412.00ms   88.10%
    Req/Sec   210.33     30.12   260.00     70.00%
  Latency Distribution
     50%  148.00ms
     75%  160.50ms
     90%  175.25ms
     99%    1.02s
  631 requests in 3.01s, 150.20KB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:    209.63
Transfer/sec:     49.90KB
"""


def test_lua_string_escapes_every_unusual_byte() -> None:
    assert lua_string(b'{"a": "b\\\\c"}') == '"{\\"a\\": \\"b\\\\\\\\c\\"}"'
    assert lua_string("é\n".encode()) == '"\\195\\169\\010"'
    assert lua_string(b"") == '""'


def test_script_holds_every_body_in_order_and_the_shape_path() -> None:
    bodies = [b'{"n": 1}', b'{"n": 2}']
    script = lua_script(SHAPES["infinity"], bodies, connections=1)
    assert script.index(lua_string(bodies[0])) < script.index(lua_string(bodies[1]))
    assert 'local path = "/classify"' in script
    assert 'wrk.method = "POST"' in script
    with pytest.raises(ValueError, match="at least one body"):
        lua_script(SHAPES["labelwise"], [], connections=1)


def test_parse_wrk_text_reads_units_and_error_lines() -> None:
    parsed = parse_wrk_text(WRK_TEXT)
    assert parsed["requests"] == 631
    assert parsed["duration_s"] == pytest.approx(3.01)
    assert parsed["req_per_s"] == 209.63
    assert parsed["percentiles_ms"] == {"50": 148.0, "75": 160.5, "90": 175.25, "99": 1020.0}
    assert parsed["non2xx"] == 7
    assert parsed["socket_errors"] == {"connect": 0, "read": 2, "write": 0, "timeout": 1}


def test_missing_result_line_is_a_clear_error() -> None:
    with pytest.raises(BenchError, match="wrk printed no result line"):
        parse_done_line("unable to connect to 127.0.0.1:9 Connection refused")


@needs_wrk
def test_wrk_counts_what_the_server_answered(tiny_server: TinyServer) -> None:
    tiny_server.behaviour["faults"] = True  # every 7th answers 500, every 10th sleeps SLOW_S
    spec = LoadSpec(url=tiny_server.url, scenarios=["alpha", "beta"], texts_per_request=2, concurrency=1,
                    duration_s=2, warmup_s=0)  # fmt: skip
    result = run_wrk(spec, TEXTS, threads=1)
    counts = tiny_server.counts
    answered = result["requests"] + result["errors"]
    # One connection: the server saw the measured requests plus at most the one in flight at the stop.
    assert 0 <= counts.requests - answered <= 1
    assert result["errors"] == result["error_kinds"]["HTTP 500"]
    assert abs(result["error_kinds"]["HTTP 500"] - counts.failed) <= 1
    assert result["wrk"]["non2xx_reported"] == result["errors"]  # wrk's own count agrees with the script's
    assert abs(counts.scenarios["alpha"] - counts.scenarios["beta"]) <= 1
    assert abs(counts.texts - 2 * (counts.requests - counts.failed)) <= 2
    assert result["sequences"] == 2 * result["requests"]
    assert result["p50_ms"] < SLOW_S * 1000 <= result["p99_ms"]  # a tenth of answers sleep: p99 is one
    assert result["driver"] == "wrk" and 0 < result["client_cpu_share"] < 1
    assert result["elapsed_s"] == pytest.approx(2, abs=0.5)


@needs_wrk
def test_wrk_latencies_are_the_answers_own_without_made_up_samples(tiny_server: TinyServer) -> None:
    # wrk 4.1 corrects its histogram for coordinated omission (a fixed-rate load's): each slow answer also
    # counts at every expected interval below it. This load is closed-loop: the answers' own latencies.
    tiny_server.behaviour["rare_slow"] = True  # under 1 % of the answers take RARE_SLOW_S
    spec = LoadSpec(url=tiny_server.url, scenarios=["alpha"], concurrency=1, duration_s=3, warmup_s=0)
    result = run_wrk(spec, TEXTS, threads=1)
    assert tiny_server.counts.slow >= 1 and result["errors"] == 0
    slow_ms = RARE_SLOW_S * 1000
    assert result["wrk"]["percentiles_ms_reported"]["99"] > slow_ms / 2  # wrk's own: made-up samples
    assert result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"] < slow_ms / 2  # a fast answer
    assert result["mean_ms"] < slow_ms / 10


@needs_wrk
def test_wrk_posts_under_the_urls_path(tiny_server: TinyServer) -> None:
    # wrk's request() takes its path from the script: a server under a route prefix gets it too.
    spec = LoadSpec(url=tiny_server.url + "/mounted", scenarios=["alpha"], concurrency=1, duration_s=1,
                    warmup_s=0)  # fmt: skip
    result = run_wrk(spec, TEXTS, threads=1)
    assert result["errors"] == 0 and result["requests"] > 0
    assert set(tiny_server.counts.paths) == {"/mounted/v1/classify"}


@needs_wrk
def test_answers_after_the_timeout_are_failures_without_latencies(tiny_server: TinyServer) -> None:
    # Every answer takes STALL_S, past wrk's 1 s --timeout: wrk counts them in its requests and its
    # timeouts, and records no latency. None may count as answered, and no p99 of 0 ms may be reported.
    tiny_server.behaviour["stall"] = True
    spec = LoadSpec(url=tiny_server.url, scenarios=["alpha"], concurrency=2, duration_s=3, warmup_s=0,
                    timeout_s=1)  # fmt: skip
    result = run_wrk(spec, TEXTS, threads=1)
    assert result["requests"] == 0 and result["req_per_s"] == 0
    assert result["error_kinds"].get("socket timeout", 0) > 0
    assert result["p50_ms"] is None and result["p99_ms"] is None


def test_a_record_with_late_answers_counts_them_as_failures() -> None:
    from loadtests.wrk import wrk_result

    spec = LoadSpec(url="http://127.0.0.1:9", scenarios=["a"], duration_s=1, warmup_s=0)
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 3, "status": 0}
    done = {"requests": 10, "non2xx": 0, "bad_bodies": 0, "errors": errors, "statuses": {},
            "duration_us": 1_000_000, "latency_us": {"min": 5, "max": 900, "mean": 50.0, "p50": 40, "p90": 80,
                                                    "p99": 900}}  # fmt: skip
    result = wrk_result(spec, done, {}, cpu_s=0.1, wall_s=1.0, threads=1)
    assert result["requests"] == 7 and result["errors"] == 3 and result["p99_ms"] == 0.9
    empty = {**done, "requests": 3, "latency_us": {k: 0 for k in done["latency_us"]}}
    result = wrk_result(spec, empty, {}, cpu_s=0.1, wall_s=1.0, threads=1)
    assert result["requests"] == 0 and result["p50_ms"] is None and result["p99_ms"] is None


def test_a_late_non_2xx_answer_is_one_failure() -> None:
    from loadtests.wrk import wrk_result

    spec = LoadSpec(url="http://127.0.0.1:9", scenarios=["a"], duration_s=1, warmup_s=0)
    # Every answer a 504, each after --timeout: wrk counts them in non-2xx and in errors.timeout.
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 4, "status": 4}
    done = {"requests": 4, "non2xx": 4, "bad_bodies": 0, "errors": errors, "statuses": {"504": 4},
            "duration_us": 1_000_000, "latency_us": {"min": 0, "max": 0, "mean": 0.0, "p50": 0, "p90": 0,
                                                    "p99": 0}}  # fmt: skip
    result = wrk_result(spec, done, {}, cpu_s=0.1, wall_s=1.0, threads=1)
    assert (result["requests"], result["errors"], result["error_kinds"]) == (0, 4, {"HTTP 504": 4})
    # Late 2xx answers beside quick 503s: other answers, each counted once as well.
    errors = {**errors, "timeout": 2, "status": 3}
    done = {**done, "requests": 10, "non2xx": 3, "statuses": {"503": 3}, "errors": errors,
            "latency_us": {"min": 5, "max": 900, "mean": 50.0, "p50": 40, "p90": 80, "p99": 900}}  # fmt: skip
    result = wrk_result(spec, done, {}, cpu_s=0.1, wall_s=1.0, threads=1)
    assert (result["requests"], result["errors"]) == (5, 5)
    assert result["error_kinds"] == {"HTTP 503": 3, "socket timeout": 2}


@needs_wrk
def test_wrk_drives_the_infinity_shape_with_many_connections(tiny_server: TinyServer) -> None:
    spec = LoadSpec(url=tiny_server.url, scenarios=["bench-model"], concurrency=8, duration_s=1, warmup_s=1,
                    shape="infinity")  # fmt: skip
    result = run_one_load(spec, None, "wrk", ready_timeout_s=5, wrk_threads=2)
    assert result["errors"] == 0 and result["requests"] > 0
    assert result["wrk"]["threads"] == 2
    assert set(tiny_server.counts.scenarios) == {"bench-model"}  # only /classify was hit
    # warm-up + measured run: the server saw more than the measured requests
    assert tiny_server.counts.requests > result["requests"]


def test_python_driver_speaks_the_infinity_shape_and_reports_its_cpu(tiny_server: TinyServer) -> None:
    spec = LoadSpec(url=tiny_server.url, scenarios=["bench-model"], concurrency=2, duration_s=1, warmup_s=0,
                    shape="infinity")  # fmt: skip
    result = run_one_load(spec, None, "python", ready_timeout_s=5)
    assert result["driver"] == "python" and result["errors"] == 0 and result["requests"] > 0
    assert tiny_server.counts.scenarios == {"bench-model": tiny_server.counts.requests}
    assert 0 < result["client_cpu_share"] < 1


def test_auto_falls_back_to_python_without_wrk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no wrk
    assert resolve_driver("auto") == "python"
    with pytest.raises(BenchError, match="make wrk"):
        resolve_driver("wrk")
    with pytest.raises(BenchError, match="unknown load driver"):
        resolve_driver("ab")


@needs_wrk
def test_auto_picks_wrk_when_installed() -> None:
    assert resolve_driver("auto") == "wrk"
    assert os.access(find_wrk() or "", os.X_OK)


@needs_wrk
def test_wrk_refuses_a_remote_url() -> None:
    spec = LoadSpec(url="http://example.com:8000", scenarios=["a"], duration_s=1, warmup_s=0)
    with pytest.raises(ValueError, match="refusing to send load"):
        run_wrk(spec, TEXTS)


def test_wrk_latencies_that_include_failed_answers_say_so() -> None:
    """wrk's histogram has no status: quick 429s pull its p50 down, where the Python generator times
    successes only."""
    from loadtests.wrk import wrk_result

    spec = LoadSpec(url="http://127.0.0.1:9", scenarios=["a"], duration_s=1, warmup_s=0)
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "status": 9}
    done = {"requests": 10, "non2xx": 9, "bad_bodies": 0, "errors": errors, "statuses": {"429": 9},
            "duration_us": 1_000_000, "latency_us": {"min": 5, "max": 500_000, "mean": 50_000.0, "p50": 1000,
                                                    "p90": 1000, "p99": 500_000}}  # fmt: skip
    result = wrk_result(spec, done, {}, cpu_s=0.1, wall_s=1.0, threads=1)
    assert result["note"] == "latencies include 9 failed answers (wrk times every answer)"
    clean = {**done, "non2xx": 0, "statuses": {}, "errors": {**errors, "status": 0}}
    assert "note" not in wrk_result(spec, clean, {}, cpu_s=0.1, wall_s=1.0, threads=1)


def test_options_a_driver_cannot_honour_are_refused_or_passed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """wrk ran its whole duration whatever max_requests said, and the Python generator's child process ran
    with a 30 s timeout and seed 0 whatever the spec said (its bound counted the spec's timeout)."""
    import subprocess

    from loadtests.loadgen import run_in_subprocess

    spec = LoadSpec(url="http://127.0.0.1:9", scenarios=["s"], max_requests=5, timeout_s=120.0, seed=7)
    with pytest.raises(BenchError, match="max_requests"):
        run_wrk(spec, ["hello"], wrk="/bin/false")
    seen: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout='{"requests": 0}\n', stderr="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    run_in_subprocess(spec, None)
    (cmd,) = seen
    assert cmd[cmd.index("--timeout-s") + 1] == "120.0" and cmd[cmd.index("--seed") + 1] == "7"
    assert cmd[cmd.index("--max-requests") + 1] == "5"
