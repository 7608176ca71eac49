"""The whole batching policy of a replica, in one place.

Two levels, both set from ServingConfig:
- **request rows -> a batch**: `Batcher` runs `max_concurrent_batches` pass workers (threads). A worker
  that is free takes every row waiting (up to `max_batch_size`) and runs them as one batch; rows that
  arrive while every worker is busy wait together and become the next batch. `batch_wait_timeout_s` lets
  a free worker wait that long for more rows when its batch is not full (0, the default: it starts at
  once). With `share_waiting_rows` a worker that wakes while other workers are idle takes only its share
  of the rows waiting, so that the idle workers run the rest at once (one ORT thread per pass on every
  core). With `pass_padding_tokens` (8 by default; rows tokenized on arrival) a batch is one forward pass
  of rows of similar length: the oldest row waiting and the rows of its pass group closest to it in
  length, within `max_batch_tokens` and that much padding a row (`Batcher._take`).
- **a batch -> forward passes**: the engine groups rows that can share a pass, sorts each group by
  length and cuts it so that no pass pads more than `max_batch_tokens` tokens (`micro_batches`).

Why not `@serve.batch`: Ray's batch loop closes a batch when its wait ends, whether or not a slot is
free to run it, so with a short wait it queues many one-row batches behind the busy slots, and with a
longer one a free core sits idle for the whole wait. On the 2-core box (MiniLM int8, one-text requests,
wrk, the same service without Ray) the 5 ms wait left the machine 22-42 % idle: 486 req/s at c=32 and
288 at c=8; `@serve.batch` with no wait 548-560 and 427-443; batch slots 591-593 and 433-476
(docs/serving.md, "Batch slots"). The slots were asyncio tasks at first; as threads that take their own
next batch they no longer wait for the request loop between passes ("Pass workers" there).

`run_items` is what a worker runs. It knows nothing of Ray or asyncio, so it is tested on its own
(tests/unit/serving/test_batching.py); it records the batch and pass metrics, whose values it is the
first to know.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from model_repository.passes import CPU_MAX_BATCH_TOKENS, MAX_BATCH_ROWS, length_passes

from .errors import NotReadyError

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


def run_items(
    items: list[BatchItem], run: RunRows, metrics: ServingMetrics | None = None
) -> list[RowResult | Exception]:
    """One result per item, in order; a failed item carries its exception (the others still answer).
    Runs where it is called (a pass worker's thread); records the batch and pass metrics."""
    now = time.perf_counter()
    if metrics is not None:
        metrics.batch_rows.observe(len(items))
        for item in items:
            metrics.queue_wait.observe(now - item.queued_at_s)
    try:
        outcome = run([item.row for item in items])
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
        where = "; ".join(getattr(exc, "__notes__", ()))  # the engine names the scenarios that ran
        logger.error("rows failed%s: %s: %s", f" ({where})" if where else "", type(exc).__name__, exc)
    return results


@dataclass
class _Waiting:
    """A submitted row, the future its request awaits (on `loop`), the pass group it belongs to and its
    token count (None: not tokenized yet, so its length is unknown)."""

    item: BatchItem
    future: asyncio.Future[RowResult | Exception]
    loop: asyncio.AbstractEventLoop
    group: tuple
    tokens: int | None


class BatcherClosedError(NotReadyError):
    """A row submitted to (or still waiting in) a Batcher that was closed: the replica is stopping, so
    the client is answered 503 and retries (another replica, or this service once it is back)."""


class Batcher:
    """Rows of concurrent requests -> batches, run by `max_concurrent_batches` pass workers (see the
    module doc).

    A pass worker is a thread of its own that takes its next batch from the queue as soon as its pass is
    done, runs it (ONNX Runtime and the tokenizer release the GIL, so workers' passes overlap on the
    cores) and hands the results to the event loop each row came from (`call_soon_threadsafe`). So the
    request loop never schedules a pass: between two passes of a worker there is no wait for the loop,
    which may be busy reading and answering requests. Rows of any event loop share the queue. A row whose
    request is gone (cancelled: client gone, timeout) before its batch starts is skipped. Workers start
    with the first row and stop at `close()`.
    """

    def __init__(self, run: RunRows, policy: BatchPolicy, metrics: ServingMetrics | None = None) -> None:
        self._run = run
        self._policy = policy
        self._metrics = metrics
        self._ready = threading.Condition(threading.Lock())  # guards everything below
        self._queue: deque[_Waiting] = deque()  # oldest first
        self._idle = 0  # workers waiting for a first row
        self._workers: list[threading.Thread] = []
        self._closed = False

    async def submit(self, row: Row) -> RowResult:
        """`row`'s result, once a pass worker has run it; a row that failed raises its exception."""
        return (await self.submit_many([row]))[0]

    async def submit_many(self, rows: list[Row]) -> list[RowResult]:
        """The results of one request's rows, in order. The rows join the queue together (one lock, one
        wake-up), so a worker never starts on part of them: a request's rows share passes the same way
        whenever it is sent alone. The first row that failed raises its exception, and the rows not yet
        run (all of them when the request is cancelled) are skipped."""
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        waiting = [
            _Waiting(
                BatchItem(row, now),
                loop.create_future(),
                loop,
                row.scenario.group_key,
                None if row.ids is None else len(row.ids),
            )
            for row in rows
        ]
        self._enqueue(waiting)
        results: list[RowResult] = []
        try:
            for w in waiting:
                result = await w.future
                if isinstance(result, Exception):
                    raise result
                results.append(result)
        except BaseException:
            for w in waiting:
                w.future.cancel()  # no-op on the rows already answered
            raise
        return results

    def _enqueue(self, waiting: list[_Waiting]) -> None:
        with self._ready:
            if self._closed:
                raise BatcherClosedError("the batcher is closed: the replica is shutting down")
            if not self._workers:
                self._start_workers()
            self._queue.extend(waiting)
            self._ready.notify(len(waiting))

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the workers once their passes are done; rows still queued are answered with
        BatcherClosedError (none is left without an answer)."""
        with self._ready:
            self._closed = True
            left = list(self._queue)
            self._queue.clear()
            self._ready.notify_all()
            workers = list(self._workers)
        self._answer(left, [BatcherClosedError("the replica is shutting down")] * len(left))
        for worker in workers:
            if worker is not threading.current_thread():
                worker.join(timeout_s)

    def _start_workers(self) -> None:  # with self._ready held
        for i in range(self._policy.max_concurrent_batches):
            worker = threading.Thread(target=self._work, name=f"labelwise-pass-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._run_batch(batch)
            # No reference to the batch is left while the worker waits for its next one: its rows hold
            # their scenario version, whose sessions an idle replica would otherwise keep after a swap.
            del batch

    def _run_batch(self, batch: list[_Waiting]) -> None:
        live = [w for w in batch if not w.future.done()]
        if not live:
            return
        try:
            results = run_items([w.item for w in live], self._run, self._metrics)
        except Exception as exc:
            # run_items answers per row, so this is a bug in it: fail the batch, keep the worker.
            logger.exception("pass worker failed on %d rows", len(live))
            results = [exc] * len(live)
        self._answer(live, results)

    def _next_batch(self) -> list[_Waiting] | None:
        """The rows of this worker's next batch, at most max_batch_size of them (with share_waiting_rows,
        only this worker's share of the rows waiting while other workers are idle), after waiting for a
        first row and, with batch_wait_timeout_s, that long for more; None once closed. Which rows: see
        `_take`."""
        with self._ready:
            self._idle += 1
            try:
                while not self._queue:
                    if self._closed:
                        return None
                    self._ready.wait()
            finally:
                self._idle -= 1
            limit = self._policy.max_batch_size
            deadline = time.perf_counter() + self._policy.batch_wait_timeout_s
            # (no wait, the default on CPU: the pass is not built twice to see whether it is full)
            while (
                self._policy.batch_wait_timeout_s > 0 and not self._closed and not self._pass_is_full(limit)
            ):
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._ready.wait(remaining)
            if not self._queue:  # another worker took them while this one waited for more
                return []
            if self._policy.share_waiting_rows and self._idle:
                # leave the other idle workers their share of the rows waiting: one batch per free worker
                limit = min(limit, -(-len(self._queue) // (self._idle + 1)))
            return self._take(self._queue, limit)

    def _pass_is_full(self, limit: int) -> bool:  # with self._ready held
        """Whether the batch `_take` would build now has no room for one more row: `limit` rows, or (passes
        by length) no room in max_batch_tokens for another row as wide as the pass. Only then does a free
        worker stop waiting batch_wait_timeout_s for more rows: counting rows alone, a queue of long rows
        (each pass holding few of them) kept every pass waiting the whole timeout."""
        if len(self._queue) >= limit:
            return True
        if not self._queue or self._policy.pass_padding_tokens is None or self._queue[0].tokens is None:
            return False
        chosen, width = self._choose(self._queue, limit)
        return len(chosen) >= limit or (len(chosen) + 1) * width > self._policy.max_batch_tokens

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
        if self._policy.pass_padding_tokens is None or queue[0].tokens is None:
            return [queue.popleft() for _ in range(min(limit, len(queue)))]
        chosen, _width = self._choose(queue, limit)
        batch, kept = [], []
        for w in queue:
            (batch if id(w) in chosen else kept).append(w)
        queue.clear()
        queue.extend(kept)
        return batch

    def _choose(self, queue: deque[_Waiting], limit: int) -> tuple[set[int], int]:
        """The rows (their ids) of the pass `_take` builds from `queue` with pass_padding_tokens, and its
        width in tokens; leaves `queue` as it is."""
        pad = self._policy.pass_padding_tokens
        assert pad is not None
        head = queue[0]
        assert head.tokens is not None
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
        return chosen, width

    @staticmethod
    def _answer(batch: list[_Waiting], results: list[RowResult | Exception]) -> None:
        """Each row's result, set on the loop its request awaits it on (skipped where that loop is gone)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Waiting, RowResult | Exception]]] = {}
        for w, result in zip(batch, results, strict=True):
            by_loop.setdefault(w.loop, []).append((w, result))
        for loop, pairs in by_loop.items():
            # a closed loop raises RuntimeError: no one awaits these rows any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, pairs)


def _settle(pairs: list[tuple[_Waiting, RowResult | Exception]]) -> None:
    for w, result in pairs:
        if not w.future.done():
            w.future.set_result(result)


__all__ = ["BatchItem", "BatchPolicy", "Batcher", "BatcherClosedError", "run_items"]
