"""`make loadtest HOST=http://127.0.0.1:8000`: Locust headless, bounded; CSV + HTML in loadtests/reports/."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from .errors import LoadTestError, LoadTestOptionError
from .loadgen import wait_ready
from .locust_settings import LocustSettings, resolve_settings
from .loopback import require_loopback
from .report_names import report_stem
from .request_shapes import API_KEY_ENV

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
REPORTS_DIR = Path(__file__).resolve().parent / "reports"
# How long a load test runs unless told otherwise; the locustfile applies it to `locust -f` runs (web UI
# included) that give no --run-time.
DEFAULT_RUN_TIME_S = 60


def locust_command(args: argparse.Namespace, settings: LocustSettings, host: str, prefix: Path) -> list[str]:
    """Locust's command line, every setting resolved here given as its option: the locustfile reads no
    LABELWISE_LOCUST_* variable that run.py has already read (and checked)."""
    cmd = [
        sys.executable, "-m", "locust",
        "-f", str(LOCUSTFILE),
        "--headless",
        "--host", host,
        "--users", str(args.users),
        "--spawn-rate", str(args.spawn_rate),
        "--run-time", f"{args.run_time_s}s",
        "--stop-timeout", "10",
        "--csv", str(prefix),
        "--html", f"{prefix}.html",
        # written after the run ends (the CSVs are rewritten once a second and miss its last second)
        "--json-file", str(prefix),
        "--only-summary",
        "--weights", ",".join(f"{name}={weight}" for name, weight in settings.weights.items()),
        "--texts-per-request", str(settings.texts_per_request),
    ]  # fmt: skip
    if settings.scenarios:
        cmd += ["--scenarios", ",".join(settings.scenarios)]
    if settings.texts_file:
        cmd += ["--texts-file", settings.texts_file]
    return cmd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.run", description=__doc__)
    parser.add_argument("--host", default="http://127.0.0.1:8000", help="Server URL (loopback only).")
    parser.add_argument("--users", type=int, default=32, help="Concurrent Locust users.")
    parser.add_argument("--spawn-rate", type=float, default=32, help="Users started per second.")
    parser.add_argument(
        "--run-time-s", type=int, default=DEFAULT_RUN_TIME_S, help="Bounded run time in seconds."
    )
    # Unset, these four are the locustfile's: its LABELWISE_LOCUST_* variable, else its default.
    parser.add_argument(
        "--weights", default="", help="User mix: one-text vs batched users (default: one=3,batch=1)."
    )
    parser.add_argument(
        "--texts-per-request", type=int, default=None, help="Texts per batched request (default: 32)."
    )
    parser.add_argument("--scenarios", default="", help="Comma-separated scenarios (default: all served).")
    parser.add_argument("--texts-file", default="", help="Sentences file (default: loadtests/sentences.txt).")
    parser.add_argument("--reports-dir", type=Path, default=REPORTS_DIR)
    parser.add_argument("--ready-timeout-s", type=float, default=15.0, help="Wait this long for /readyz.")
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"Bearer key of a server with an api_key (default: ${API_KEY_ENV}); handed to Locust in its "
        "environment, not on its command line.",
    )
    args = parser.parse_args(argv)
    try:
        host = require_loopback(args.host)
        if args.run_time_s < 1 or args.users < 1:
            raise LoadTestOptionError("--run-time-s and --users must be >= 1")
        if not args.spawn_rate > 0:
            raise LoadTestOptionError(f"--spawn-rate must be > 0, got {args.spawn_rate:g}")
        # Read as the locustfile reads them, before the wait: a value it would refuse (an option or a
        # LABELWISE_LOCUST_* variable) is said now, not after --ready-timeout-s as a server that is not up.
        settings = resolve_settings(
            scenarios=args.scenarios,
            texts_per_request=args.texts_per_request,
            texts_file=args.texts_file,
            weights=args.weights,
        )
        asyncio.run(wait_ready(host, args.ready_timeout_s))
    except LoadTestError as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return exc.exit_code  # 2: asked wrong (an option, a host off this machine); 1: the server is not up
    args.reports_dir.mkdir(parents=True, exist_ok=True)
    prefix = report_stem(args.reports_dir, "locust-")
    cmd = locust_command(args, settings, host, prefix)
    print(
        f"loadtest: {args.users} users for {args.run_time_s}s against {host}; reports -> {prefix}*",
        flush=True,
    )
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(LOCUSTFILE.parents[1]), os.environ.get("PYTHONPATH")])),
    )
    if args.api_key:  # the locustfile reads it from here; Locust's command line is for `ps` to show
        env[API_KEY_ENV] = args.api_key
    # Locust ignores SIGINT: a terminal's Ctrl-C reaches the whole process group, and one that lands while
    # a user's task runs ended that greenlet in a KeyboardInterrupt traceback. This process takes the
    # Ctrl-C and stops Locust with SIGTERM instead, which stops its users and writes its reports.
    locust = subprocess.Popen(cmd, env=env, preexec_fn=_ignore_sigint)
    try:
        # Locust stops itself at --run-time; the timeout only guards against a wedged process.
        returncode = locust.wait(timeout=args.run_time_s + 60)
    except subprocess.TimeoutExpired:
        locust.kill()
        locust.wait()
        print("loadtest: locust did not stop within run time + 60 s; killed", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C: Locust stops its users and writes its reports (it had 0.25 s under subprocess.run, then
        # SIGKILL, and wrote none). Bounded, then killed.
        _stop_locust(locust)
        print("loadtest: interrupted", file=sys.stderr, flush=True)
        _print_reports(prefix)
        return 130
    _print_reports(prefix)
    classified = _classify_requests(Path(f"{prefix}.json"))
    if returncode == 0 and not classified:
        print("loadtest: no classify request was answered in the run", file=sys.stderr)
        return 1
    return returncode


def _ignore_sigint() -> None:
    """In the Locust child before it starts: SIGINT ignored (a Python started so installs no handler)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_locust(locust: subprocess.Popen, stop_s: float = 30.0) -> None:
    """Ask Locust to stop (SIGTERM: it stops its users and writes its reports); kill it if it is still
    there after stop_s, or at a second Ctrl-C."""
    locust.send_signal(signal.SIGTERM)
    try:
        locust.wait(timeout=stop_s)
        return
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        pass
    locust.kill()
    locust.wait()


def _print_reports(prefix: Path) -> None:
    reports = (Path(f"{prefix}.json"), Path(f"{prefix}.html"), Path(f"{prefix}_stats.csv"))
    written = [str(path) for path in reports if path.is_file()]
    print(f"loadtest: reports {', '.join(written) or 'none written'}", flush=True)


def _classify_requests(stats_json: Path) -> int:
    """How many POST /v1/classify requests Locust recorded (answered, failed or not), from the stats it
    writes once the run has ended (`--json-file`: a list of entries with `name` and `num_requests`). Its
    CSV is rewritten once a second while the run lasts and misses the last second: a 1 s run read 0."""
    import json

    try:
        entries = json.loads(stats_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    named = [entry for entry in entries if isinstance(entry, dict)]
    return sum(
        int(entry.get("num_requests") or 0)
        for entry in named
        if str(entry.get("name") or "").startswith("/v1/classify")
    )


if __name__ == "__main__":
    raise SystemExit(main())
