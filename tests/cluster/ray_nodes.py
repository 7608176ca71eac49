"""Ray nodes started as an operator starts them, `ray start --block` on 127.0.0.1, each with its own temp
dir and one CPU, so that several nodes share one machine. Every process a node runs is found by its temp
dir (Ray's daemons and workers all name their session folder) and killed by pid: nothing else is touched."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from serving import local_ray
from serving.local_ray import free_loopback_port

RAY = str(Path(sys.executable).parent / "ray")
# What serving.local_ray sets for a local Ray, plus no model hub.
LOCAL_ENV = {
    **local_ray.LOCAL_ENV,
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
}
# The ports Ray would otherwise take at fixed defaults (6379, 8265, 10001, 52365, ...): two nodes on one
# machine, and other Ray clusters on it, must not collide.
_NODE_PORTS = (
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
)


free_port = free_loopback_port  # below the ephemeral range: Ray's own sockets never take it


class RayNode:
    """One `ray start --block` node: the head (GCS, dashboard, Ray Client server) or a worker joining it."""

    def __init__(self, temp_dir: Path, head: RayNode | None = None) -> None:
        import psutil

        self.psutil = psutil
        self.temp_dir = temp_dir
        self.head = head
        self.gcs_port = free_port() if head is None else head.gcs_port
        self.dashboard_port = free_port()
        self.client_port = free_port()
        self.log_path = temp_dir.parent / f"{temp_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        # Loopback, but not 127.0.0.1: once multi-node is on, Ray rewrites 127.0.0.1 and localhost (in a
        # node's own address and in the head's) to the machine's network address. Each node gets its own
        # loopback address, which also tells the nodes apart as two hosts would be.
        self.ip = "127.0.0.2" if head is None else "127.0.0.3"

    @property
    def gcs_address(self) -> str:
        return f"{self.ip}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def client_address(self) -> str:
        return f"ray://{self.ip}:{self.client_port}"

    def command(self) -> list[str]:
        cmd = [RAY, "start", "--block", "--node-ip-address", self.ip, "--num-cpus", "1"]
        cmd += ["--temp-dir", str(self.temp_dir), "--object-store-memory", str(100 * 2**20)]
        cmd += ["--disable-usage-stats"]
        for flag in _NODE_PORTS:
            cmd += [flag, str(free_port())]
        if self.head is None:
            cmd += ["--head", "--port", str(self.gcs_port), "--include-dashboard", "true"]
            cmd += ["--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port)]
            cmd += ["--ray-client-server-port", str(self.client_port)]
        else:
            cmd += ["--address", self.head.gcs_address]
        return cmd

    def extra_env(self) -> dict[str, str]:
        # Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (our local default: loopback only) as "no node may
        # join a cluster", on Linux too. A joining node needs it on; --node-ip-address keeps it on loopback.
        return {} if self.head is None else {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}

    def start(self) -> RayNode:
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self.started_at = time.monotonic()
        with open(self.log_path, "a", encoding="utf-8") as log:
            self.proc = subprocess.Popen(
                self.command(),
                env={**os.environ, **LOCAL_ENV, **self.extra_env()},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def processes(self) -> list[Any]:
        """Every live process of this node: the `ray start` process, its tree, and any process whose
        command line names this node's temp dir (workers, agents, the replicas)."""
        found: dict[int, Any] = {}
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(self.psutil.NoSuchProcess):
                root = self.psutil.Process(self.proc.pid)
                for p in [root, *root.children(recursive=True)]:
                    found[p.pid] = p
        marker = str(self.temp_dir)
        for p in self.psutil.process_iter(["pid", "cmdline"]):
            with contextlib.suppress(self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                if any(marker in part for part in p.info["cmdline"] or []):
                    found.setdefault(p.pid, p)
        found.pop(os.getpid(), None)
        return list(found.values())

    def kill(self, timeout_s: float = 15) -> int:
        """SIGKILL every process of the node (a lost machine, not a drain); the number killed."""
        victims = self.processes()
        for p in victims:
            with contextlib.suppress(self.psutil.NoSuchProcess):
                p.kill()
        self.psutil.wait_procs(victims, timeout=timeout_s)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout_s)
        return len(victims)

    def log_tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""
