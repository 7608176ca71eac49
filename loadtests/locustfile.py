"""Locust users for labelwise: one-text requests and batched requests, mixed by weights.

Settings come from CLI options (after `locust -f loadtests/locustfile.py`) or environment variables, read
when Locust starts (loadtests/locust_settings.py); a variable whose option is given is not read:

| option | env | default |
|---|---|---|
| --scenarios a,b | LABELWISE_LOCUST_SCENARIOS | every scenario GET /v1/scenarios lists |
| --texts-per-request N | LABELWISE_LOCUST_TEXTS_PER_REQUEST | 32 (batched users) |
| --weights one=3,batch=1 | LABELWISE_LOCUST_WEIGHTS | one=3,batch=1 |
| --texts-file PATH | LABELWISE_LOCUST_TEXTS_FILE | loadtests/sentences.txt |
| --api-key KEY | LABELWISE_API_KEY | none: for a server with an api_key, sent as `Authorization: Bearer` |

`make loadtest HOST=http://127.0.0.1:8000` (loadtests/run.py) runs it headless for a bounded time.
Like run.py, it sends load only to this machine (loadtests/loopback.py): a --host that is not is refused
at start, and every run is checked again when it starts, with the host it will use (the one typed in the
web UI's form included); a run with no host at all is refused too. Every run is bounded: without
--run-time (or a run time in the web UI's form) it stops after run.py's default, DEFAULT_RUN_TIME_S.
"""

from __future__ import annotations

import logging
import os
import random
import sys
from typing import Any, NoReturn

import gevent
from locust import FastHttpUser, between, events, task
from locust.env import Environment
from locust.exception import StopTest
from locust.runners import STATE_STOPPED, WorkerRunner

from loadtests.errors import LoadTestOptionError
from loadtests.locust_settings import DEFAULT_TEXTS_PER_REQUEST, resolve_settings
from loadtests.loopback import require_loopback
from loadtests.request_shapes import API_KEY_ENV, DEFAULT_WEIGHTS, answer_problem, auth_headers, parse_weights
from loadtests.run import DEFAULT_RUN_TIME_S
from loadtests.sentences import load_sentences
from model_repository.errors import EXIT_USAGE

logger = logging.getLogger(__name__)


def build_payload(rng: random.Random, scenarios: list[str], texts: list[str], n_texts: int) -> dict[str, Any]:
    """One POST /v1/classify body: a uniformly chosen scenario and n_texts sentences."""
    if not scenarios:
        raise ValueError("no scenario to send requests to")
    return {
        "scenario": rng.choice(scenarios),
        "texts": [rng.choice(texts) for _ in range(n_texts)],
        "top_k": 1,
    }


def _refuse(problem: str) -> NoReturn:
    """End the process at once: one line on stderr, exit 2 (bad usage, as run.py and the CLI exit). A
    SystemExit carrying the message exited 1, as a run that failed does."""
    print(f"locustfile: {problem}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USAGE)


class _Settings:
    """Resolved once per process, at Locust's init (its options are parsed after this file is loaded, and a
    variable that an option overrides is not read); users read it."""

    scenarios: list[str] = []
    texts_per_request: int = DEFAULT_TEXTS_PER_REQUEST
    texts: list[str] = load_sentences()
    weights: dict[str, int] = parse_weights(DEFAULT_WEIGHTS)
    api_key: str | None = os.environ.get(API_KEY_ENV) or None


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--scenarios", default="", help="Comma-separated scenarios (default: all served).")
    parser.add_argument("--texts-per-request", type=int, default=None, help="Texts per batched request.")
    parser.add_argument("--weights", default="", help="User mix, e.g. one=3,batch=1.")
    parser.add_argument(
        "--texts-file", default="", help="Sentences, one per line, or a CSV with a text column."
    )
    parser.add_argument(
        "--api-key",
        default="",
        is_secret=True,
        help=f"Bearer key of a server with an api_key (or {API_KEY_ENV}).",
    )


def _headless(environment: Environment) -> bool:
    return bool(environment.parsed_options is not None and environment.parsed_options.headless)


def _is_worker(environment: Environment) -> bool:
    options = environment.parsed_options
    return isinstance(environment.runner, WorkerRunner) or bool(options is not None and options.worker)


def host_problem(environment: Environment) -> str | None:
    """Why a run may not start with the host(s) it would use, or None: each user class sends to
    environment.host (--host, or the web UI's form) when set, else to its own `host`; each must be given
    and be this machine."""
    hosts = {environment.host or user_class.host for user_class in environment.user_classes}
    if not hosts or not all(hosts):
        return "no host to send load to: pass --host http://127.0.0.1:PORT (or type it in the web UI)"
    for host in sorted(hosts):
        try:
            require_loopback(host)
        except ValueError as exc:
            return str(exc)
    return None


@events.init.add_listener
def _apply_options(environment: Environment, **_kwargs: Any) -> None:
    # Refusals are _refuse: locust logs an exception raised here as a traceback before it exits.
    # A host given on the command line is checked now (`locust -f` directly gets run.py's refusal too); one
    # typed in the web UI later is checked when its run starts (_check_each_run).
    if environment.host or _headless(environment):
        problem = host_problem(environment)
        if problem:
            _refuse(problem)
    options = environment.parsed_options
    if options is not None and not _is_worker(environment) and not options.run_time:
        # Load tests are bounded loops that stop by themselves: --headless and --autostart runs stop at
        # --run-time, and _check_each_run bounds the web UI's runs with it.
        options.run_time = DEFAULT_RUN_TIME_S
        logger.info("locustfile: no --run-time: each run stops after %d s", DEFAULT_RUN_TIME_S)
    if options is not None:
        _Settings.api_key = options.api_key or _Settings.api_key
    try:  # options is None when this file is used as a library: then the variables, else the defaults
        settings = resolve_settings(
            scenarios=getattr(options, "scenarios", ""),
            texts_per_request=getattr(options, "texts_per_request", None),
            texts_file=getattr(options, "texts_file", ""),
            weights=getattr(options, "weights", ""),
        )
    except LoadTestOptionError as exc:
        _refuse(str(exc))
    _Settings.scenarios = settings.scenarios
    _Settings.texts_per_request = settings.texts_per_request
    _Settings.texts = settings.texts
    _Settings.weights = settings.weights
    OneTextUser.weight = _Settings.weights["one"]
    BatchUser.weight = _Settings.weights["batch"]
    _ClassifyUser.default_headers = auth_headers(_Settings.api_key)


class _RunBound:
    """The greenlet that stops the current run when its time is up (runs started from the web UI)."""

    greenlet: gevent.Greenlet | None = None
    stopping = False  # a user has found that this run cannot go on, and stopped it

    @classmethod
    def cancel(cls) -> None:
        if cls.greenlet is not None and cls.greenlet is not gevent.getcurrent():
            cls.greenlet.kill(block=False)
        cls.greenlet = None


def _stop_run(environment: Environment, run_time_s: float) -> None:
    runner = environment.runner
    if runner is not None and runner.state != STATE_STOPPED:
        logger.info("locustfile: run time (%g s) reached, stopping the run", run_time_s)
        runner.stop()


@events.test_start.add_listener
def _check_each_run(environment: Environment, **_kwargs: Any) -> None:
    """Every run, however it starts (--headless, --autostart, the web UI's form, a master's order): its
    hosts are this machine, and it ends by itself.

    A refusal raises StopTest before any user exists: Locust logs the message and quits (headless) or
    stops the run (web UI, where another host can be typed)."""
    problem = host_problem(environment)
    if problem:
        if _headless(environment):
            environment.process_exit_code = 1
        raise StopTest(f"locustfile: refusing to start the run: {problem}")
    if environment.host:
        # Locust joins host and path as typed (the runner hands this host to the users after this event):
        # a host ending in / sent every request to //v1/..., which failed each user with a ValueError.
        environment.host = require_loopback(environment.host)
    _RunBound.cancel()
    _RunBound.stopping = False
    if _is_worker(environment) or _headless(environment):
        return  # the master bounds a worker's run; Locust stops a headless run at --run-time itself
    # The web UI stops a run at the run time typed in its form, and not at all when the field is empty.
    options = environment.parsed_options
    run_time_s = (options.run_time if options is not None else None) or DEFAULT_RUN_TIME_S
    _RunBound.greenlet = gevent.spawn_later(run_time_s, _stop_run, environment, run_time_s)


@events.test_stop.add_listener
def _end_run_bound(environment: Environment, **_kwargs: Any) -> None:
    _RunBound.cancel()


def _advice(status: int) -> str:
    """What to do about a refused request (GET /v1/scenarios, POST /v1/classify), when there is something
    to do."""
    if status == 401 and _Settings.api_key:  # sent, and refused: passing it again would not help
        return f": the server refused the api_key given (--api-key or {API_KEY_ENV}); check its value"
    if status == 401:
        return f": the server wants its api_key; pass it with --api-key or {API_KEY_ENV}"
    return ""


def serving_scenarios(listed: list[dict[str, Any]]) -> list[str]:
    """Names from GET /v1/scenarios that answer now: not skipped by serve-all, and with a loaded version."""
    return [s["name"] for s in listed if not s.get("skipped") and s.get("version") is not None]


class _ClassifyUser(FastHttpUser):
    abstract = True
    wait_time = between(0, 0)  # closed loop: the next request leaves when the last one returns
    # A redirect is an answer (a failure here), never followed: it could send the load to any host, past
    # the loopback check of --host.
    max_redirects = 0
    texts_per_request = 1
    stopped = False  # set by _stop_run: this user sends nothing

    def on_start(self) -> None:
        # _check_each_run checked this host before the run began; checked again before this user's first
        # request, whatever changed since.
        try:
            require_loopback(self.host or "")
        except ValueError as exc:
            self._stop_run(str(exc))
            return
        self.rng = random.Random()
        if not _Settings.scenarios:
            problem, names = None, []
            with self.client.get("/v1/scenarios", name="/v1/scenarios", catch_response=True) as resp:
                if not resp.ok:
                    status = resp.status_code
                    resp.failure(f"HTTP {status}: {(resp.text or '')[:200]}")
                    problem = f"GET /v1/scenarios: HTTP {status}{_advice(status)}"
                else:
                    try:
                        names = serving_scenarios(resp.json().get("scenarios", []))
                    except (ValueError, AttributeError, KeyError, TypeError):
                        problem = (
                            f"GET /v1/scenarios answered no scenario list ({(resp.text or '')[:100]!r}): "
                            "is --host a labelwise server? Or pass --scenarios"
                        )
                    else:
                        if not names:
                            problem = "the server lists no serving scenario: pass --scenarios"
                    if problem:
                        resp.failure(problem)
            if problem:
                # No user can send a request without a scenario: the run ends now, said once, rather than
                # with a traceback from each user and a run that idles until its run time is up.
                self._stop_run(problem)
                return
            _Settings.scenarios = _Settings.scenarios or names

    def _stop_run(self, why: str) -> None:
        """End the run (headless: Locust quits, exit 1; web UI: the run stops); this user sends nothing
        (StopUser raised from on_start is logged by Locust as a traceback, one per user)."""
        self.stopped = True
        if _headless(self.environment):
            self.environment.process_exit_code = 1
        runner = self.environment.runner
        if not _RunBound.stopping:  # said once, not by every user that finds the same problem
            _RunBound.stopping = True
            logger.error("locustfile: stopping the run: %s", why)
            if runner is not None:
                gevent.spawn(runner.quit if _headless(self.environment) else runner.stop)

    def payload(self) -> dict[str, Any]:
        return build_payload(self.rng, _Settings.scenarios, _Settings.texts, self.texts_per_request)

    def post(self, name: str) -> None:
        if self.stopped:  # idle until the run's stop ends this user (a user that ends itself
            gevent.sleep(1)  # first is a dead greenlet that Locust's stop logs as an error)
            return
        body = self.payload()
        with self.client.post("/v1/classify", json=body, name=name, catch_response=True) as resp:
            if resp.status_code != 200:  # a connection error too (status 0, no body)
                said = resp.text or str(getattr(resp, "error", None) or "no answer")
                resp.failure(f"HTTP {resp.status_code}: {said[:200]}{_advice(resp.status_code)}")
                return
            problem = answer_problem(resp.text or "", body)
            if problem is not None:
                resp.failure(problem)


class OneTextUser(_ClassifyUser):
    """One text per request: the latency-bound interactive case."""

    weight = _Settings.weights["one"]

    @task
    def classify_one(self) -> None:
        self.post("/v1/classify [1 text]")


class BatchUser(_ClassifyUser):
    """Many texts per request (--texts-per-request): the throughput-bound backfill case."""

    weight = _Settings.weights["batch"]

    @property
    def texts_per_request(self) -> int:  # type: ignore[override]
        return _Settings.texts_per_request

    @task
    def classify_batch(self) -> None:
        self.post(f"/v1/classify [{_Settings.texts_per_request} texts]")
