"""Dynamic batching: a plain async handler over a list of rows, wrapped in Ray Serve's @serve.batch
when a replica builds its RowBatcher. The handler itself knows nothing of Ray, so it is tested with
plain asyncio (tests/unit/serving/test_batching.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .engine import BatchStats, Row, RowResult

logger = logging.getLogger("labelwise.serving")

ClassifyRows = Callable[[list[Row]], list[RowResult | Exception]]
OnBatch = Callable[[int, list[float]], None]


@dataclass(frozen=True)
class BatchItem:
    """One row waiting for a batch, and when it started waiting (time.perf_counter seconds)."""

    row: Row
    queued_at_s: float


async def classify_batch(
    items: list[BatchItem], classify: ClassifyRows, on_batch: OnBatch | None = None
) -> list[RowResult | Exception]:
    """One result per item, in order; a failed item carries its exception (the others still answer)."""
    now = time.perf_counter()
    if on_batch is not None:
        on_batch(len(items), [now - item.queued_at_s for item in items])
    rows = [item.row for item in items]
    try:
        # ONNX Runtime and the Rust tokenizer release the GIL: a worker thread keeps HTTP responsive.
        results = await asyncio.to_thread(classify, rows)
    except Exception as exc:  # every item of a batch that failed as a whole gets it
        logger.exception("batch of %d rows failed", len(rows))
        return [exc] * len(items)
    if len(results) != len(items):
        error = RuntimeError(f"the engine returned {len(results)} results for {len(items)} rows")
        return [error] * len(items)
    for exc in {id(r): r for r in results if isinstance(r, Exception)}.values():
        logger.error("rows failed: %s: %s", type(exc).__name__, exc)
    return results


class RowBatcher:
    """Collects rows of concurrent requests into batches with @serve.batch (size and wait from config)."""

    def __init__(
        self,
        classify: ClassifyRows,
        max_batch_size: int,
        batch_wait_timeout_s: float,
        on_batch: OnBatch | None = None,
        max_concurrent_batches: int = 1,
    ) -> None:
        from ray import serve

        async def handler(items: list[BatchItem]) -> list[RowResult | Exception]:
            return await classify_batch(items, classify, on_batch)

        # More than one batch at a time: ONNX Runtime's Run is thread-safe and releases the GIL, so a
        # second batch's tokenizer and ORT pass overlap the first's on another core.
        self._run = serve.batch(
            max_batch_size=max_batch_size,
            batch_wait_timeout_s=batch_wait_timeout_s,
            max_concurrent_batches=max_concurrent_batches,
        )(handler)

    async def submit(self, row: Row) -> RowResult:
        result = await self._run(BatchItem(row, time.perf_counter()))
        if isinstance(result, Exception):
            raise result
        return result


__all__ = ["BatchItem", "BatchStats", "RowBatcher", "classify_batch"]
