"""Locust against a server with an api_key sends its key; a refused scenario list is reported with its
status; a direct `locust -f loadtests/locustfile.py` keeps to this machine; --texts-per-request 0 is refused.

Locust monkey-patches the standard library with gevent on import, so it only runs in child processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_a_wrong_api_key_is_reported_as_refused(keyed_server: KeyedServer, tmp_path: Path) -> None:
    """A 401 to a key that was sent said "the server wants its api_key; pass it with --api-key", as if
    none had been given."""
    out = _loadtest(keyed_server.url, tmp_path, "--api-key", "not-the-key")
    said = out.stdout + out.stderr
    assert out.returncode == 1, said[-3000:]
    assert "GET /v1/scenarios: HTTP 401: the server refused the api_key given" in said, said[-3000:]
    assert "not-the-key" not in said and keyed_server.counts.requests == 0


def test_refused_classify_requests_say_what_to_do(keyed_server: KeyedServer, tmp_path: Path) -> None:
    """With --scenarios (no listing to refuse) and no key, every POST failed as "HTTP 401: {body}" in the
    failure table, with nothing about the key."""
    out = _loadtest(keyed_server.url, tmp_path, "--scenarios", "alpha")
    assert out.returncode == 1, out.stderr[-3000:]
    failures = next(tmp_path.glob("*_failures.csv")).read_text()
    assert "HTTP 401" in failures and "pass it with --api-key or LABELWISE_API_KEY" in failures, failures


def test_locust_run_directly_refuses_a_remote_host(tiny_server: TinyServer) -> None:
    # 0.0.0.0 reaches this machine's listeners on Linux, but it is not a loopback address: refused.
    port = tiny_server.url.rsplit(":", 1)[1]
    out = _locust(f"http://0.0.0.0:{port}", "--scenarios", "alpha")
    assert out.returncode != 0
    assert "locustfile: refusing to send load to '0.0.0.0'" in out.stderr
    assert tiny_server.counts.requests == 0


def test_locust_run_directly_takes_a_host_with_a_trailing_slash(tiny_server: TinyServer) -> None:
    """Every request went to //v1/... and failed each user with a ValueError traceback."""
    out = _locust(tiny_server.url + "/")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert set(tiny_server.counts.paths) == {"/v1/classify"} and tiny_server.counts.requests > 0


def test_zero_texts_per_request_is_refused(tiny_server: TinyServer, tmp_path: Path) -> None:
    out = _loadtest(tiny_server.url, tmp_path, "--texts-per-request", "0")
    assert out.returncode == 2 and "--texts-per-request must be >= 1" in out.stderr
    direct = _locust(tiny_server.url, "--scenarios", "alpha", "--texts-per-request", "0")
    assert direct.returncode != 0
    assert "locustfile: --texts-per-request must be >= 1, got 0" in direct.stderr
    assert tiny_server.counts.requests == 0


@pytest.mark.parametrize(
    ("env", "args", "said"),
    [
        ({"LABELWISE_LOCUST_TEXTS_PER_REQUEST": "x"}, (), "TEXTS_PER_REQUEST: invalid literal"),
        ({"LABELWISE_LOCUST_WEIGHTS": "one=-1"}, (), "LABELWISE_LOCUST_WEIGHTS: one must be >= 0"),
        ({"LABELWISE_LOCUST_TEXTS_FILE": "/nonexistent/t.txt"}, (), "TEXTS_FILE: sentences file"),
        ({}, ("--weights", "many=2"), "--weights: expected one=N,batch=M"),
        ({}, ("--texts-file", "/nonexistent/t.txt"), "--texts-file: sentences file /nonexistent"),
        ({}, ("--texts-per-request", "0"), "--texts-per-request must be >= 1, got 0"),
    ],
)
def test_a_setting_locust_cannot_use_is_refused_in_one_line(env: dict[str, str], args: tuple[str, ...],
                                                            said: str) -> None:  # fmt: skip
    """`locust -f` directly (or `make loadtest` with a LABELWISE_LOCUST_* variable set): a traceback from
    Locust's import or init, which did not name the setting; then one line, but exit 1 (a failed run's)."""
    cmd = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--headless", "--host", "http://127.0.0.1:9",
           "-u", "1", "-t", "1s", "--only-summary", "--scenarios", "alpha", *args]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env(**env), cwd=ROOT)
    assert out.returncode == 2, out.stderr[-3000:]
    refusal = [line for line in out.stderr.splitlines() if line.startswith("locustfile: ")]
    assert refusal and said in refusal[0] and "Traceback" not in out.stderr, out.stderr[-3000:]


@pytest.mark.parametrize(
    ("env", "args"),
    [
        ({"LABELWISE_LOCUST_WEIGHTS": "bad"}, ("--weights", "one=1,batch=1")),
        ({"LABELWISE_LOCUST_TEXTS_PER_REQUEST": "abc"}, ("--texts-per-request", "2")),
        (
            {"LABELWISE_LOCUST_TEXTS_FILE": "/nonexistent/t.txt"},
            ("--texts-file", str(ROOT / "loadtests" / "sentences.txt")),
        ),
    ],
)
def test_a_variable_its_option_overrides_is_not_read(env: dict[str, str], args: tuple[str, ...]) -> None:
    """The variables were read when Locust loaded the locustfile, before its options were parsed: a bad one
    was refused (exit 2) though the option given in its place (as run.py always gives --weights and
    --texts-per-request) meant it was never used."""
    cmd = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--headless", "--host", "http://127.0.0.1:9",
           "-u", "1", "-t", "1s", "--only-summary", "--scenarios", "alpha", *args]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env(**env), cwd=ROOT)
    assert "locustfile: LABELWISE_LOCUST_" not in out.stderr, out.stderr[-3000:]
    assert out.returncode == 1, out.stderr[-3000:]  # it ran: its requests to a port nothing listens on failed


_VARIABLES = ("SCENARIOS", "TEXTS_PER_REQUEST", "WEIGHTS", "TEXTS_FILE")


def _dead_port() -> int:
    """A port on this machine that nothing listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("env", "args", "said"),
    [
        ({"TEXTS_PER_REQUEST": "abc"}, (), "LABELWISE_LOCUST_TEXTS_PER_REQUEST: invalid literal for int()"),
        ({"TEXTS_PER_REQUEST": "0"}, (), "LABELWISE_LOCUST_TEXTS_PER_REQUEST must be >= 1, got 0"),
        ({"WEIGHTS": "bad"}, (), "LABELWISE_LOCUST_WEIGHTS: expected one=N,batch=M, got 'bad'"),
        (
            {"TEXTS_FILE": "/nonexistent/t.txt"},
            (),
            "LABELWISE_LOCUST_TEXTS_FILE: sentences file /nonexistent",
        ),
        ({}, ("--weights", "one=3,many=2"), "loadtest: --weights: expected one=N,batch=M"),
        ({}, ("--texts-file", "/nonexistent/t.txt"), "loadtest: --texts-file: sentences file /nonexistent"),
    ],
)
def test_the_runner_refuses_a_setting_before_waiting_for_the_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict[str, str],
    args: tuple[str, ...], said: str,
) -> None:  # fmt: skip
    """A bad LABELWISE_LOCUST_* variable was only refused by Locust, after run.py had waited for /readyz:
    with no server up, `make loadtest` said "not ready" (exit 1) and never named the variable."""
    from loadtests.run import main

    for name in _VARIABLES:
        monkeypatch.delenv(f"LABELWISE_LOCUST_{name}", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(f"LABELWISE_LOCUST_{name}", value)
    assert main(["--host", f"http://127.0.0.1:{_dead_port()}", "--ready-timeout-s", "1", *args]) == 2
    err = capsys.readouterr().err
    assert said in err and "not ready" not in err, err


def test_the_runner_takes_the_variables_an_option_does_not_override(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """run.py gave Locust its own defaults (--weights one=3,batch=1, --texts-per-request 32), so under
    `make loadtest` these two variables were refused when bad and never used when good."""
    import argparse

    from loadtests.locust_settings import resolve_settings
    from loadtests.run import locust_command, main

    given = {"TEXTS_PER_REQUEST": "5", "WEIGHTS": "one=0,batch=1", "SCENARIOS": "alpha, beta"}
    settings = resolve_settings(environ={f"LABELWISE_LOCUST_{k}": v for k, v in given.items()})
    args = argparse.Namespace(users=1, spawn_rate=1, run_time_s=1)
    cmd = " ".join(locust_command(args, settings, "http://127.0.0.1:9", Path("/tmp/r")))
    assert "--weights one=0,batch=1 --texts-per-request 5 --scenarios alpha,beta" in cmd
    # An option given: its variable is not read, bad or not (exit 1: the server is not up, nothing else).
    monkeypatch.setenv("LABELWISE_LOCUST_WEIGHTS", "bad")
    assert (
        main(["--host", f"http://127.0.0.1:{_dead_port()}", "--ready-timeout-s", "1", "--weights", "one=1"])
        == 1
    )
    assert "not ready" in capsys.readouterr().err


# Locust's real Environment and runner, driven in a child process the way `locust -f` drives them: the
# command line parsed with the locustfile's options, the init event, then runs started as the web UI starts
# them (environment.host set from the form, then runner.start). Prints what happened as JSON.
_RUN_PROBE = r"""
import json, logging, sys, time
import gevent
import locust
from locust.argument_parser import parse_options
from locust.env import Environment
from loadtests import locustfile as lf

logging.basicConfig(level=logging.INFO)
case, cli, form_host = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
if case == "bounded":
    lf.DEFAULT_RUN_TIME_S = 1  # the bound itself, made short
sent = []
locust.events.request.add_listener(lambda name, **_: sent.append(name))
options = parse_options(args=["-f", "loadtests/locustfile.py", *cli])
users = [lf.OneTextUser, lf.BatchUser]
env = Environment(user_classes=users, events=locust.events, host=options.host, parsed_options=options)
runner = env.create_local_runner()
locust.events.init.fire(environment=env, runner=runner, web_ui=None)
result = {"run_time": options.run_time}
if case != "init":
    env.host = form_host or None  # what the web UI's form does before it starts the run
    started = time.monotonic()
    gevent.spawn(runner.start, 2, 2)
    while time.monotonic() - started < (10 if case == "bounded" else 1.5):
        gevent.sleep(0.05)
        if case == "bounded" and runner.state == "stopped":
            break
    result["after_s"] = time.monotonic() - started
result.update(state=runner.state, users=runner.user_count, sent=len(sent), exit_code=env.process_exit_code)
print(json.dumps(result))
"""


def _probe(case: str, *cli: str, form_host: str = "") -> tuple[dict, str]:
    import json

    out = subprocess.run(
        [sys.executable, "-c", _RUN_PROBE, case, json.dumps(list(cli)), form_host],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def test_a_host_typed_in_the_web_ui_is_checked_when_the_run_starts(tiny_server: TinyServer) -> None:
    """The web UI sets the host from its form after the init event, so the check at init never saw it."""
    port = tiny_server.url.rsplit(":", 1)[1]
    result, log = _probe("form-host", "--scenarios", "alpha", form_host=f"http://0.0.0.0:{port}")
    assert "locustfile: refusing to start the run: refusing to send load to '0.0.0.0'" in log
    assert result["users"] == 0 and result["sent"] == 0 and result["state"] == "stopped"
    assert tiny_server.counts.requests == 0
    # No host at all (none given, none typed): refused too, before any user exists.
    result, log = _probe("form-host", "--scenarios", "alpha")
    assert "locustfile: refusing to start the run: no host to send load to" in log
    assert result["users"] == 0 and result["sent"] == 0 and result["state"] == "stopped"


def test_a_run_without_run_time_stops_by_itself(tiny_server: TinyServer) -> None:
    """Load tests are bounded: with no --run-time, run.py's default applies, to runs started from the web
    UI (whose form may leave the run time empty) and to headless runs (through Locust's own --run-time)."""
    # A web UI run (not headless), its form's run time left empty: stopped at the bound (1 s here).
    result, log = _probe("bounded", "--scenarios", "alpha", form_host=tiny_server.url)
    assert result["state"] == "stopped" and result["users"] == 0, log[-3000:]
    assert 0.9 <= result["after_s"] < 5, result
    assert result["sent"] > 0 and tiny_server.counts.requests > 0  # it did run, against the loopback server
    assert "locustfile: run time (1 s) reached, stopping the run" in log

    from loadtests.run import DEFAULT_RUN_TIME_S  # run.py's --run-time-s default

    result, _ = _probe("init", "--headless", "--host", tiny_server.url)
    assert result["run_time"] == DEFAULT_RUN_TIME_S
    result, _ = _probe("init", "--headless", "--host", tiny_server.url, "--run-time", "5s")
    assert result["run_time"] == 5  # a given run time is kept


def test_headless_locust_without_a_host_is_refused() -> None:
    cmd = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--headless", "-u", "1", "-t", "2s",
           "--only-summary", "--scenarios", "alpha"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env(), cwd=ROOT)
    assert out.returncode != 0
    assert "locustfile: no host to send load to: pass --host http://127.0.0.1:PORT" in out.stderr


def test_the_web_ui_refuses_a_remote_host_typed_in_its_form(tiny_server: TinyServer) -> None:
    """The real web UI: `locust -f` without --host, then POST /swarm as its form does, with 0.0.0.0 (this
    machine's listeners, but not a loopback address): the run is refused and nothing reaches the server."""
    import json
    import signal
    import time
    import urllib.parse
    import urllib.request

    from serving.local_ray import free_loopback_port

    web_port = free_loopback_port()
    cmd = [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--web-host", "127.0.0.1",
           "--web-port", str(web_port), "--scenarios", "alpha"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT
    )
    web = f"http://127.0.0.1:{web_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(web + "/", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the web UI did not come up"
                time.sleep(0.2)
        port = tiny_server.url.rsplit(":", 1)[1]
        form = {"user_count": "2", "spawn_rate": "2", "host": f"http://0.0.0.0:{port}"}
        answer = urllib.request.urlopen(
            web + "/swarm", data=urllib.parse.urlencode(form).encode(), timeout=10
        )
        assert json.loads(answer.read())["success"] is True  # Locust accepts the form; the locustfile refuses
        time.sleep(2)
        state = json.loads(urllib.request.urlopen(web + "/stats/requests", timeout=10).read())
        assert state["state"] == "stopped" and state["user_count"] == 0
        assert tiny_server.counts.requests == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
    assert "locustfile: refusing to start the run: refusing to send load to '0.0.0.0'" in stderr
