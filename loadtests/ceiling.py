"""The in-process ceiling: the serving engine alone, no HTTP, no Ray, at its best batch size.

Same code path as a replica's batch (serving.engine: tokenize -> ONNX Runtime -> softmax), same
model, precision and ORT threads as the served run, on the same sentences. Runs in its own process
(`python -m loadtests.ceiling`, one JSON line out) so that its ORT thread pool is gone before the
server starts.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
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
) -> dict[str, Any]:
    """seq/s of OnnxEngine.classify at each batch size; the best one is the ceiling."""
    from model_repository import ModelRepository
    from serving.batching import BatchPolicy
    from serving.engine import BaseEncoderCache, EngineSettings, OnnxEngine, Row, load_scenario

    repo = ModelRepository(repository)
    settings = EngineSettings(["CPUExecutionProvider"], [precision], threads)
    loaded = load_scenario(repo, scenario, repo.resolve(scenario, "production"), settings, BaseEncoderCache())
    engine = OnnxEngine(BatchPolicy(max_batch_tokens=max_batch_tokens))
    stream = itertools.cycle(texts)
    per_size: dict[str, float] = {}
    for size in batch_sizes:
        engine.classify([Row(loaded, next(stream)) for _ in range(size)])  # warm this shape
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
    )
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
