"""The whole batching policy of a replica, in one place.

Two levels, both set from ServingConfig:
- **request rows -> a batch**: Ray Serve's `@serve.batch` gathers the rows of concurrent requests
  (`max_batch_size` rows, waiting at most `batch_wait_timeout_s`, `max_concurrent_batches` at once).
- **a batch -> forward passes**: the engine groups rows that can share a pass, sorts each group by
  length and cuts it so that no pass pads more than `max_batch_tokens` tokens (`micro_batches`).

`run_batch` is the handler behind @serve.batch. It knows nothing of Ray, so it is tested with plain
asyncio (tests/unit/serving/test_batching.py); it records the batch and pass metrics, whose values
it is the first to know.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import ServingConfig
    from .engine import BatchOutcome, Row, RowResult
    from .metrics import ServingMetrics

logger = logging.getLogger("labelwise.serving")


@dataclass(frozen=True)
class BatchPolicy:
    """How rows become batches and batches become forward passes."""

    max_batch_size: int = 64
    batch_wait_timeout_s: float = 0.005
    max_concurrent_batches: int = 1
    max_batch_tokens: int = 16384

    @classmethod
    def from_config(cls, config: ServingConfig) -> BatchPolicy:
        return cls(
            config.max_batch_size,
            config.batch_wait_timeout_s,
            config.max_concurrent_batches,
            config.max_batch_tokens,
        )

    def micro_batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Row indices sorted by length, cut so that rows x longest row <= max_batch_tokens per pass.

        Sorting keeps padding small; a single row longer than the budget still gets a pass of its own.
        """
        chunks: list[list[int]] = []
        current: list[int] = []
        for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
            # Ascending order: the padded width of the chunk is this row's length.
            if current and (len(current) + 1) * lengths[i] > self.max_batch_tokens:
                chunks.append(current)
                current = []
            current.append(i)
        if current:
            chunks.append(current)
        return chunks


@dataclass(frozen=True)
class BatchItem:
    """One row waiting for a batch, and when it started waiting (time.perf_counter seconds)."""

    row: Row
    queued_at_s: float


RunRows = Callable[[list["Row"]], "BatchOutcome"]


async def run_batch(
    items: list[BatchItem], run: RunRows, metrics: ServingMetrics | None = None
) -> list[RowResult | Exception]:
    """One result per item, in order; a failed item carries its exception (the others still answer)."""
    now = time.perf_counter()
    if metrics is not None:
        metrics.batch_rows.observe(len(items))
        for item in items:
            metrics.queue_wait.observe(now - item.queued_at_s)
    try:
        # ONNX Runtime and the Rust tokenizer release the GIL: a worker thread keeps HTTP responsive.
        outcome = await asyncio.to_thread(run, [item.row for item in items])
    except Exception as exc:  # every item of a batch that failed as a whole gets it
        logger.exception("batch of %d rows failed", len(items))
        return [exc] * len(items)
    results = outcome.results
    if len(results) != len(items):
        error = RuntimeError(f"the engine returned {len(results)} results for {len(items)} rows")
        return [error] * len(items)
    if metrics is not None:
        for p in outcome.passes:
            metrics.pass_rows.observe(p.rows)
            metrics.pass_tokens.observe(p.tokens)
            metrics.pass_scenarios.labels(p.group).observe(p.scenarios)
            metrics.inference.labels(p.group).observe(p.seconds)
    for exc in {id(r): r for r in results if isinstance(r, Exception)}.values():
        logger.error("rows failed: %s: %s", type(exc).__name__, exc)
    return results


class Batcher:
    """Collects rows of concurrent requests into batches with @serve.batch, as the policy says."""

    def __init__(self, run: RunRows, policy: BatchPolicy, metrics: ServingMetrics | None = None) -> None:
        from ray import serve

        async def handler(items: list[BatchItem]) -> list[Any]:
            return await run_batch(items, run, metrics)

        # More than one batch at a time: ONNX Runtime's Run is thread-safe and releases the GIL, so a
        # second batch's tokenizer and ORT pass overlap the first's on another core.
        self._submit = serve.batch(
            max_batch_size=policy.max_batch_size,
            batch_wait_timeout_s=policy.batch_wait_timeout_s,
            max_concurrent_batches=policy.max_concurrent_batches,
        )(handler)

    async def submit(self, row: Row) -> RowResult:
        result = await self._submit(BatchItem(row, time.perf_counter()))
        if isinstance(result, Exception):
            raise result
        return result


__all__ = ["BatchItem", "BatchPolicy", "Batcher", "run_batch"]
