"""Dynamic batching of rows with Ray Serve's @serve.batch: one result per row, in order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ray import serve

from .engine import BatchStats, Row, RowResult


class RowBatcher:
    """Collects rows from concurrent requests into batches and runs them off the event loop."""

    def __init__(
        self,
        classify: Callable[[list[Row]], list[RowResult]],
        max_batch_size: int,
        batch_wait_timeout_s: float,
        on_batch: Callable[[int, list[float]], None] | None = None,
    ) -> None:
        self._classify = classify
        self._on_batch = on_batch
        self._run.set_max_batch_size(max_batch_size)
        self._run.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def submit(self, row: Row) -> RowResult:
        return await self._run((row, time.perf_counter()))

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def _run(self, items: list[tuple[Row, float]]) -> list[RowResult]:
        now = time.perf_counter()
        if self._on_batch is not None:
            self._on_batch(len(items), [now - queued for _row, queued in items])
        # ONNX Runtime and the Rust tokenizer release the GIL: a worker thread keeps HTTP responsive.
        return await asyncio.to_thread(self._classify, [row for row, _queued in items])


__all__ = ["BatchStats", "RowBatcher"]
