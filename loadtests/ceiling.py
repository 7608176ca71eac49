"""The in-process ceiling: the serving engine alone on all cores, no HTTP, no Ray, at its best batch size.

Same code path as a replica's batch (serving.engine: tokenize -> ONNX Runtime -> softmax), same
model and precision as the served run, on the same sentences. "All cores" two ways, and the higher
one is the ceiling: one process whose ORT session has one intra-op thread per core, and one
single-threaded process per core running at the same time (started together behind a barrier,
figures summed). Runs in child processes (`python -m loadtests.ceiling`, one JSON line out) so
that their thread pools are gone before the server starts. `ResidentCeiling` keeps the best way's
processes loaded and waiting (blocked on stdin, no CPU) while a server runs, to measure the ceiling
again just before and just after a served load.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from .errors import BenchError

# Up to 128: the most rows any compared load keeps in flight (32 texts at c=4), per process. The report
# says so when the best size is the largest swept (the engine might go faster still).
DEFAULT_BATCH_SIZES = (1, 8, 16, 32, 64, 128)


def measure_ceiling(
    repository: str,
    scenario: str,
    threads: int,
    texts: list[str],
    precision: str = "int8",
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES,
    seconds_per_size: float = 3.0,
    max_batch_tokens: int = 16384,
    barrier: Any = None,
) -> dict[str, Any]:
    """seq/s of OnnxEngine.classify at each batch size; the best one is the ceiling.

    barrier, when given, is called once the model is loaded and warm, before measuring starts.
    """
    engine = _Engine(repository, scenario, threads, texts, precision, max_batch_tokens, batch_sizes)
    if barrier is not None:
        barrier()
    per_size = {str(size): engine.rate(size, seconds_per_size) for size in batch_sizes}
    best = max(per_size, key=per_size.__getitem__)
    return {
        "scenario": scenario,
        "precision": engine.precision,
        "threads": threads,
        "max_batch_tokens": max_batch_tokens,
        "best_batch_size": int(best),
        "seq_per_s": per_size[best],
        "seq_per_s_by_batch_size": per_size,
    }


class _Engine:
    """The serving engine on one scenario version, warm at each batch size, cycling through the texts."""

    def __init__(
        self,
        repository: str,
        scenario: str,
        threads: int,
        texts: list[str],
        precision: str,
        max_batch_tokens: int,
        warm_sizes: tuple[int, ...],
    ) -> None:
        from model_repository import ModelRepository
        from serving.batching import BatchPolicy
        from serving.engine import BaseEncoderCache, EngineSettings, OnnxEngine, Row, load_scenario

        repo = ModelRepository(repository)
        settings = EngineSettings(["CPUExecutionProvider"], [precision], threads)
        version = repo.resolve(scenario, "production")
        self.loaded = load_scenario(repo, scenario, version, settings, BaseEncoderCache())
        self.precision = self.loaded.precision
        self.engine = OnnxEngine(BatchPolicy(max_batch_tokens=max_batch_tokens))
        self.row = Row  # imported here, with the engine: the parent process never loads serving
        self.stream = itertools.cycle(texts)
        for size in warm_sizes:
            self.classify(size)  # warm each shape

    def classify(self, size: int) -> None:
        self.engine.classify([self.row(self.loaded, next(self.stream)) for _ in range(size)])

    def rate(self, size: int, seconds: float) -> float:
        """seq/s of batches of `size` rows, classified one after the other for `seconds`."""
        rows = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            self.classify(size)
            rows += size
        return round(rows / elapsed, 2)


def _child_cmd(repository: str, scenario: str, threads: int, texts_file: str | None, precision: str,
               batch_sizes: tuple[int, ...], seconds_per_size: float, max_batch_tokens: int,
               mode: str) -> list[str]:  # fmt: skip
    cmd = [
        sys.executable, "-m", "loadtests.ceiling", "--repository", repository, "--scenario", scenario,
        "--threads", str(threads), "--precision", precision, "--batch-sizes", ",".join(map(str, batch_sizes)),
        "--seconds-per-size", str(seconds_per_size), "--max-batch-tokens", str(max_batch_tokens), mode,
    ]  # fmt: skip
    return cmd + (["--texts-file", texts_file] if texts_file else [])


# Loading the graph and warming every batch size takes ~10-40 s on a busy 2-core box.
READY_TIMEOUT_S = 300.0


class _Children:
    """Ceiling processes started together; each says "ready" once loaded and warm, then takes commands
    on stdin. Their stderr goes to one file, quoted when one fails."""

    def __init__(self, cmd: list[str], processes: int, ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        self.errors = tempfile.TemporaryFile("w+")  # noqa: SIM115  (closed by close())
        self.procs: list[subprocess.Popen[str]] = []
        timer = threading.Timer(ready_timeout_s, self._kill)  # a child stuck loading is killed, then refused
        try:
            for _ in range(processes):
                self.procs.append(
                    subprocess.Popen(
                        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors, text=True
                    )
                )
            timer.start()
            for child in self.procs:  # other lines (a library's chatter) are skipped
                while (line := child.stdout.readline()) and line.strip() != "ready":  # type: ignore[union-attr]
                    pass
                if not line:
                    raise self.failure(
                        f"exited before it was ready (or was not ready within {ready_timeout_s:.0f} s)"
                    )
            timer.cancel()
        except BaseException:
            timer.cancel()
            self.close()
            raise

    def failure(self, what: str) -> RuntimeError:
        self.errors.seek(0)
        said = self.errors.read()[-2000:].strip()
        return RuntimeError(f"a ceiling process {what}" + (f": {said}" if said else ""))

    def tell_all(self, command: str) -> None:
        """Send one command line to every process, back to back, so that they start together."""
        for child in self.procs:
            try:
                child.stdin.write(command + "\n")  # type: ignore[union-attr]
                child.stdin.flush()  # type: ignore[union-attr]
            except BrokenPipeError:  # it is gone (killed for memory, crashed)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=5)
                raise self.failure(f"was gone (exit code {child.returncode})") from None

    def read_all(self, timeout_s: float) -> list[dict[str, Any]]:
        """The next JSON line of each process (other lines skipped); all are killed past timeout_s."""
        timer = threading.Timer(timeout_s, self._kill)
        timer.start()
        try:
            results = []
            for child in self.procs:
                # the next JSON object line; anything else a library printed is skipped
                while (line := child.stdout.readline()) and not line.startswith("{"):  # type: ignore[union-attr]
                    pass
                if not line:
                    child.wait()
                    raise self.failure(f"failed with exit code {child.returncode}")
                results.append(json.loads(line))
            return results
        finally:
            timer.cancel()

    def _kill(self) -> None:
        for child in self.procs:
            if child.poll() is None:
                child.kill()

    def close(self) -> None:
        self._kill()
        for child in self.procs:
            child.wait()
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):  # a dead child's stdin holds what it never read
                        stream.close()
        self.errors.close()


def measure_ceiling_processes(
    processes: int,
    repository: str,
    scenario: str,
    texts_file: str | None,
    precision: str = "int8",
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES,
    seconds_per_size: float = 3.0,
    max_batch_tokens: int = 16384,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """`processes` single-threaded engines measured at the same time; seq/s summed per batch size."""
    cmd = _child_cmd(repository, scenario, 1, texts_file, precision, batch_sizes, seconds_per_size,
                     max_batch_tokens, "--wait-for-go")  # fmt: skip
    children = _Children(cmd, processes)
    try:
        children.tell_all("go")  # all start measuring together
        results = children.read_all(timeout_s)
    finally:
        children.close()
    per_size = {
        size: round(sum(r["seq_per_s_by_batch_size"][size] for r in results), 2)
        for size in results[0]["seq_per_s_by_batch_size"]
    }
    best = max(per_size, key=per_size.__getitem__)
    return {
        "scenario": scenario,
        "precision": results[0]["precision"],
        "processes": processes,
        "threads": 1,
        "max_batch_tokens": max_batch_tokens,
        "best_batch_size": int(best),
        "seq_per_s": per_size[best],
        "seq_per_s_by_batch_size": per_size,
    }


class ResidentCeiling:
    """The ceiling's engines loaded once and kept waiting, to measure the ceiling again between two loads
    of a served system: `processes` processes of `threads` ORT threads, all at once, at `batch_size`
    (which the caller may change between calls to any of `warm_sizes`, where each engine is warm).

    The host's speed drifts within minutes (and a ceiling taken after the machine idled runs faster than
    one taken between loads), so a served/ceiling ratio is fairest against the ceiling measured just
    before and just after the served load. Waiting engines take no CPU (they block on stdin)."""

    def __init__(
        self,
        processes: int,
        threads: int,
        repository: str,
        scenario: str,
        texts_file: str | None,
        precision: str,
        batch_size: int,
        max_batch_tokens: int,
        warm_sizes: tuple[int, ...] = (),
    ) -> None:
        self.processes, self.threads, self.batch_size = processes, threads, batch_size
        self.warm_sizes = (batch_size, *(size for size in warm_sizes if size != batch_size))
        cmd = _child_cmd(repository, scenario, threads, texts_file, precision, self.warm_sizes, 0.0,
                         max_batch_tokens, "--resident")  # fmt: skip
        self._children = _Children(cmd, processes)

    def measure(self, seconds: float) -> float:
        """seq/s of every engine at once for `seconds` at `batch_size`, summed; BenchError when a process
        has died (killed for memory, crashed) or fails."""
        if self.batch_size not in self.warm_sizes:
            raise ValueError(f"batch size {self.batch_size} is not one of {self.warm_sizes}")
        try:
            self._children.tell_all(f"go {seconds:g} {self.batch_size}")
            results = self._children.read_all(timeout_s=seconds + 60.0)
        except (RuntimeError, OSError) as exc:  # a failed child; BrokenPipeError when it is already gone
            raise BenchError(f"the ceiling around loads failed: {exc}") from exc
        return round(sum(r["seq_per_s"] for r in results), 2)

    def close(self) -> None:
        self._children.close()

    def __enter__(self) -> ResidentCeiling:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wait_for_go() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("ceiling: the parent went away before measuring started")


def _resident(engine: _Engine) -> None:
    """Say "ready", then for each "go SECONDS BATCH_SIZE" line measure that long at that batch size and
    print one JSON line; stop at EOF."""
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        command, *args = line.split()
        if command != "go":
            break
        seconds, size = float(args[0]), int(args[1])
        sys.stdout.write(json.dumps({"seq_per_s": engine.rate(size, seconds)}) + "\n")
        sys.stdout.flush()


def all_cores() -> int:
    """Logical cores this process may run on (the affinity mask, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def server_threads(threads: int | None) -> int | None:
    """`labelwise bench --threads` as its servers get it: 0 is every core, None their own default."""
    return None if threads is None else (threads or all_cores())


def main(argv: list[str] | None = None) -> int:
    from .sentences import load_sentences

    parser = argparse.ArgumentParser(prog="python -m loadtests.ceiling", description=__doc__.splitlines()[0])
    parser.add_argument("--repository", required=True)
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--texts-file", default=None)
    parser.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)))
    parser.add_argument("--seconds-per-size", type=float, default=3.0)
    parser.add_argument("--max-batch-tokens", type=int, default=16384, help="The server's token budget.")
    parser.add_argument("--wait-for-go", action="store_true", help="Print 'ready', wait for 'go' on stdin.")
    parser.add_argument(
        "--resident", action="store_true", help="Print 'ready' (warm at every batch size), then measure per "
        "'go SECONDS BATCH_SIZE' line on stdin, one JSON line each, until EOF "
        "(ResidentCeiling)."
    )  # fmt: skip
    args = parser.parse_args(argv)
    texts = load_sentences(args.texts_file)
    sizes = tuple(int(b) for b in args.batch_sizes.split(",") if b)
    if args.resident:
        engine = _Engine(args.repository, args.scenario, args.threads, texts, args.precision,
                         args.max_batch_tokens, sizes)  # fmt: skip
        _resident(engine)
        return 0
    result = measure_ceiling(
        args.repository,
        args.scenario,
        args.threads,
        texts,
        args.precision,
        sizes,
        args.seconds_per_size,
        args.max_batch_tokens,
        barrier=_wait_for_go if args.wait_for_go else None,
    )
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
