"""The `model-sync` sidecar (modelRepository.source objectStore) ends at once on SIGTERM.

Its shell is PID 1 of its container, and PID 1 ignores a signal it has no handler for: without a trap every
pod deletion waited out terminationGracePeriodSeconds (30 s by default) before the kubelet's SIGKILL. The
rendered script is run here under /bin/sh with a stand-in `rclone` on PATH, as PID 1 of a new PID namespace
where `unshare` allows one (as in the container), else as a plain process (whose default action would be
to die of the signal, not to exit 0), and must exit 0 within 2 s of SIGTERM, whether it is sleeping
between syncs or in the middle of one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from .chart_render import CHART, coalesce, load_values
from .gotemplate import render_objects

# A foreground child defers a trapped signal until it ends; the script must not wait that long.
EXIT_WITHIN_S = 2.0


def _sync_sidecar(values: dict[str, Any]) -> dict[str, Any]:
    (service,) = [o for o in render_objects(CHART, values) if o["kind"] == "RayService"]
    worker = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]
    (sidecar,) = [c for c in worker["spec"]["containers"] if c["name"] == "model-sync"]
    return sidecar


def _script(interval_s: int) -> str:
    values = coalesce(
        load_values(), {"modelRepository": {"objectStore": {"syncIntervalSeconds": interval_s}}}
    )
    sidecar = _sync_sidecar(values)
    assert sidecar["command"] == ["/bin/sh", "-c"]
    (script,) = sidecar["args"]
    return script


def test_sync_loop_traps_sigterm_and_waits_in_the_background() -> None:
    script = _script(60)
    trap = next(line.strip() for line in script.splitlines() if line.strip().startswith("trap "))
    assert trap.endswith("TERM INT") and "exit 0" in trap
    # `sleep N` / `rclone ...` in the foreground would hold the trap until they end: both run in the
    # background and the shell waits for them.
    assert "sleep 60 & child=$!" in script
    assert "/models & child=$!" in script and 'wait "$child" || echo "rclone sync failed' in script


def test_each_sync_copies_the_files_before_what_names_them() -> None:
    """rclone copies in no set order: a replica that saw an alias, manifest.json or base.json before the
    graph it lists would refuse the version. A first pass copies everything else; the sync comes second."""
    script = _script(60)
    copy = next(line.strip() for line in script.splitlines() if line.strip().startswith("rclone copy "))
    for named in ("--exclude manifest.json", "--exclude base.json", "--exclude '_aliases/**'"):
        assert named in copy
    assert script.index("rclone copy ") < script.index("rclone sync ")
    assert 'if wait "$child"; then' in script  # the sync only after the copy succeeded


@cache
def _pid_namespace_prefix() -> tuple[str, ...]:
    """`unshare` making the shell PID 1 of a new PID namespace (user namespace, no privileges), if allowed."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    prefix = (unshare, "--user", "--map-root-user", "--pid", "--fork", "--kill-child")
    try:
        probe = subprocess.run([*prefix, "/bin/sh", "-c", 'test "$$" = 1'], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return prefix if probe.returncode == 0 else ()


def _wait_for(predicate: Any, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError("the sync loop did not get there within 10 s")


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not Path("/bin/sh").exists(), reason="Linux /bin/sh"
)
@pytest.mark.parametrize("during", ["sleep", "rclone"])
def test_sync_loop_exits_at_once_on_sigterm(during: str, tmp_path: Path) -> None:
    import psutil

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    rclone = fake_bin / "rclone"
    # Stands in for a long `rclone sync`; never touches a bucket.
    rclone.write_text("#!/bin/sh\nsleep 30\n")
    rclone.chmod(0o755)
    # "sleep": TERM while the loop sleeps its interval; "rclone": TERM while a sync runs.
    script = _script(30 if during == "sleep" else 1)
    prefix = _pid_namespace_prefix()
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen([*prefix, "/bin/sh", "-c", script], env=env, start_new_session=True)
    try:
        launcher = psutil.Process(proc.pid)
        # The shell: the process itself, or unshare's one child (PID 1 in its namespace).
        shell = launcher if not prefix else _wait_for(lambda: next(iter(launcher.children()), None))

        def cmdline(child: Any) -> list[str]:
            try:
                return child.cmdline()
            except psutil.Error:  # a child that just ended (a zombie until the shell reaps it)
                return []

        def busy() -> bool:
            return any(
                (during == "sleep" and cmdline(c)[:1] == ["sleep"])
                or (during == "rclone" and any(str(rclone) == a for a in cmdline(c)))
                for c in shell.children()
            )

        _wait_for(busy)
        os.kill(shell.pid, signal.SIGTERM)
        sent = time.monotonic()
        try:
            code = proc.wait(timeout=EXIT_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the sync loop ({'PID 1' if prefix else 'plain process'}) was still running "
                f"{EXIT_WITHIN_S} s after SIGTERM during {during}: every pod deletion would wait out its "
                "grace period"
            )
        assert code == 0, f"ended by the signal ({code}), not by its trap: as PID 1 it would ignore SIGTERM"
        assert time.monotonic() - sent < EXIT_WITHIN_S
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        else:  # the stand-in's own sleep, if the shell left it behind outside a PID namespace
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
