"""The whole batching policy of a replica, in one place.

Two levels, both set from ServingConfig:
- **request rows -> a batch**: `Batcher` runs `max_concurrent_batches` batch slots. A slot that is free
  takes every row waiting (up to `max_batch_size`) and runs them as one batch; rows that arrive while
  every slot is busy wait together and become the next batch. `batch_wait_timeout_s` lets a free slot
  wait that long for more rows when its batch is not full (0, the default: it starts at once). With
  `share_waiting_rows` a slot that wakes while other slots are idle takes only its share of the rows
  waiting, so that the idle slots run the rest at once (one ORT thread per pass on every core).
  With `pass_padding_tokens` (8 by default; rows tokenized on arrival) a batch is one forward pass of
  rows of similar length: the oldest row waiting and the rows of its pass group closest to it in length,
  within `max_batch_tokens` and that much padding a row (`Batcher._take`).
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
import itertools
import logging
import time
from collections import deque
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
    pass_padding_tokens: int | None = None

    @classmethod
    def from_config(cls, config: ServingConfig) -> BatchPolicy:
        return cls(
            config.max_batch_size,
            config.batch_wait_timeout_s,
            config.max_concurrent_batches,
            config.max_batch_tokens,
            config.share_waiting_rows,
            config.pass_padding_tokens,
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
    """A submitted row, the future its request awaits, the pass group it belongs to and its token count
    (None: not tokenized yet, so its length is unknown)."""

    item: BatchItem
    future: asyncio.Future[RowResult | Exception]
    group: tuple
    tokens: int | None


class _Lane:
    """One event loop's queue (oldest first), arrival signal and slot tasks."""

    def __init__(self) -> None:
        self.queue: deque[_Waiting] = deque()
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
        tokens = None if row.ids is None else len(row.ids)
        group = row.scenario.group_key
        waiting = _Waiting(BatchItem(row, time.perf_counter()), loop.create_future(), group, tokens)
        lane.queue.append(waiting)
        lane.arrived.set()
        result = await waiting.future
        if isinstance(result, Exception):
            raise result
        return result

    async def _next_batch(self, lane: _Lane) -> list[_Waiting]:
        """The rows of this slot's next batch, at most max_batch_size of them (with share_waiting_rows,
        only this slot's share of the rows waiting while other slots are idle), after waiting for a first
        row and, with batch_wait_timeout_s, that long for more. Which rows: see `_take`."""
        lane.idle += 1
        try:
            while not lane.queue:
                lane.arrived.clear()
                await lane.arrived.wait()
        finally:
            lane.idle -= 1
        limit = self._policy.max_batch_size
        deadline = time.perf_counter() + self._policy.batch_wait_timeout_s
        while len(lane.queue) < limit:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            lane.arrived.clear()
            try:
                await asyncio.wait_for(lane.arrived.wait(), remaining)
            except TimeoutError:
                break
        if self._policy.share_waiting_rows and lane.idle:
            # leave the other idle slots their share of the rows waiting: one batch per free slot
            limit = min(limit, -(-len(lane.queue) // (lane.idle + 1)))
        return self._take(lane.queue, limit)

    def _take(self, queue: deque[_Waiting], limit: int) -> list[_Waiting]:
        """Up to `limit` rows out of `queue`, the oldest always among them.

        Without pass_padding_tokens (or when a row's length is unknown): the oldest rows, in arrival
        order. With it, the batch is one forward pass: the oldest row, then the waiting rows of its pass
        group (LoadedScenario.group_key) closest to it in length, each only while the pass stays within
        max_batch_tokens (rows x longest) and the row costs at most pass_padding_tokens of padding: a
        shorter row joins when the pass's width exceeds its length by at most that much, a longer one
        when widening the pass pads the rows already in it by at most that much in all. Rows left out
        stay queued for the next free slot, in order. On CPU a pass's cost is nearly linear in its padded
        tokens plus a fixed part (the int8 weights read once per pass), so rows of similar length share
        passes and a row far longer or shorter than the rest waits for a pass of its own kind
        (docs/serving.md)."""
        pad = self._policy.pass_padding_tokens
        head = queue[0]
        if pad is None or head.tokens is None:
            return [queue.popleft() for _ in range(min(limit, len(queue)))]
        budget = self._policy.max_batch_tokens
        # Only the oldest max_batch_size rows: rows of later requests do not take the older requests'
        # rows' places (a request answers when its last row has run).
        scan = list(itertools.islice(queue, 1, self._policy.max_batch_size))
        candidates = sorted(
            (w for w in scan if w.group == head.group and w.tokens is not None),
            key=lambda w: abs(w.tokens - head.tokens),  # type: ignore[operator]
        )
        chosen = {id(head)}
        width = head.tokens
        for w in candidates:
            if len(chosen) >= limit:
                break
            n, t = len(chosen), w.tokens
            assert t is not None
            new_width = max(width, t)
            padding = (new_width - t) if t <= width else n * (t - width)
            if padding > pad or (n + 1) * new_width > budget:
                continue
            chosen.add(id(w))
            width = new_width
        batch, kept = [], []
        for w in queue:
            (batch if id(w) in chosen else kept).append(w)
        queue.clear()
        queue.extend(kept)
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
