"""The offline demo (`make demo`): train two scenarios with the packaged MiniLM, publish, serve on 127.0.0.1.

Bounded mode for CI and tests: `--smoke` or LABELWISE_DEMO_EXIT_AFTER_S=<seconds> sends real requests,
then exits instead of serving until Ctrl-C.

Quiet by default: the demo's own lines and one progress bar per step on the terminal; everything the
libraries print (Trainer logs, export lines, warnings, Ray) goes to a log file (`--log-file`, default
`var/demo.log`). `--verbose` shows it all on the terminal instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labelwise.server import ServePlan

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "training" / "sample_data"
# scenario -> (labels, strategy): one LoRA scenario with its merged graph, one frozen head on the shared base.
DEMO_SCENARIOS = {
    "support_ticket": (["billing", "technical", "account"], "lora"),
    "review_sentiment": (["positive", "negative"], "frozen"),
}
# Per strategy, for ~100 sample rows per scenario on 2 CPU cores: the frozen head trains on MiniLM's
# mean-pooled embeddings, computed once, so 200 epochs cost about a second (early stopping keeps the best);
# LoRA learns fast at a moderate step size. (learning rate, epochs); measured figures are in docs/serving.md.
DEMO_TRAINING = {"frozen": (3e-4, 200.0), "lora": (5e-3, 5.0)}
EXAMPLES = {
    "support_ticket": ["I was charged twice this month", "The app crashes when I upload a photo"],
    "review_sentiment": ["Lovely product, it works perfectly", "It broke after one day, awful"],
}


class _Terminal:
    """Where the demo's own output goes: the real terminal, even while the libraries' output is sent to
    the log file (quiet mode moves file descriptors 1 and 2 there, so C++ and Ray output go too)."""

    def __init__(self) -> None:
        self.out: IO[str] = sys.stdout
        self.err: IO[str] = sys.stderr
        self.quiet = False

    def to_log(self, log_file: Path) -> None:
        """From now on, fds 1 and 2 write to log_file; the demo keeps copies of the terminal's."""
        sys.stdout.flush()
        sys.stderr.flush()
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self.out = os.fdopen(os.dup(1), "w", buffering=1)
        self.err = os.fdopen(os.dup(2), "w", buffering=1)
        log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        self.quiet = True

    @contextlib.contextmanager
    def step(self, title: str, total: int | None = None) -> Iterator[Any]:
        """One progress bar for one step (quiet mode); `advance(n)` / `total(n)` on what it yields."""
        if not self.quiet:
            yield _NoBar()
            return
        from rich.console import Console
        from rich.markup import escape
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(file=self.err)
        bar = Progress(
            TextColumn(escape(f"[demo] {title}")),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            redirect_stdout=False,  # library prints go to the log, not above the bar
            redirect_stderr=False,
        )
        task = bar.add_task(title, total=total)
        with bar:
            yield _Bar(bar, task)
            bar.update(task, completed=bar.tasks[0].total or 1, total=bar.tasks[0].total or 1)


class _NoBar:
    def advance(self, n: int = 1) -> None:
        pass

    def total(self, n: int) -> None:
        pass


class _Bar:
    def __init__(self, progress: Any, task: Any) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)

    def total(self, n: int) -> None:
        self._progress.update(self._task, total=n)


TERMINAL = _Terminal()


def _log(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", file=TERMINAL.out, flush=True)


def _step_callback(bar: Any) -> Any:
    """A transformers TrainerCallback that moves the step's bar with the optimizer steps."""
    from transformers import TrainerCallback

    class _Steps(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            bar.total(int(state.max_steps) + 1)  # + 1: export and publish

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            bar.advance()

        def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state is None:  # the frozen head trains without a Trainer: one call per head epoch
                bar.advance()

    return _Steps()


def train_scenarios(repository: Path, epochs: float | None) -> dict[str, float | None]:
    """Train and publish each demo scenario not yet published; return its validation accuracy. Run folders
    (logs, figures) go beside the repository, in demo-runs/ (var/demo-runs for var/demo-repository)."""
    from model_repository import ModelRepository, RepositoryError
    from training import custom_scenario, make_train_config, publish_run, train

    repo = ModelRepository(repository)
    runs = Path(repository).parent / "demo-runs"  # beside it, not in ./runs: `make clean` empties var/
    accuracy: dict[str, float | None] = {}
    for name, (labels, strategy) in DEMO_SCENARIOS.items():
        if "production" in (repo.aliases(name) if repo.scenario_path(name).is_dir() else {}):
            try:  # what serving will check: a damaged one (or an alias on a deleted one) is retrained
                manifest = repo.verify(name, repo.resolve(name))
            except RepositoryError as exc:
                _log(f"{name}: production fails verification ({exc}); training a new version")
            else:
                accuracy[name] = manifest.metrics.get("accuracy")
                _log(
                    f"{name}: already published (production -> v{manifest.version}); "
                    f"delete {repository} to retrain"
                )
                continue
        start = time.perf_counter()
        scenario = custom_scenario(name, labels, SAMPLE_DATA / name, max_length_tokens=64)
        lr, default_epochs = DEMO_TRAINING[strategy]
        config = make_train_config(
            scenario,
            strategy,
            base_model="minilm",
            num_train_epochs=epochs or default_epochs,
            learning_rate=lr,
            seed=0,
            output_dir=runs / name / f"{strategy}-{time.strftime('%Y%m%d-%H%M%S')}",
        )
        with TERMINAL.step(f"{name}: train ({strategy}), export, publish") as bar:
            trained = train(config, extra_callbacks=[_step_callback(bar)])
            manifest = publish_run(trained, repo, export_precisions=["fp32", "int8"], alias="production")
        accuracy[name] = manifest.metrics.get("accuracy")
        _log(
            f"{name}: {strategy} v{manifest.version} published in {time.perf_counter() - start:.0f}s "
            f"(validation accuracy {accuracy[name]:.3f})"
        )
    return accuracy


def demo_plan(repository: Path, port: int) -> ServePlan:
    """How the demo serves: exactly as `labelwise serve --repository R --port P` would (the chart's
    serve config, every core of this machine, direct ingress), for the demo's scenarios only."""
    from labelwise.server import plan_server

    return plan_server(
        repository=repository,
        host="127.0.0.1",
        port=port,
        settings={"scenarios": [{"name": name} for name in DEMO_SCENARIOS]},
    )


def _number(kind: type[int] | type[float], option: str, variable: str) -> Any:
    """An argparse type converting to `kind`; the error names the option and its environment variable."""

    def convert(text: str) -> int | float:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid {kind.__name__} value {text!r} (from {option} or {variable})"
            ) from None

    convert.__name__ = kind.__name__
    return convert


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--repository", default=os.environ.get("LABELWISE_DEMO_REPOSITORY", "var/demo-repository")
    )
    # The variables' raw text is the default: argparse converts it (only when the option is not given, and
    # not for --help), so a bad value is a usage error naming the option and its variable (exit 2).
    parser.add_argument(
        "--port",
        type=_number(int, "--port", "LABELWISE_DEMO_PORT"),
        default=os.environ.get("LABELWISE_DEMO_PORT", "8000"),
        help="Port to serve on (env LABELWISE_DEMO_PORT; default 8000).",
    )
    parser.add_argument(
        "--epochs",
        type=_number(float, "--epochs", "LABELWISE_DEMO_EPOCHS"),
        default=os.environ.get("LABELWISE_DEMO_EPOCHS"),
        help="Epochs for every scenario (env LABELWISE_DEMO_EPOCHS; default: per strategy, see "
        "DEMO_TRAINING).",
    )
    parser.add_argument("--smoke", action="store_true", help="Send a few requests, then exit.")
    parser.add_argument(
        "--verbose", action="store_true", help="Show every library's output too (default: to --log-file)."
    )
    parser.add_argument(
        "--log-file",
        default=os.environ.get("LABELWISE_DEMO_LOG", "var/demo.log"),
        help="Where library output and warnings go when not --verbose.",
    )
    args = parser.parse_args(argv)
    if not args.verbose:
        TERMINAL.to_log(Path(args.log_file).resolve())
        _log(f"library output and warnings go to {args.log_file} (--verbose shows them here)")
    exit_after = os.environ.get("LABELWISE_DEMO_EXIT_AFTER_S")
    start = time.perf_counter()
    repository = Path(args.repository).resolve()
    from model_repository.errors import UsageError
    from serving.ports import check_port_free

    try:
        check_port_free("127.0.0.1", args.port)  # now, not after minutes of training
    except UsageError as exc:
        print(f"demo: {exc} (--port or LABELWISE_DEMO_PORT)", file=TERMINAL.err, flush=True)
        return 2

    _log(f"training {list(DEMO_SCENARIOS)} on the sample data with all-MiniLM-L6-v2 (CPU, offline)")
    accuracy = train_scenarios(repository, args.epochs)
    train_s = time.perf_counter() - start
    for name, value in accuracy.items():
        shown = f"{value:.3f}" if value is not None else "n/a"
        _log(f"validation accuracy {name} ({DEMO_SCENARIOS[name][1]}): {shown}")
    _log(f"models ready in {train_s:.0f}s; starting Ray Serve on 127.0.0.1:{args.port}")

    from labelwise.client import LabelwiseClient
    from labelwise.server import StopServing, raise_on_stop_signals, run_server
    from serving.local_ray import stop_local_ray

    url = f"http://127.0.0.1:{args.port}"
    plan = demo_plan(repository, args.port)
    try:
        # SIGTERM and SIGHUP (kill, docker stop, a closed terminal) take Ctrl-C's way out, through the
        # `finally` below, from here on (a Ctrl-C while Ray starts too).
        raise_on_stop_signals()
        with TERMINAL.step("start Ray Serve and load the scenarios", total=2) as bar:
            run_server(
                plan.args,
                plan.host,
                plan.port,
                block=False,
                app_name=plan.app_name,
                route_prefix=plan.route_prefix,
                direct_ingress=plan.direct_ingress,
                ingress_replicas=plan.ingress_replicas,
            )
            bar.advance()
        # again: ray.init puts its own SIGTERM handler in, which exits without stopping Ray's agents
        raise_on_stop_signals()
        with LabelwiseClient(url, timeout_s=30) as client:
            with TERMINAL.step("wait for /readyz", total=1):
                problem = wait_until_ready(client, timeout_s=300)
            if problem:
                _log(problem)
                return 1
            for name, texts in EXAMPLES.items():
                try:
                    result = client.classify(name, texts, top_k=1)
                except Exception as exc:  # the demo's promise is working requests: say so and fail
                    _log(f"{name}: request failed: {type(exc).__name__}: {exc}")
                    return 1
                for text, row in zip(texts, result.results, strict=True):
                    _log(f"{name} v{result.version}: {text!r} -> {row[0].label} ({row[0].score:.2f})")
        body = json.dumps(
            {"scenario": "support_ticket", "texts": ["I was charged twice this month"], "top_k": 2}
        )
        print(
            f"\nServing. Try:\n  curl -s {url}/v1/classify -H 'Content-Type: application/json' -d '{body}'\n"
            f"  API docs: {url}/docs    scenarios: {url}/v1/scenarios    metrics: {url}/metrics\n"
            f"Demo ready in {time.perf_counter() - start:.0f}s (training + export {train_s:.0f}s).",
            file=TERMINAL.out,
            flush=True,
        )
        if args.smoke or exit_after is not None:
            time.sleep(float(exit_after or 0))
            return 0
        print("Ctrl-C stops the server.", file=TERMINAL.out, flush=True)
        while True:
            time.sleep(1)
    except (KeyboardInterrupt, StopServing):
        return 0
    finally:
        stop_local_ray()


def wait_until_ready(client: Any, timeout_s: float) -> str | None:
    """Poll /readyz until it answers 200: None then, else why not. A scenario the server refused (a
    version that fails verification, say) will not load by waiting: its error is returned at once."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, str] = {}
    next_look = time.monotonic()
    while not client.ready():
        if time.monotonic() >= next_look:  # every few seconds: the client retries a server not up yet
            next_look = time.monotonic() + 3.0
            with contextlib.suppress(Exception):  # the app may not answer yet while it starts
                listed = client.scenarios()
                last = {s.name: s.last_error for s in listed if s.version is None and s.last_error}
        refused = {name: error for name, error in last.items() if error.startswith("REFUSED")}
        if refused:
            return "; ".join(f"{name} was refused: {error}" for name, error in refused.items())
        if time.monotonic() > deadline:
            errors = "".join(f"; {name}: {error}" for name, error in last.items())
            return f"scenarios did not load within {timeout_s:.0f}s{errors}; see the Ray logs"
        time.sleep(0.5)
    return None


def run() -> int:
    """main(), with a failure told on the terminal even when its traceback goes to the log file."""
    try:
        return main()
    except KeyboardInterrupt:  # Ctrl-C before serving (training): say so where the user looks
        print("[demo] interrupted", file=TERMINAL.err, flush=True)
        return 130
    except Exception as exc:
        if not TERMINAL.quiet:
            raise
        import traceback

        traceback.print_exc()  # fd 2: the log file
        print(f"demo failed: {type(exc).__name__}: {exc} (traceback in the log file)", file=TERMINAL.err)
        return 1


if __name__ == "__main__":
    sys.exit(run())
