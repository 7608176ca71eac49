"""Locust against a server with an api_key sends its key; a refused scenario list is reported with its
status; a direct `locust -f loadtests/locustfile.py` keeps to this machine; --texts-per-request 0 is refused.

Locust monkey-patches the standard library with gevent on import, so it only runs in child processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import API_KEY, KeyedServer, TinyServer

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = str(ROOT / "loadtests" / "locustfile.py")


def _env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("LABELWISE_")}
    return {**keep, "PYTHONPATH": str(ROOT), **extra}


def _loadtest(
    host: str, reports: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "loadtests.run", "--host", host, "--users", "2", "--run-time-s", "3",
           "--texts-per-request", "2", "--reports-dir", str(reports), *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env or _env(), cwd=ROOT)


def _locust(host: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--headless", "--host", host, "-u", "1",
           "-t", "2s", "--only-summary", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env(), cwd=ROOT)


def test_locust_sends_the_api_key(keyed_server: KeyedServer, tmp_path: Path) -> None:
    out = _loadtest(keyed_server.url, tmp_path, "--api-key", API_KEY)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert keyed_server.counts.requests > 0 and set(keyed_server.counts.scenarios) == {"alpha"}
    stats = next(tmp_path.glob("*_stats.csv")).read_text().splitlines()
    aggregated = next(line for line in stats if ",Aggregated," in line).split(",")
    assert aggregated[3] == "0"  # failures: every request got past the key check
    # The key travels in Locust's environment, read as `labelwise classify` reads it.
    again = _loadtest(keyed_server.url, tmp_path / "env", env=_env(LABELWISE_API_KEY=API_KEY))
    assert again.returncode == 0, again.stderr[-3000:]


def test_a_refused_scenario_list_is_reported_with_its_status(
    keyed_server: KeyedServer, tmp_path: Path
) -> None:
    out = _loadtest(keyed_server.url, tmp_path)
    said = out.stdout + out.stderr
    assert "GET /v1/scenarios: HTTP 401: the server wants its api_key; pass it with --api-key" in said
    assert "lists no serving scenario" not in said
    assert keyed_server.counts.requests == 0


def test_locust_run_directly_refuses_a_remote_host(tiny_server: TinyServer) -> None:
    # 0.0.0.0 reaches this machine's listeners on Linux, but it is not a loopback address: refused.
    port = tiny_server.url.rsplit(":", 1)[1]
    out = _locust(f"http://0.0.0.0:{port}", "--scenarios", "alpha")
    assert out.returncode != 0
    assert "locustfile: refusing to send load to '0.0.0.0'" in out.stderr
    assert tiny_server.counts.requests == 0


def test_zero_texts_per_request_is_refused(tiny_server: TinyServer, tmp_path: Path) -> None:
    out = _loadtest(tiny_server.url, tmp_path, "--texts-per-request", "0")
    assert out.returncode == 2 and "--texts-per-request must be >= 1" in out.stderr
    direct = _locust(tiny_server.url, "--scenarios", "alpha", "--texts-per-request", "0")
    assert direct.returncode != 0
    assert "locustfile: --texts-per-request must be >= 1, got 0" in direct.stderr
    assert tiny_server.counts.requests == 0
