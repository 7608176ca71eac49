"""Closed-loop HTTP load from wrk: a C client that costs the server far less CPU than a Python one.

The bench writes a Lua script that cycles through the same pre-encoded bodies the Python generator
sends (in the target's own request shape), runs `wrk -c N -t T --latency` for a fixed time against
127.0.0.1 (one warm-up run, then the measured one), and reads the figures from one JSON line that the
script's `done()` prints. wrk's own text report is parsed too, as a cross-check. The client's CPU time
comes from the kernel's accounting of the wrk process (`os.wait4`), so its share of the machine is
measured, not assumed.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import BenchError
from .loadgen import LoadResult, LoadSpec, cpu_share, wait_ready
from .loopback import require_loopback
from .request_shapes import RequestShape, auth_headers

JSON_MARK = "labelwise-wrk-json "
CHECK_EVERY = 64  # look inside one 2xx body in this many for the answer's result list
_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


# What done() may take after the load, undoing wrk's latency correction: each latency(i) call scans the
# histogram from its minimum, so a long tail (many buckets over a wide range) costs seconds (10 s of CPU
# for a 0-3 s tail at c=64). The bound on a wrk run allows for it rather than killing a finished load.
DONE_ALLOWANCE_S = 120


def find_wrk() -> str | None:
    """The wrk binary on PATH, or None (`make wrk` installs Debian's package)."""
    return shutil.which("wrk")


def lua_string(data: bytes) -> str:
    """A double-quoted Lua literal holding exactly these bytes (anything unusual as a \\ddd escape)."""
    out = []
    for byte in data:
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def lua_script(
    shape: RequestShape,
    bodies: list[bytes],
    prefix: str = "",
    headers: dict[str, str] | None = None,
    *,
    connections: int,
) -> str:
    """The wrk script: POST the bodies in turn, count non-2xx answers and bodies without results.

    prefix: the server's path under its base URL (a Serve route_prefix); wrk's request() takes the path
    from the script, not from the URL it is given. headers: sent with every request (the API key's).
    connections: wrk's -c, which its latency correction used (undone in done()).
    """
    if not bodies:
        raise ValueError("a wrk script needs at least one body")
    table = ",\n".join(f"  {lua_string(b)}" for b in bodies)
    extra = "".join(
        f"wrk.headers[{lua_string(name.encode())}] = {lua_string(value.encode())}\n"
        for name, value in (headers or {}).items()
    )
    return f"""-- written by loadtests/wrk.py for one load; safe to delete
local bodies = {{
{table}
}}
local path = {lua_string((prefix.rstrip("/") + shape.path).encode())}
local results_key = {lua_string(json.dumps(shape.results_key).encode())}
local threads = {{}}
local counter = 0
local answers = 0
non2xx = 0
bad_bodies = 0
statuses = {{}}

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{extra}
function setup(thread)
  thread:set("offset", #threads * 97)
  table.insert(threads, thread)
end

function init(args)
  counter = offset or 0
end

function request()
  counter = counter + 1
  return wrk.format(nil, path, nil, bodies[(counter % #bodies) + 1])
end

function response(status, headers, body)
  answers = answers + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
  elseif answers % {CHECK_EVERY} == 1 and not string.find(body, results_key, 1, true) then
    bad_bodies = bad_bodies + 1
  end
end

function done(summary, latency, requests)
  local n2, bad, merged = 0, 0, {{}}
  for _, thread in ipairs(threads) do
    n2 = n2 + thread:get("non2xx")
    bad = bad + thread:get("bad_bodies")
    for key, count in pairs(thread:get("statuses")) do
      merged[key] = (merged[key] or 0) + count
    end
  end
  local parts = {{}}
  for key, count in pairs(merged) do
    table.insert(parts, string.format('"%s":%d', key, count))
  end
  -- wrk 4.1 has already corrected latency for coordinated omission (stats_correct in wrk.c and stats.c):
  -- each answer of n us >= 2*step also counts at n - step, n - 2*step, ... while above step, with step =
  -- duration / (requests / connections). That suits a fixed-rate load; this one is closed-loop, so the
  -- made-up answers come out again: above step, a bucket holds its own count plus the corrected count
  -- step above it. latency(i) is the i-th non-empty bucket from min to max (value, count), ascending.
  local clock = os.clock()  -- this work is wrk's CPU time, not the load's: run_wrk takes it out
  local per_connection = math.floor(summary.requests / {connections})
  local step = per_connection > 0 and math.floor(summary.duration / per_connection) or 0
  local values, corrected = {{}}, {{}}
  for i = 1, #latency do
    local value, count = latency(i)
    values[i], corrected[value] = value, count
  end
  local own, n, sum = {{}}, 0, 0
  for i, value in ipairs(values) do
    local count = corrected[value]
    if step > 0 and value > step then
      count = count - (corrected[value + step] or 0)
    end
    own[i], n, sum = count, n + count, sum + count * value
  end
  local function percentile(p)  -- nearest rank, as loadgen.percentile
    local rank, seen = math.max(1, math.ceil(n * p / 100)), 0
    for i, value in ipairs(values) do
      seen = seen + own[i]
      if seen >= rank then return value end
    end
    return 0
  end
  local e = summary.errors
  io.write(string.format(
    '{JSON_MARK}{{"requests":%d,"duration_us":%d,"bytes":%d,"done_cpu_s":%.3f,' ..
    '"errors":{{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}},' ..
    '"non2xx":%d,"bad_bodies":%d,"statuses":{{%s}},' ..
    '"latency_us":{{"samples":%d,"min":%d,"max":%d,"mean":%.1f,"p50":%d,"p90":%d,"p99":%d}}}}\\n',
    summary.requests, summary.duration, summary.bytes, os.clock() - clock,
    e.connect, e.read, e.write, e.status, e.timeout,
    n2, bad, table.concat(parts, ","),
    n, latency.min, latency.max, n > 0 and sum / n or 0,
    percentile(50), percentile(90), percentile(99)))
end
"""


def parse_done_line(output: str) -> dict[str, Any]:
    """The JSON line the script's done() printed; BenchError when wrk never got that far."""
    for line in output.splitlines():
        if line.startswith(JSON_MARK):
            return json.loads(line[len(JSON_MARK) :])
    raise BenchError(f"wrk printed no result line; its output ended with: {output.strip()[-500:]!r}")


def _to_ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse_wrk_text(output: str) -> dict[str, Any]:
    """wrk's own report: requests, duration, req/s, latency percentiles (--latency), error lines."""
    out: dict[str, Any] = {"percentiles_ms": {}, "non2xx": 0, "socket_errors": {}}
    if m := re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", output, re.M):
        out["requests"] = int(m.group(1))
        out["duration_s"] = _to_ms(m.group(2), m.group(3)) / 1000
    if m := re.search(r"^Requests/sec:\s*([\d.]+)", output, re.M):
        out["req_per_s"] = float(m.group(1))
    for m in re.finditer(r"^\s*(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.M):
        out["percentiles_ms"][m.group(1)] = round(_to_ms(m.group(2), m.group(3)), 3)
    if m := re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output):
        out["non2xx"] = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        kinds = ("connect", "read", "write", "timeout")
        out["socket_errors"] = dict(zip(kinds, map(int, m.groups()), strict=True))
    return out


def _run_timed(cmd: list[str], bound_s: float) -> tuple[int, str, float, float]:
    """Run cmd; return (exit code, stdout+stderr, wall s, CPU s of the process from the kernel)."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        timer = threading.Timer(bound_s, proc.kill)
        timer.start()
        reaped = False
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
            reaped = True
        finally:
            timer.cancel()
            if not reaped:
                # Interrupted (SIGTERM as SystemExit, or any error) while wrk still loads the server.
                proc.kill()
                proc.wait()
        wall_s = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    return proc.returncode, text, wall_s, usage.ru_utime + usage.ru_stime


def wrk_command(wrk: str, url: str, script: Path, connections: int, threads: int, seconds: int,
                timeout_s: float) -> list[str]:  # fmt: skip
    return [
        wrk, "-c", str(connections), "-t", str(max(1, min(threads, connections))),
        "-d", f"{seconds}s", "--timeout", f"{max(1, math.ceil(timeout_s))}s", "--latency",
        "-s", str(script), url,
    ]  # fmt: skip


def run_wrk(
    spec: LoadSpec, texts: list[str], threads: int = 1, ready_timeout_s: float = 10.0, wrk: str | None = None
) -> dict[str, Any]:
    """One closed-loop load with wrk: warm-up run, measured run; the LoadResult fields plus wrk's own."""
    from .loadgen import build_bodies

    if spec.max_requests:  # wrk runs for a time, never to a count: refused rather than ignored
        raise BenchError("wrk cannot stop at max_requests: use the Python load generator for a count")
    wrk = wrk or find_wrk()
    if wrk is None:
        raise BenchError("wrk is not on PATH: `make wrk` installs it, or use the Python load generator")
    base = require_loopback(spec.url)
    shape = spec.request_shape()
    asyncio.run(wait_ready(base, ready_timeout_s, ready_path=shape.ready_path))
    with tempfile.TemporaryDirectory(prefix="labelwise-wrk-") as tmp:
        script = Path(tmp) / "load.lua"
        bodies = [b for _, b in build_bodies(spec, texts)]
        # The script (the key in it, if any) lives in a private temporary folder, removed after the load.
        script.write_text(
            lua_script(
                shape,
                bodies,
                prefix=urlsplit(base).path,
                headers=auth_headers(spec.api_key),
                connections=spec.concurrency,
            ),
            encoding="utf-8",
        )
        url = base + shape.path

        def run(seconds: int) -> tuple[str, float, float]:
            cmd = wrk_command(wrk, url, script, spec.concurrency, threads, seconds, spec.timeout_s)
            code, text, wall_s, cpu_s = _run_timed(cmd, seconds + spec.timeout_s + 30 + DONE_ALLOWANCE_S)
            if code != 0:
                raise BenchError(f"wrk exited with code {code}: {text.strip()[-500:]}")
            return text, wall_s, cpu_s

        if spec.warmup_s > 0:
            run(math.ceil(spec.warmup_s))
        text, wall_s, cpu_s = run(max(1, math.ceil(spec.duration_s)))
    done = parse_done_line(text)
    # Undoing wrk's latency correction costs CPU once the load is over (0.1 s for 1,500 answers spread
    # over 400 ms): not the client's share of the machine under load.
    after_s = done.get("done_cpu_s", 0.0)
    return wrk_result(spec, done, parse_wrk_text(text), cpu_s - after_s, wall_s - after_s, threads)


def wrk_result(spec: LoadSpec, done: dict[str, Any], report: dict[str, Any], cpu_s: float, wall_s: float,
               threads: int) -> dict[str, Any]:  # fmt: skip
    """LoadResult's fields from wrk's figures; latencies cover every answer, as wrk records them (a note
    says so when some answers failed: the Python generator's cover successes only)."""
    errors = done["errors"]
    kinds = {f"HTTP {status}": n for status, n in done["statuses"].items()}
    # errors.status is wrk's count of answers >= 400, already in the per-status counts.
    for kind in ("connect", "read", "write", "timeout"):
        if errors[kind]:
            kinds[f"socket {kind}"] = errors[kind]
    if done["bad_bodies"]:
        kinds["no results in body"] = done["bad_bodies"]
    # wrk counts an answer that came after --timeout in its requests and in errors.timeout (once, in 4.1),
    # but leaves it out of the latency histogram: it is a failure here, as the Python generator counts it.
    # A late answer may also be non-2xx, and wrk's script cannot tell which were: the failures counted
    # beyond the answers there were are such answers, counted once, under their status. (Late non-2xx
    # answers beside successful ones can still count twice: ok errs low then, never high.)
    failed = done["non2xx"] + done["bad_bodies"] + errors["timeout"]
    twice = max(0, failed - done["requests"])
    if twice:
        kinds["socket timeout"] -= twice
        if not kinds["socket timeout"]:
            del kinds["socket timeout"]
    ok = done["requests"] - failed + twice
    elapsed_s = max(done["duration_us"] / 1e6, 1e-9)
    lat = done["latency_us"]
    # Percentiles only from a histogram that recorded answers (an empty one reads 0 ms, not "none").
    timed = ok > 0 and lat.get("max", 0) > 0
    result = LoadResult(
        requests=ok,
        errors=sum(kinds.values()),
        error_kinds=kinds,
        sequences=ok * spec.texts_per_request,
        elapsed_s=round(elapsed_s, 3),
        req_per_s=round(ok / elapsed_s, 2),
        seq_per_s=round(ok * spec.texts_per_request / elapsed_s, 2),
        p50_ms=round(lat["p50"] / 1000, 2) if timed else None,
        p90_ms=round(lat["p90"] / 1000, 2) if timed else None,
        p99_ms=round(lat["p99"] / 1000, 2) if timed else None,
        mean_ms=round(lat["mean"] / 1000, 2) if timed else None,
        concurrency=spec.concurrency,
        texts_per_request=spec.texts_per_request,
        scenarios=spec.scenarios,
        driver="wrk",
        client_cpu_s=round(cpu_s, 3),
        client_cpu_share=cpu_share(cpu_s, wall_s),
    ).model_dump()
    answered_failed = done["non2xx"] + done["bad_bodies"] - twice
    if timed and answered_failed > 0:  # wrk's histogram has no status: a fast refusal pulls p50 down
        result["note"] = f"latencies include {answered_failed} failed answers (wrk times every answer)"
    result["wrk"] = {
        "threads": max(1, min(threads, spec.concurrency)),
        "req_per_s_reported": report.get("req_per_s"),
        "percentiles_ms_reported": report.get("percentiles_ms"),
        "non2xx_reported": report.get("non2xx"),
    }
    return result
