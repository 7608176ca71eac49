"""Ctrl-C on `make loadtest`: run.py waits for Locust to stop and write its reports, lists them, and exits
130 with one line. Before, subprocess.run gave Locust 0.25 s before killing it (an interrupt that reached
run.py alone, as `kill -INT` sends it, left no report at all) and run.py ended in a KeyboardInterrupt
traceback without naming the reports."""

from __future__ import annotations

import contextlib
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


def test_locust_leaves_a_ctrl_c_to_run_py(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches Locust too, and one that landed while a user's task ran ended that
    greenlet in a KeyboardInterrupt traceback (seen in CI). Locust now ignores SIGINT: an interrupt sent to
    it alone leaves the run going, and run.py stops it (SIGTERM) when the interrupt reaches run.py."""
    import psutil

    hits: list[str] = []
    with _server("ok", hits) as url:
        cmd = [sys.executable, "-m", "loadtests.run", "--host", url, "--users", "2", "--run-time-s", "60",
               "--scenarios", "s", "--reports-dir", str(tmp_path)]  # fmt: skip
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while len(hits) < 5 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert hits, "locust sent nothing"
            (locust,) = psutil.Process(proc.pid).children()
            for _ in range(5):  # several, so that some land while a task runs
                with contextlib.suppress(psutil.NoSuchProcess):  # gone: said below
                    locust.send_signal(signal.SIGINT)
                time.sleep(0.2)
            sent = len(hits)
            time.sleep(1.0)
            assert locust.is_running() and proc.poll() is None, "an interrupt sent to Locust alone stopped it"
            assert len(hits) > sent  # the users go on
            os.killpg(proc.pid, signal.SIGINT)
            out, _ = proc.communicate(timeout=45)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 130 and "Traceback" not in out and "loadtest: interrupted" in out, out[-3000:]
    (report,) = tmp_path.glob("*.json")
    assert sum(e["num_requests"] for e in json.loads(report.read_text())) > 0
