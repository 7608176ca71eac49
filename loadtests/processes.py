"""Child processes of the benchmark: start them, measure their memory, stop them and all they spawned."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .errors import BenchError, ServerNotUpError
from .loadgen import wait_ready


@dataclass
class ServerProcess:
    """A server we started on 127.0.0.1, with its log file."""

    name: str
    url: str
    proc: subprocess.Popen
    log_path: Path
    ready_path: str = "/readyz"
    seen: dict[int, object] = field(default_factory=dict)  # pid -> psutil.Process

    def tree(self) -> list:
        """The process and all its live descendants (psutil.Process objects)."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        for p in procs:
            self.seen.setdefault(p.pid, p)
        return procs

    def _readings(self) -> list[tuple[list[str], int, int]]:
        """(command line, RSS bytes, PSS bytes) of each live process of the tree."""
        import psutil

        out = []
        for proc in self.tree():
            try:
                info = proc.memory_full_info()
                out.append((proc.cmdline(), info.rss, getattr(info, "pss", info.rss)))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return out

    def memory_mb(self) -> dict[str, float | int | None]:
        """RSS and PSS summed over the process tree (PSS counts shared pages once, split among sharers);
        None for both when the tree is gone (the server exited): not measured, never a tree of 0 MB."""
        readings = self._readings()
        if not readings or self.proc.poll() is not None:
            return {"rss_mb": None, "pss_mb": None, "processes": len(readings)}
        rss = sum(r[1] for r in readings)
        pss = sum(r[2] for r in readings)
        return {"rss_mb": round(rss / 2**20, 1), "pss_mb": round(pss / 2**20, 1), "processes": len(readings)}

    def memory_by_process(self) -> list[dict[str, float | str]]:
        """PSS and RSS per process of the tree, largest PSS first, named as `ps` shows them (Ray renames its
        workers `ray::ServeReplica:...`; its daemons by their executable or script)."""
        rows: list[dict[str, float | str]] = [
            {
                "process": process_label(cmdline),
                "pss_mb": round(pss / 2**20, 1),
                "rss_mb": round(rss / 2**20, 1),
            }
            for cmdline, rss, pss in self._readings()
        ]
        return sorted(rows, key=lambda r: -float(r["pss_mb"]))

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Every process of the tree stopped (SIGSTOP) for the block, then continued: the machine to
        another measurement alone (the bench's ceiling around a load), without the idle server's background
        work (Ray's controller, GCS and agents: 5-8 % of the 2-core box). A stop of a few seconds is like a
        long GC pause to Ray; the served tree answered as before after three 7 s stops in a trial."""
        import psutil

        stopped = []
        try:
            for proc in self.tree():
                try:
                    proc.suspend()
                except psutil.NoSuchProcess:
                    continue
                stopped.append(proc)
            deadline = time.monotonic() + 2.0  # a signal is delivered when the process next runs
            for proc in stopped:
                while time.monotonic() < deadline and _status(proc) not in (psutil.STATUS_STOPPED, None):
                    time.sleep(0.005)
            yield
        finally:
            for proc in reversed(stopped):
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.resume()

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _status(proc: object) -> str | None:
    """A process's state as psutil reads it, None once it is gone."""
    import psutil

    try:
        return proc.status()  # type: ignore[attr-defined]
    except psutil.NoSuchProcess:
        return None


@contextlib.contextmanager
def terminated_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit(143) in the main thread for the block, so that `finally` blocks run: the
    servers the bench started are stopped, and a tree paused for a ceiling measurement is continued.
    Python's default SIGTERM ends the process at once, leaving them running (or stopped: SIGSTOP'd
    processes hold their own SIGTERM until someone sends SIGCONT)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_143(_signum: int, _frame: object) -> None:
        # Once: a second SIGTERM (an impatient parent, systemd) would cut short the finally blocks that stop
        # the servers. The previous handler is back when the block ends.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SystemExit(143)

    previous = signal.signal(signal.SIGTERM, exit_143)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def process_label(cmdline: list[str]) -> str:
    """`ray::ServeController`, `gcs_server`, `labelwise serve`, `dashboard/agent.py`: what a process is."""
    if not cmdline:
        return "?"
    first = cmdline[0]
    if first.startswith("ray::"):
        return first.split()[0].split(".")[0]  # `ray::ServeController.listen_for_change` -> the actor
    for i, arg in enumerate(cmdline[1:], 1):
        if arg == "-m" and i + 1 < len(cmdline):
            return " ".join(cmdline[i + 1 : i + 3])  # `-m labelwise.cli serve`
        if arg.endswith(".py") or (not arg.startswith("-") and "/" in arg):
            return "/".join(Path(arg).parts[-2:])
    return Path(first).name


def port_taken(host: str, port: int) -> str | None:
    """Why a server could not listen on host:port now (`labelwise serve`'s own check), or None."""
    from model_repository.errors import UsageError
    from serving.ports import check_port_free

    try:
        check_port_free(host, port)
    except UsageError as exc:
        return str(exc)
    return None


def require_free_port(name: str, url: str) -> None:
    """BenchError naming host:port when a server started for url could not listen there."""
    parts = urlsplit(url)
    try:
        port = parts.port or 0
    except ValueError:  # urlsplit reads the port only when asked, and refuses one past 65535 then
        raise BenchError(f"{name}: {url}: use a TCP port from 1 to 65535") from None
    why = port_taken(parts.hostname or "127.0.0.1", port)
    if why is not None:
        raise BenchError(
            f"{name}: {why}. An earlier bench's server may still run there: the bench starts its servers in "
            f"their own sessions, so they outlive a killed bench (`ss -ltnp 'sport = :{port}'` shows "
            "its pid)"
        )


def start_server(
    name: str,
    cmd: list[str],
    url: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    ready_path: str = "/readyz",
) -> ServerProcess:
    """Start cmd in its own session (so that stopping it reaches its children), logging to log_path.

    Refused (BenchError) when url's port is taken: whatever listens there would answer the readiness probe
    and take the load in place of the server started here."""
    require_free_port(name, url)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    return ServerProcess(name, url, proc, log_path, ready_path=ready_path)


def wait_server_ready(server: ServerProcess, timeout_s: float) -> float:
    """Wait for /readyz; fail fast if the process exits. Returns seconds waited."""
    start = time.monotonic()
    deadline = start + timeout_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(
                f"{server.name} exited with code {server.proc.returncode} while starting; "
                f"log {server.log_path}:\n{server.tail()}"
            )
        server.tree()  # remember the pids it spawns, to clean up after it
        try:
            wait_s = min(5.0, max(0.5, deadline - time.monotonic()))
            asyncio.run(wait_ready(server.url, wait_s, ready_path=server.ready_path))
        except ServerNotUpError:
            continue
        if server.proc.poll() is not None:  # another process answered for it, and it gave up
            raise BenchError(
                f"{server.name} exited with code {server.proc.returncode} while {server.url}"
                f"{server.ready_path} answered: another server answers on its port; "
                f"log {server.log_path}:\n{server.tail()}"
            )
        return time.monotonic() - start
    raise ServerNotUpError(
        f"{server.name} at {server.url} was not ready after {timeout_s:.0f}s; "
        f"log {server.log_path}:\n{server.tail()}"
    )


def stop_server(server: ServerProcess, grace_s: float = 30.0) -> None:
    """SIGINT (a clean shutdown: Ray stops its workers), then SIGKILL what is left of the tree."""
    import psutil

    server.tree()
    try:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGINT)
            try:
                server.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait(timeout=10)
    finally:
        # Also when a SIGTERM or a second Ctrl-C ends the wait above: the tree must not outlive the bench.
        if server.proc.poll() is None:
            server.tree()  # what its shutdown has spawned since
            server.proc.kill()
            server.proc.wait(timeout=10)
        # Anything the server spawned and left behind is ours to end, by pid.
        # psutil.Process remembers each process's start time, so a reused pid is never signalled.
        leftovers = []
        for pid, proc in server.seen.items():
            if pid == server.proc.pid:
                continue
            try:
                if proc.is_running():
                    proc.kill()
                    leftovers.append(proc)
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(leftovers, timeout=10)


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, *args]
