"""The whole batching policy of a replica, in one place.

Two levels, both set from ServingConfig:
- **request rows -> a batch**: `Batcher` runs `max_concurrent_batches` batch slots. A slot that is free
  takes every row waiting (up to `max_batch_size`) and runs them as one batch; rows that arrive while
  every slot is busy wait together and become the next batch. `batch_wait_timeout_s` lets a free slot
  wait that long for more rows when its batch is not full (0, the default: it starts at once). With
  `share_waiting_rows` a slot that wakes while other slots are idle takes only its share of the rows
  waiting, so that the idle slots run the rest at once (one ORT thread per pass on every core).
- **a batch -> forward passes**: the engine groups rows that can share a pass, sorts each group by
  length and cuts it so that no pass pads more than `max_batch_tokens` tokens (`micro_batches`).

Why not `@serve.batch`: Ray's batch loop closes a batch when its wait ends, whether or not a slot is
free to run it, so with a short wait it queues many one-row batches behind the busy slots, and with a
longer one a free core sits idle for the whole wait. On the 2-core box (MiniLM int8, one-text requests,
wrk, the same service without Ray) the 5 ms wait left the machine 22-42 % idle: 486 req/s at c=32 and
288 at c=8; `@serve.batch` with no wait 548-560 and 427-443; these slots 591-593 and 433-476
(docs/serving.md, "Batch slots").

`run_batch` is what a slot runs. It knows nothing of Ray, so it is tested with plain asyncio
(tests/unit/serving/test_batching.py); it records the batch and pass metrics, whose values it is the
first to know.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from model_repository.passes import CPU_MAX_BATCH_TOKENS, MAX_BATCH_ROWS, length_passes

if TYPE_CHECKING:
    from .config import ServingConfig
    from .engine import BatchOutcome, Row, RowResult
    from .metrics import ServingMetrics

logger = logging.getLogger("labelwise.serving")


@dataclass(frozen=True)
class BatchPolicy:
    """How rows become batches and batches become forward passes."""

    max_batch_size: int = MAX_BATCH_ROWS
    batch_wait_timeout_s: float = 0.0
    max_concurrent_batches: int = 1
    max_batch_tokens: int = CPU_MAX_BATCH_TOKENS
    share_waiting_rows: bool = False

    @classmethod
    def from_config(cls, config: ServingConfig) -> BatchPolicy:
        return cls(
            config.max_batch_size,
            config.batch_wait_timeout_s,
            config.max_concurrent_batches,
            config.max_batch_tokens,
            config.share_waiting_rows,
        )

    def micro_batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Row indices sorted by length, cut so that rows x longest row <= max_batch_tokens per pass
        (model_repository.passes, which export and evaluation share: int8 depends on the pass)."""
        return length_passes(lengths, self.max_batch_tokens)


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


@dataclass
class _Waiting:
    """A submitted row and the future its request awaits."""

    item: BatchItem
    future: asyncio.Future[RowResult | Exception]


class _Lane:
    """One event loop's queue, arrival signal and slot tasks."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[_Waiting] = asyncio.Queue()
        self.arrived = asyncio.Event()
        self.slots: list[asyncio.Task[None]] = []
        self.idle = 0  # slots waiting for a first row


class Batcher:
    """Rows of concurrent requests -> batches, `max_concurrent_batches` at once (see the module doc).

    The slots are tasks on the event loop that submits (a replica has one: its user-code loop); another
    loop gets slots of its own, so no row ever waits on a loop that is not running. ONNX Runtime and the
    tokenizer run in a worker thread (run_batch), so one slot's pass overlaps another's on another core.
    A row whose request is gone (cancelled: client gone, timeout) before its batch starts is skipped.
    """

    def __init__(self, run: RunRows, policy: BatchPolicy, metrics: ServingMetrics | None = None) -> None:
        self._run = run
        self._policy = policy
        self._metrics = metrics
        self._lanes: dict[asyncio.AbstractEventLoop, _Lane] = {}

    async def submit(self, row: Row) -> RowResult:
        loop = asyncio.get_running_loop()
        lane = self._lanes.get(loop)
        if lane is None:
            for closed in [other for other in self._lanes if other.is_closed()]:
                del self._lanes[closed]  # a finished loop (tests: one asyncio.run each) takes its lane along
            lane = self._lanes[loop] = _Lane()
            lane.slots = [
                loop.create_task(self._slot(lane), name=f"labelwise-batch-slot-{i}")
                for i in range(self._policy.max_concurrent_batches)
            ]
        waiting = _Waiting(BatchItem(row, time.perf_counter()), loop.create_future())
        lane.queue.put_nowait(waiting)
        lane.arrived.set()
        result = await waiting.future
        if isinstance(result, Exception):
            raise result
        return result

    async def _next_batch(self, lane: _Lane) -> list[_Waiting]:
        """The first waiting row, every row queued behind it (with share_waiting_rows, only this slot's
        share while other slots are idle), and with batch_wait_timeout_s whatever arrives within that
        wait, up to max_batch_size rows."""
        lane.idle += 1
        try:
            batch = [await lane.queue.get()]
        finally:
            lane.idle -= 1
        limit = self._policy.max_batch_size
        if self._policy.share_waiting_rows and lane.idle:
            # leave the other idle slots their share of the rows waiting: one batch per free slot
            limit = min(limit, -(-(lane.queue.qsize() + 1) // (lane.idle + 1)))
        deadline = time.perf_counter() + self._policy.batch_wait_timeout_s
        while len(batch) < limit:
            if not lane.queue.empty():
                batch.append(lane.queue.get_nowait())
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            lane.arrived.clear()
            try:
                await asyncio.wait_for(lane.arrived.wait(), remaining)
            except TimeoutError:
                break
        return batch

    async def _slot(self, lane: _Lane) -> None:
        while True:
            batch = [w for w in await self._next_batch(lane) if not w.future.done()]
            if not batch:
                continue
            try:
                results: list[RowResult | Exception] = await run_batch(
                    [w.item for w in batch], self._run, self._metrics
                )
            except asyncio.CancelledError:  # the loop is closing: no row is left without an answer
                for w in batch:
                    if not w.future.done():
                        w.future.cancel()
                raise
            except Exception as exc:
                # run_batch answers per row, so this is a bug in it: fail the batch, keep the slot.
                logger.exception("batch slot failed on %d rows", len(batch))
                results = [exc] * len(batch)
            for w, result in zip(batch, results, strict=True):
                if not w.future.done():
                    w.future.set_result(result)


__all__ = ["BatchItem", "BatchPolicy", "Batcher", "run_batch"]
