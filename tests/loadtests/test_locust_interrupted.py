"""Ctrl-C on `make loadtest`: run.py waits for Locust to stop and write its reports, lists them, and exits
130 with one line. Before, subprocess.run gave Locust 0.25 s before killing it (an interrupt that reached
run.py alone, as `kill -INT` sends it, left no report at all) and run.py ended in a KeyboardInterrupt
traceback without naming the reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .test_locust_answers import _server
from .test_locust_guards import ROOT, _env


@pytest.mark.parametrize("to_group", [True, False], ids=["terminal-ctrl-c", "kill-int-run-py"])
def test_an_interrupted_run_keeps_its_reports(tmp_path: Path, to_group: bool) -> None:
    hits: list[str] = []
    with _server("ok", hits) as url:
        cmd = [sys.executable, "-m", "loadtests.run", "--host", url, "--users", "2", "--run-time-s", "60",
               "--scenarios", "s", "--texts-per-request", "2", "--reports-dir", str(tmp_path)]  # fmt: skip
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, as a terminal's foreground job
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            deadline = time.monotonic() + 30
            while len(hits) < 5 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert hits, "locust sent nothing"
            if to_group:
                os.killpg(proc.pid, signal.SIGINT)
            else:
                proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=45)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 130, out[-3000:]
    assert "loadtest: interrupted" in out and "Traceback" not in out, out[-3000:]
    (report,) = tmp_path.glob("*.json")
    assert f"loadtest: reports {report}" in out, out[-3000:]
    assert sum(e["num_requests"] for e in json.loads(report.read_text())) > 0
