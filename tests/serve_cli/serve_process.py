"""`labelwise serve` started as a user starts it: a child process, its Ray tree watched by psutil."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from serving import local_ray

ROOT = Path(__file__).resolve().parents[2]
# What serving.local_ray sets for a local Ray, plus no model hub.
LOCAL_ENV = {
    **local_ray.LOCAL_ENV,
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


free_port = local_ray.free_loopback_port


class ServeProcess:
    """One `labelwise serve --config FILE --port N [flags]` child, with its own short TMPDIR (Ray's unix
    sockets need a short path; the server makes its lw-ray-* folder there, so a test can see it go).

    Every process seen in its tree is remembered, so a test can check that none outlives the stop, and
    the context exit kills whatever is left."""

    def __init__(
        self,
        workdir: Path,
        serving_args: dict[str, Any],
        *flags: str,
        env: dict[str, str] | None = None,
        cpus: set[int] | None = None,
    ) -> None:
        import psutil

        self.psutil = psutil
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmpdir = Path(tempfile.mkdtemp(prefix="lw-t-"))
        self.config = workdir / "serve.yaml"
        self.config.write_text(yaml.safe_dump(serving_args), encoding="utf-8")
        self.log_path = workdir / "serve.log"
        self.flags = flags
        self.extra_env = env or {}
        self.cpus = cpus  # the CPU affinity the server (and so its Ray tree) starts with; None: this one's
        self.seen: dict[int, Any] = {}
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServeProcess:
        env = {**os.environ, **LOCAL_ENV, "TMPDIR": str(self.tmpdir), **self.extra_env}
        env.pop("LABELWISE_RAY_TEMP_DIR", None)
        self._log = open(self.log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [*self.command(), "--port", str(self.port), *self.flags],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=None if self.cpus is None else lambda: os.sched_setaffinity(0, self.cpus),
        )
        return self

    def command(self) -> list[str]:
        return [sys.executable, "-m", "labelwise.cli", "serve", "--config", str(self.config)]

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for p in self.seen.values():
            with contextlib.suppress(self.psutil.NoSuchProcess):
                if p.is_running():
                    p.kill()
        self._log.close()
        # Serve's controller and replica logs, kept beside serve.log for a failed test's reader.
        for log in self.tmpdir.glob("lw-ray-*/ray/session_latest/logs/serve/*.log"):
            with contextlib.suppress(OSError):
                shutil.copy(log, self.log_path.parent / log.name)
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def remember_tree(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(self.psutil.NoSuchProcess):
            root = self.psutil.Process(self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                self.seen.setdefault(p.pid, p)

    def wait_ready(self, timeout_s: float = 180) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            self.remember_tree()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    self.remember_tree()
                    return
            time.sleep(0.5)
        raise AssertionError(f"not ready in {timeout_s:g} s:\n{self.log_tail()}")

    def wait_for_line(self, text: str, timeout_s: float = 180) -> str:
        """The first line of the server's output that holds text, once it is there."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            self.remember_tree()
            for line in self.log_path.read_text(errors="replace").splitlines():
                if text in line:
                    return line
            time.sleep(0.5)
        raise AssertionError(f"no line with {text!r} in {timeout_s:g} s:\n{self.log_tail()}")

    def replicas(self) -> list[Any]:
        """The live Serve replica processes of this server (ray::ServeReplica:...)."""
        self.remember_tree()
        found = []
        for p in self.seen.values():
            with contextlib.suppress(self.psutil.NoSuchProcess):
                if p.is_running() and "ServeReplica" in " ".join([p.name(), *p.cmdline()]):
                    found.append(p)
        return found

    def listeners(self) -> list[tuple[Any, Any]]:
        """(process, socket) for every socket of the server's tree listening on its port."""
        self.remember_tree()
        found = []
        for p in self.seen.values():
            with contextlib.suppress(self.psutil.NoSuchProcess):
                if p.is_running():
                    found += [
                        (p, c)
                        for c in p.net_connections(kind="tcp")
                        if c.status == self.psutil.CONN_LISTEN and c.laddr.port == self.port
                    ]
        return found

    def ray_temp_folders(self) -> list[Path]:
        return sorted(self.tmpdir.glob("lw-ray-*"))

    def stop(self, sig: signal.Signals, timeout_s: float) -> tuple[int, float]:
        """Send sig; the exit code and the seconds until the process ended."""
        assert self.proc is not None
        self.remember_tree()
        start = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout_s)
        return code, time.monotonic() - start

    def survivors(self, timeout_s: float) -> list[int]:
        """Pids of the tree (other than the server itself) still alive after timeout_s."""
        assert self.proc is not None
        others = [p for pid, p in self.seen.items() if pid != self.proc.pid]
        return [p.pid for p in self.psutil.wait_procs(others, timeout=timeout_s)[1]]
