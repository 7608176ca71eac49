"""The local Ray that `labelwise serve` starts carries only what serving uses (issue 14, memory)."""

from __future__ import annotations

import ipaddress
import os
import sys

import psutil
import pytest

from .conftest import ServedApp

pytestmark = pytest.mark.integration

# Scripts of the head-node daemons a local serve does without (serving.local_ray._lean_head).
LEFT_OUT = ("autoscaler/_private/monitor.py", "_private/log_monitor.py", "dashboard/dashboard.py")


def _ray_processes() -> list[str]:
    out = []
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            out.append(" ".join(proc.cmdline()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def test_the_local_head_runs_no_monitors_and_no_api_server(served: ServedApp) -> None:
    cmdlines = _ray_processes()
    assert any("gcs_server" in c for c in cmdlines) and any("raylet" in c for c in cmdlines)
    assert any(c.startswith("ray::ServeReplica") for c in cmdlines)
    for script in LEFT_OUT:
        assert not [c for c in cmdlines if script in c], script
    assert served.client.get("/healthz").status_code == 200


def test_serve_workers_do_without_pandas(served: ServedApp) -> None:
    import ray

    @ray.remote(num_cpus=0)
    def modules() -> tuple[bool, bool, bool]:
        from ray import serve  # noqa: F401  # what made replicas import pandas

        return (
            "pandas" in sys.modules and sys.modules["pandas"] is not None,
            "pyarrow" in sys.modules,
            ("ray.serve" in sys.modules),
        )

    has_pandas, has_pyarrow, has_serve = ray.get(modules.remote(), timeout=60)
    assert has_serve and not has_pandas and not has_pyarrow
    # The replicas answer all the same, with pandas kept out of them.
    body = {"scenario": "sentiment_full", "texts": ["fine"]}
    assert served.client.post("/v1/classify", json=body).status_code == 200


def test_the_serve_controller_runs_its_loop_once_a_second(served: ServedApp) -> None:
    # serving.local_ray.LOCAL_ENV: the controller's control loop at 1 s, not Ray's 0.1 s (idle CPU); Ray
    # reads the variable when the controller imports its constants
    tree = psutil.Process(os.getpid()).children(recursive=True)
    controllers = [p for p in tree if p.name().startswith("ray::ServeCont")]
    assert controllers, _ray_processes()
    assert controllers[0].environ().get("RAY_SERVE_CONTROL_LOOP_INTERVAL_S") == "1"
    # and the replicas hand their cached Serve metrics over once a second, not every 0.1 s
    replicas = [p for p in tree if p.name().startswith("ray::ServeRepl")]
    assert replicas, _ray_processes()
    assert all(r.environ().get("RAY_SERVE_METRICS_EXPORT_INTERVAL_MS") == "1000" for r in replicas)


def test_no_process_of_the_local_serve_listens_beyond_loopback(served: ServedApp) -> None:
    """Ray 2.60 binds each replica's inter-deployment gRPC server on every interface ("[::]:0"): a port on
    the machine's network that unpickles what it is sent. A local serve keeps it, like the rest, on
    127.0.0.1 (serving.local_ray.keep_replica_grpc_local)."""
    assert served.client.get("/healthz").status_code == 200
    listening: dict[str, list[str]] = {}
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            name = " ".join(proc.cmdline())[:60]
            sockets = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for conn in sockets:
            if conn.status == psutil.CONN_LISTEN:
                listening.setdefault(name, []).append(conn.laddr.ip)
    assert any(name.startswith("ray::ServeReplica") for name in listening), listening
    wide = {name: ips for name, ips in listening.items() if not all(_loopback(ip) for ip in ips)}
    assert not wide, f"listening beyond 127.0.0.1: {wide}"


def _loopback(ip: str) -> bool:
    """127.0.0.1, or its IPv4-mapped IPv6 spelling (::ffff:127.0.0.1); never :: or 0.0.0.0."""
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback
