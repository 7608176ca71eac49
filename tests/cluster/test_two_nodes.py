"""Two Ray nodes on one machine (`ray start` head + worker on 127.0.0.1, one CPU each): `labelwise serve
--address` puts one classifier replica on each node behind the head's Serve proxy; the worker node is
killed under load and the service keeps answering from the head; the node comes back and gets its
replica again; then `labelwise deploy` rolls both replicas to a new config under load.

Figures are printed (pytest -s shows them) and docs/scale-out.md quotes them."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from model_repository import ModelRepository

from .ray_nodes import LOCAL_ENV, RayNode, free_port

pytestmark = pytest.mark.cluster

SCENARIO = "topic_frozen"
TEXTS = ["The film was great today.", "My order was awful again."]
REPLICA_CLASS = "ServeReplica:labelwise:labelwise"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def repo(tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    from tests.integration.published import publish

    repo = ModelRepository(tmp_path_factory.mktemp("cluster-repo"))
    publish(repo, SCENARIO, tiny_roberta_dir, tmp_path_factory.mktemp("cluster-runs"), seed=1)
    repo.set_alias(SCENARIO, "production", 1)
    return repo


@pytest.fixture
def nodes() -> Iterator[dict[str, RayNode]]:
    """A head and a worker node; every process of both (and of a restarted worker) is killed after."""
    pytest.importorskip("psutil")
    root = Path(tempfile.mkdtemp(prefix="lw-c-"))  # short: Ray's unix sockets live under it
    head = RayNode(root / "head").start()
    started = {"head": head}
    try:
        wait_for(lambda: _dashboard_up(head), 120, "the head's dashboard", head)
        started["worker"] = RayNode(root / "worker", head=head).start()
        wait_for(lambda: len(alive_nodes(head)) == 2, 120, "the worker node", started["worker"])
        yield started
    finally:
        for node in started.values():
            node.kill()
        leftovers = [p.pid for node in started.values() for p in node.processes()]
        shutil.rmtree(root, ignore_errors=True)
        assert not leftovers, f"processes left behind: {leftovers}"


def wait_for(check: Any, timeout_s: float, what: str, node: RayNode | None = None) -> float:
    """Poll check() until true; the seconds it took. Fails naming what did not come."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        with contextlib.suppress(Exception):
            if check():
                return time.monotonic() - start
        time.sleep(0.5)
    raise AssertionError(f"{what}: not there after {timeout_s:g} s\n{node.log_tail() if node else ''}")


def _dashboard_up(head: RayNode) -> bool:
    return httpx.get(f"{head.dashboard_url}/api/version", timeout=5).status_code == 200


def alive_nodes(head: RayNode) -> dict[str, bool]:
    """node id -> is head, for every ALIVE node (Ray's state API, through the dashboard)."""
    from ray.util.state import list_nodes

    nodes = list_nodes(
        address=head.dashboard_url, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False
    )
    return {n.node_id: bool(n.is_head_node) for n in nodes}


def replica_nodes(head: RayNode) -> list[str]:
    """The node id of each ALIVE classifier replica actor (Ray's state API)."""
    from ray.util.state import list_actors

    actors = list_actors(
        address=head.dashboard_url,
        filters=[("state", "=", "ALIVE"), ("class_name", "=", REPLICA_CLASS)],
        raise_on_missing_output=False,
    )
    return sorted(a.node_id for a in actors)


def labelwise(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labelwise.cli", *args],
        cwd=ROOT,
        env={**os.environ, **LOCAL_ENV},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


class Load:
    """Two closed-loop clients on the proxy: (time, status or error name) per request, and every 200
    whose answer differs from the reference (a wrong answer, which must never happen)."""

    def __init__(self, url: str, reference: list[list[dict[str, Any]]]) -> None:
        self.url, self.reference = url, reference
        self.record: list[tuple[float, int | str]] = []
        self.wrong: list[Any] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(2)]

    def _client(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                at = time.monotonic()
                try:
                    r = client.post(f"{self.url}/v1/classify", json={"scenario": SCENARIO, "texts": TEXTS})
                except httpx.HTTPError as exc:
                    self.record.append((at, type(exc).__name__))
                    time.sleep(0.05)
                    continue
                if r.status_code == 200 and not same_answer(r.json()["results"], self.reference):
                    self.wrong.append(r.json())
                self.record.append((at, r.status_code))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)

    def failed_since(self, since: float) -> list[tuple[float, int | str]]:
        return [(t, s) for t, s in list(self.record) if t >= since and s != 200]

    def ok_since(self, since: float) -> int:
        return sum(1 for t, s in list(self.record) if t >= since and s == 200)


def same_answer(results: list[list[dict[str, Any]]], reference: list[list[dict[str, Any]]]) -> bool:
    return len(results) == len(reference) and all(
        [r["label"] for r in got] == [r["label"] for r in ref]
        and all(math.isclose(a["score"], b["score"], abs_tol=1e-5) for a, b in zip(got, ref, strict=True))
        for got, ref in zip(results, reference, strict=True)
    )


def test_a_lost_node_loses_no_answers_and_gets_its_replica_back(
    nodes: dict[str, RayNode], repo: ModelRepository, tmp_path: Path
) -> None:
    head, worker = nodes["head"], nodes["worker"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = {
        "repository": str(repo.root),
        "scenarios": [{"name": SCENARIO}],
        "num_replicas": 2,
        "num_cpus": 1,  # one node's whole CPU: the two replicas cannot share a node
        "ingress_mode": "combined",
    }
    flat = tmp_path / "serving.yaml"
    flat.write_text(yaml.safe_dump(args), encoding="utf-8")

    # 1. `labelwise serve --address ray://...`: deploy through Ray Client, return once it runs.
    start = time.monotonic()
    served = labelwise(
        "serve", "--address", head.client_address, "--config", str(flat), "--port", str(port),
        "--proxy-location", "HeadOnly",
    )  # fmt: skip
    deploy_s = time.monotonic() - start
    assert served.returncode == 0, served.stdout + served.stderr + head.log_tail()
    assert "labelwise: RUNNING" in served.stdout, served.stdout
    print(f"\n[cluster] labelwise serve --address: RUNNING after {deploy_s:.1f} s\n{served.stdout}")

    node_ids = alive_nodes(head)
    (head_id,) = [n for n, is_head in node_ids.items() if is_head]
    (worker_id,) = [n for n, is_head in node_ids.items() if not is_head]
    assert replica_nodes(head) == sorted([head_id, worker_id]), "one replica per node"

    wildcard = listeners_off_loopback(nodes.values())
    print(f"[cluster] listening on every interface (Ray's gRPC servers of a multi-node cluster): {wildcard}")

    reference = httpx.post(f"{url}/v1/classify", json={"scenario": SCENARIO, "texts": TEXTS}, timeout=30)
    assert reference.status_code == 200, reference.text
    reference_results = reference.json()["results"]

    with Load(url, reference_results) as load:
        # 2. The worker node dies (every one of its processes SIGKILLed: a lost machine).
        time.sleep(3)
        assert load.ok_since(0) > 0 and not load.failed_since(0), load.record[-5:]
        killed_at = time.monotonic()
        killed = worker.kill()
        noticed_s = wait_for(lambda: worker_id not in alive_nodes(head), 120, "Ray noticing the lost node")
        # Serve noticed once the dead replica is out of the ALIVE actors; from then on, no failure.
        gone_s = wait_for(lambda: worker_id not in replica_nodes(head), 120, "the lost replica")
        settled_at = time.monotonic()
        time.sleep(10)
        failed_after_kill = load.failed_since(killed_at)
        failed_after_notice = load.failed_since(settled_at)
        print(
            f"[cluster] worker node killed ({killed} processes): node DEAD after {noticed_s:.1f} s, its "
            f"replica gone after {noticed_s + gone_s:.1f} s; {len(failed_after_kill)} failed requests "
            f"since the kill ({sorted({str(s) for _, s in failed_after_kill})}), "
            f"{len(failed_after_notice)} after Serve noticed, {load.ok_since(killed_at)} answered"
        )
        assert not failed_after_notice, failed_after_notice
        assert load.ok_since(settled_at) > 0

        # 3. The node comes back: Serve places the missing replica on it.
        back = RayNode(worker.temp_dir.parent / "worker2", head=head).start()
        nodes["worker2"] = back
        back_at = time.monotonic()
        wait_for(lambda: len(alive_nodes(head)) == 2, 120, "the returning node", back)
        new_worker_id = next(n for n, is_head in alive_nodes(head).items() if not is_head)
        restored_s = wait_for(
            lambda: replica_nodes(head) == sorted([head_id, new_worker_id]), 180, "the restored replica", back
        )
        restored_s = time.monotonic() - back_at
        time.sleep(3)
        failed_while_back = load.failed_since(back_at)
        print(
            f"[cluster] node back: replica restored on it {restored_s:.1f} s after `ray start`, "
            f"{len(failed_while_back)} failed requests meanwhile"
        )
        assert not failed_while_back, failed_while_back

        # 4. A rolling upgrade: `labelwise deploy` with new args replaces both replicas, one at a time.
        config = tmp_path / "serve-config.yaml"
        serve_file = {
            "proxy_location": "HeadOnly",
            "http_options": {"host": "127.0.0.1", "port": port},
            "applications": [
                {
                    "name": "labelwise",
                    "route_prefix": "/",
                    "import_path": "serving.app:build_app",
                    "args": {**args, "batch_wait_timeout_s": 0.002},
                }
            ],
        }
        config.write_text(yaml.safe_dump(serve_file), encoding="utf-8")
        before = set(_replica_ids(head))
        upgrade_at = time.monotonic()
        deployed = labelwise("deploy", "--address", head.dashboard_url, "--config", str(config))
        upgrade_s = time.monotonic() - upgrade_at
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert "labelwise: RUNNING" in deployed.stdout, deployed.stdout
        wait_for(lambda: not (set(_replica_ids(head)) & before) and len(_replica_ids(head)) == 2, 120,
                 "two new replicas")  # fmt: skip
        time.sleep(2)
        failed_in_upgrade = load.failed_since(upgrade_at)
        print(
            f"[cluster] rolling upgrade by labelwise deploy: RUNNING after {upgrade_s:.1f} s, "
            f"{len(failed_in_upgrade)} failed requests, {load.ok_since(upgrade_at)} answered\n"
            f"{deployed.stdout}"
        )
        assert not failed_in_upgrade, failed_in_upgrade
    assert not load.wrong, load.wrong[:3]
    total = len(load.record)
    failed = sum(1 for _, s in load.record if s != 200)
    print(f"[cluster] in all: {total} requests, {failed} failed, 0 wrong answers")


def listeners_off_loopback(nodes: Any) -> list[str]:
    """The listening sockets of the nodes' processes that are not on loopback: Ray binds its gRPC servers
    to every interface when a node's address is not 127.0.0.1, which is allowed; a socket on a specific
    non-loopback address (the machine's own) fails the test."""
    import ipaddress

    import psutil

    wildcard = []
    for node in nodes:
        for p in node.processes():
            with contextlib.suppress(psutil.Error):
                for c in p.net_connections(kind="inet"):
                    if c.status != psutil.CONN_LISTEN:
                        continue
                    ip = ipaddress.ip_address(c.laddr.ip.removeprefix("::ffff:"))
                    if ip.is_unspecified:
                        wildcard.append(f"{p.name()}:{c.laddr.port}")
                    else:
                        assert ip.is_loopback, f"{p.name()} listens on {c.laddr}"
    return sorted(set(wildcard))


def _replica_ids(head: RayNode) -> list[str]:
    from ray.util.state import list_actors

    actors = list_actors(
        address=head.dashboard_url,
        filters=[("state", "=", "ALIVE"), ("class_name", "=", REPLICA_CLASS)],
        raise_on_missing_output=False,
    )
    return [a.actor_id for a in actors]
