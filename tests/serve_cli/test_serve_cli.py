"""`labelwise serve` as a process: direct ingress answers on the asked port, a stop signal ends Ray and
its temp folder, and a killed replica is replaced while clients keep sending."""

from __future__ import annotations

import os
import signal
import stat
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from labelwise.cli import app
from model_repository import ModelRepository

from .conftest import SCENARIO
from .serve_process import ServeProcess

LABELS = {"sports", "politics", "science"}

# A serve started in a mode other than the default (direct ingress, one replica, stopped by SIGTERM as
# Kubernetes and systemd stop it) costs 15-30 s of CI a test on the 2-core box; `make test` runs each
# behaviour in the default mode, `make test-all` in every mode.
_OTHER_MODE = pytest.mark.slow


def test_direct_ingress_refuses_autoscaled_ingress_replicas(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"repository": str(tmp_path), "num_replicas": "auto"}), encoding="utf-8")
    result = CliRunner().invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == 2
    assert "fixed number of ingress replicas" in result.output and "--proxy" in result.output


def _one_scenario(repo: ModelRepository, **extra: object) -> dict[str, object]:
    return {"repository": str(repo.root), "scenarios": [{"name": SCENARIO}], **extra}


def _classify(url: str, timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{url}/v1/classify", json={"scenario": SCENARIO, "texts": ["a", "b"]}, timeout=timeout)


@pytest.mark.integration
@pytest.mark.parametrize(
    "sig",
    [pytest.param(signal.SIGINT, id="SIGINT", marks=_OTHER_MODE), pytest.param(signal.SIGTERM, id="SIGTERM")],
)
def test_serve_answers_on_its_port_and_a_stop_signal_ends_everything(
    one_scenario_repo: ModelRepository, tmp_path: Path, sig: signal.Signals
) -> None:
    pytest.importorskip("psutil")
    # max_concurrent_batches 2: the non-default path, two batch slots at once
    with ServeProcess(tmp_path, _one_scenario(one_scenario_repo, max_concurrent_batches=2)) as server:
        server.wait_ready()
        response = _classify(server.url)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["version"] == 1 and len(body["results"]) == 2
        assert {r["label"] for r in body["results"][0]} == LABELS

        # Direct ingress: the replica itself listens on the port, on loopback; no proxy in between.
        listeners = server.listeners()
        assert listeners, "nothing of the server's tree listens on the port"
        for p, c in listeners:
            assert c.laddr.ip == "127.0.0.1"
            assert "ServeReplica" in " ".join(p.cmdline()) or "ServeReplica" in p.name()

        # Ray's files live in one folder of the server's own, closed to other users.
        (ray_folder,) = server.ray_temp_folders()
        assert stat.S_IMODE(ray_folder.stat().st_mode) == 0o700

        # SIGTERM (Kubernetes, systemd, docker stop) takes the same path as Ctrl-C: exit 0 within 10 s,
        # every process of Ray's tree gone, the temp folder removed.
        code, took = server.stop(sig, timeout_s=60)
        assert code == 0, server.log_tail()
        assert took <= 10, f"{sig.name}: stopped after {took:.1f} s"
        assert not server.survivors(timeout_s=max(0.0, 10 - took)), server.log_tail()
        assert not server.ray_temp_folders()
        assert "stopping" in server.log_tail()


@pytest.mark.integration
@_OTHER_MODE  # two replicas
def test_two_direct_ingress_replicas_share_the_port(
    one_scenario_repo: ModelRepository, tmp_path: Path
) -> None:
    """num_replicas 2 without --proxy: both replicas listen on the one port (SO_REUSEPORT) and the
    kernel hands connections to both; every connection gets full answers. The API key comes from the
    environment (as the chart's Secret gives it): each replica reads it from its own, and enforces it."""
    psutil = pytest.importorskip("psutil")
    key = "k3y-from-env"
    args = _one_scenario(one_scenario_repo, num_replicas=2)
    with ServeProcess(tmp_path, args, env={"LABELWISE_API_KEY": key}) as server:
        server.wait_ready()

        def listening() -> dict[int, str]:
            return {p.pid: c.laddr.ip for p, c in server.listeners()}

        deadline = time.monotonic() + 120
        while len(listening()) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        listeners = listening()
        assert len(listeners) == 2, f"{listeners}\n{server.log_tail()}"
        assert set(listeners.values()) == {"127.0.0.1"}

        # 16 connections held open: each lands on one of the two listening replicas.
        clients = [httpx.Client(timeout=30) for _ in range(16)]
        try:
            for client in clients:
                body = {"scenario": SCENARIO, "texts": ["a"]}
                refused = client.post(f"{server.url}/v1/classify", json=body)
                assert refused.status_code == 401, refused.text
                response = client.post(
                    f"{server.url}/v1/classify", json=body, headers={"Authorization": f"Bearer {key}"}
                )
                assert response.status_code == 200, response.text
                assert {r["label"] for r in response.json()["results"][0]} == LABELS
            owners = {
                p.pid
                for p in server.replicas()
                for c in p.net_connections(kind="tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == server.port
            }
        finally:
            for client in clients:
                client.close()
        # All 16 on one replica would happen with probability 2**-15 under the kernel's hashing.
        assert owners == set(listeners), f"connections held by {owners}, listeners {set(listeners)}"


@pytest.mark.integration
@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({}, id="combined"),
        pytest.param({"ingress_mode": "separate"}, id="separate-ingress", marks=_OTHER_MODE),
    ],
)
def test_rays_own_routes_take_get_alone_and_routes_wants_the_key(
    one_scenario_repo: ModelRepository, tmp_path: Path, extra: dict[str, object]
) -> None:
    """A direct-ingress replica answers Ray's /-/healthz and /-/routes itself: POST /-/healthz was 200, and
    /-/routes (naming the app) answered without the API key that every route but the probes wants."""
    key = "k3y-from-env"
    args = _one_scenario(one_scenario_repo, **extra)
    with ServeProcess(tmp_path, args, env={"LABELWISE_API_KEY": key}) as server:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            # Ray's replica starts its HTTP server before its first health check (our check_health: a one-row
            # pass per loaded scenario) and says 503 "UNHEALTHY" on /-/healthz until that check ends, while
            # the app's /readyz may say 200 already (a CI run read 503 here).
            deadline = time.monotonic() + 30
            while (healthz := client.get("/-/healthz")).status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert healthz.status_code == 200, healthz.text
            posted = client.post("/-/healthz")
            assert posted.status_code == 405 and posted.headers["allow"] == "GET, HEAD", posted.text
            error = posted.json()["error"]
            assert error["type"] == "method_not_allowed" and "'POST'" in error["message"], error
            refused = client.get("/-/routes")
            assert refused.status_code == 401 and refused.json()["error"]["type"] == "unauthorized"
            assert refused.headers["www-authenticate"] == "Bearer"
            routes = client.get("/-/routes", headers={"Authorization": f"Bearer {key}"})
            assert routes.status_code == 200 and "/" in routes.json(), routes.text


def _load_until(
    url: str, stop: threading.Event, record: list[tuple[float, int | str]], wrong: list[str]
) -> None:
    """One closed-loop client: (time, status or error name) per request, until stop is set; the body of
    any 200 that is not the full result in `wrong` (asserted by the test's own thread)."""
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            at = time.monotonic()
            try:
                response = client.post(f"{url}/v1/classify", json={"scenario": SCENARIO, "texts": ["a"]})
            except httpx.HTTPError as exc:
                record.append((at, type(exc).__name__))
                time.sleep(0.05)
                continue
            if response.status_code == 200:
                # Never a wrong answer: a 200 always carries the full result for the one text.
                try:
                    ok = {r["label"] for r in response.json()["results"][0]} == LABELS
                except (ValueError, LookupError, TypeError):
                    ok = False
                if not ok:
                    wrong.append(response.text)
            record.append((at, response.status_code))


@pytest.mark.integration
@pytest.mark.parametrize(
    "flags, extra",
    [
        pytest.param([], {}, id="direct-ingress"),
        pytest.param(["--proxy"], {}, id="proxy", marks=_OTHER_MODE),
        pytest.param([], {"ingress_mode": "separate"}, id="separate-ingress", marks=_OTHER_MODE),
        pytest.param([], {"num_replicas": 2}, id="two-replicas-one-port", marks=_OTHER_MODE),
    ],
)
def test_a_killed_replica_is_replaced_within_30s_under_load(
    one_scenario_repo: ModelRepository, tmp_path: Path, flags: list[str], extra: dict[str, object]
) -> None:
    pytest.importorskip("psutil")
    with ServeProcess(tmp_path, _one_scenario(one_scenario_repo, **extra), *flags) as server:
        server.wait_ready()
        replicas = server.replicas()
        # The classifier replica (separate mode has an ingress replica too: kill the model's).
        victims = [p for p in replicas if "classifier" in " ".join(p.cmdline())] or replicas
        assert victims, server.log_tail()
        stop, record, wrong = threading.Event(), [], []
        client = threading.Thread(target=_load_until, args=(server.url, stop, record, wrong), daemon=True)
        client.start()
        try:
            time.sleep(2)
            killed_at = time.monotonic()
            os.kill(victims[0].pid, signal.SIGKILL)
            # Recovered: a success after the kill, followed by 3 s of nothing but successes.
            deadline = killed_at + 60
            recovered_at = None
            while time.monotonic() < deadline:
                time.sleep(0.5)
                after = [(t, s) for t, s in list(record) if t > killed_at]
                failures = [t for t, s in after if s != 200]
                last_failure = max(failures, default=killed_at)
                ok_since = [t for t, s in after if s == 200 and t > last_failure]
                if ok_since and time.monotonic() - ok_since[0] >= 3:
                    recovered_at = ok_since[0]
                    break
        finally:
            stop.set()
            client.join(timeout=15)
        assert wrong == [], f"{len(wrong)} answers of 200 without the full result, e.g. {wrong[0]}"
        failed = sum(1 for t, s in record if t > killed_at and s != 200)
        assert recovered_at is not None, f"no recovery in 60 s ({failed} failed)\n{server.log_tail()}"
        outage = recovered_at - killed_at
        print(f"replica killed: answering again after {outage:.1f} s, {failed} failed requests")
        assert outage <= 30, f"{outage:.1f} s of outage, {failed} failed requests"
        # While it was down the app answers 503 (separate ingress maps a dead classifier to it) or the
        # port refuses connections (direct ingress). Only Ray's own proxy answers 500 for the requests
        # it had already sent to the dead replica; the app never sees those.
        allowed = {200, 503} | ({500} if "--proxy" in flags else set())
        statuses = {s for _, s in record if not isinstance(s, str)}
        assert statuses <= allowed, statuses


# Slow requests: enough texts that six of them at once take seconds on a tiny model.
SLOW_TEXTS = [f"text {i} on sports, politics and science, long enough to tokenize " * 3 for i in range(4000)]


def _slow_classify(url: str, answers: dict[int, tuple[float, int | str]], i: int) -> None:
    """One request of SLOW_TEXTS: (when it ended, its status or error name) in answers[i]."""
    try:
        body = {"scenario": SCENARIO, "texts": SLOW_TEXTS}
        response = httpx.post(f"{url}/v1/classify", json=body, timeout=120)
        whole = response.status_code == 200 and len(response.json()["results"]) == len(SLOW_TEXTS)
        status: int | str = response.status_code if whole or response.status_code != 200 else "partial"
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    answers[i] = (time.monotonic(), status)


def _readiness(response: httpx.Response) -> int | str:
    """A /readyz answer: its status, "503 stopping" where the replica says it is stopping (Ray's proxy
    answers in text/plain)."""
    try:
        missing = response.json().get("missing") or [] if response.status_code == 503 else []
    except ValueError:
        missing = []
    return "503 stopping" if any("(replica stopping" in str(m) for m in missing) else response.status_code


@pytest.mark.integration
@pytest.mark.parametrize(
    "flags", [pytest.param([], id="direct-ingress"), pytest.param(["--proxy"], id="proxy", marks=_OTHER_MODE)]
)
def test_a_stop_answers_the_requests_in_flight_and_readyz_says_it_is_stopping(
    one_scenario_repo: ModelRepository, tmp_path: Path, flags: list[str]
) -> None:
    # Before: direct ingress answered /readyz 200 ("ready": true) for 3 s after the SIGTERM, then refused
    # connections; behind --proxy the six requests in flight were dropped unanswered ("Server
    # disconnected without sending a response") 0.5 s after it, Serve's proxy killed first.
    args = _one_scenario(one_scenario_repo, max_texts_per_request=len(SLOW_TEXTS))
    with ServeProcess(tmp_path, args, *flags) as server:
        server.wait_ready()
        assert server.proc is not None
        answers: dict[int, tuple[float, int | str]] = {}
        clients = [
            threading.Thread(target=_slow_classify, args=(server.url, answers, i), daemon=True)
            for i in range(6)
        ]
        for client in clients:
            client.start()
        time.sleep(0.5)
        stopped_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        probes: list[int | str] = []  # /readyz every 0.1 s until the server exits
        deadline = stopped_at + 60
        while server.proc.poll() is None and time.monotonic() < deadline:
            try:
                probes.append(_readiness(httpx.get(f"{server.url}/readyz", timeout=2)))
            except httpx.HTTPError:
                probes.append("no answer")
            time.sleep(0.1)
        for client in clients:
            client.join(timeout=30)
        code = server.proc.wait(timeout=30)
        log = server.log_tail()
        assert code == 0, log
        # Some were still in flight when the signal came, and every one got its full answer.
        assert len(answers) == 6 and max(at for at, _ in answers.values()) > stopped_at, answers
        assert [status for _, status in sorted(answers.values())] == [200] * 6, f"{answers}\n{log}"
        # A probe never sees ready again once it saw the server going away.
        first_not_ready = next((i for i, p in enumerate(probes) if p != 200), len(probes))
        assert 200 not in probes[first_not_ready:], probes
        if not flags:
            # The replica says it is stopping while it drains (behind the proxy the app's route goes as the
            # drain begins: Ray's proxy answers 404 for it).
            assert "503 stopping" in probes, probes
