"""The in-process ceiling: the serving engine alone on all cores, no HTTP, no Ray, at its best batch size.

Same code path as a replica's batch (serving.engine: tokenize -> ONNX Runtime -> softmax), same
model and precision as the served run, on the same sentences. "All cores" two ways, and the higher
one is the ceiling: one process whose ORT session has one intra-op thread per core, and one
single-threaded process per core running at the same time (started together behind a barrier,
figures summed). Runs in child processes (`python -m loadtests.ceiling`, one JSON line out) so
that their thread pools are gone before the server starts.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

DEFAULT_BATCH_SIZES = (1, 8, 16, 32, 64)


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
    from model_repository import ModelRepository
    from serving.batching import BatchPolicy
    from serving.engine import BaseEncoderCache, EngineSettings, OnnxEngine, Row, load_scenario

    repo = ModelRepository(repository)
    settings = EngineSettings(["CPUExecutionProvider"], [precision], threads)
    loaded = load_scenario(repo, scenario, repo.resolve(scenario, "production"), settings, BaseEncoderCache())
    engine = OnnxEngine(BatchPolicy(max_batch_tokens=max_batch_tokens))
    stream = itertools.cycle(texts)
    for size in batch_sizes:
        engine.classify([Row(loaded, next(stream)) for _ in range(size)])  # warm each shape
    if barrier is not None:
        barrier()
    per_size: dict[str, float] = {}
    for size in batch_sizes:
        rows = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds_per_size:
            engine.classify([Row(loaded, next(stream)) for _ in range(size)])
            rows += size
        per_size[str(size)] = round(rows / elapsed, 2)
    best = max(per_size, key=per_size.__getitem__)
    return {
        "scenario": scenario,
        "precision": loaded.precision,
        "threads": threads,
        "max_batch_tokens": max_batch_tokens,
        "best_batch_size": int(best),
        "seq_per_s": per_size[best],
        "seq_per_s_by_batch_size": per_size,
    }


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
    cmd = [
        sys.executable, "-m", "loadtests.ceiling", "--repository", repository, "--scenario", scenario,
        "--threads", "1", "--precision", precision, "--batch-sizes", ",".join(map(str, batch_sizes)),
        "--seconds-per-size", str(seconds_per_size), "--max-batch-tokens", str(max_batch_tokens),
        "--wait-for-go",
    ]  # fmt: skip
    if texts_file:
        cmd += ["--texts-file", texts_file]
    with tempfile.TemporaryFile("w+") as errors:
        children = [
            subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True)
            for _ in range(processes)
        ]

        def failure(what: str) -> RuntimeError:
            errors.seek(0)
            return RuntimeError(f"a ceiling process {what}: {errors.read()[-2000:]}")

        try:
            for child in children:  # each says "ready" once loaded and warm (other lines are skipped)
                while (line := child.stdout.readline()) and line.strip() != "ready":
                    pass
                if not line:
                    raise failure("exited before it was ready")
            for child in children:  # then all start measuring together
                child.stdin.write("go\n")
                child.stdin.flush()
            results = []
            for child in children:
                out, _ = child.communicate(timeout=timeout_s)
                if child.returncode != 0:
                    raise failure(f"failed with exit code {child.returncode}")
                results.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
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


def _wait_for_go() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("ceiling: the parent went away before measuring started")


def all_cores() -> int:
    """Logical cores this process may run on (the affinity mask, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


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
    args = parser.parse_args(argv)
    result = measure_ceiling(
        args.repository,
        args.scenario,
        args.threads,
        load_sentences(args.texts_file),
        args.precision,
        tuple(int(b) for b in args.batch_sizes.split(",") if b),
        args.seconds_per_size,
        args.max_batch_tokens,
        barrier=_wait_for_go if args.wait_for_go else None,
    )
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
