"""The batch slots (serving/batching.py Batcher) with plain asyncio over the real engine (no Ray).

Each test wraps the engine's `run` in a recorder that notes every batch's size and, where the test needs
to hold a slot busy, blocks on a gate until the test opens it: so which rows share a batch is decided
by the Batcher alone, not by timing luck.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from serving.batching import Batcher, BatcherClosedError, BatchPolicy
from serving.engine import BatchOutcome, OnnxEngine, Row

TEXTS = ["great film", "awful service again", "ok", "the plan was fine", "late again", "brilliant app"]


class Recorder:
    """engine.run, recording batch sizes and how many batches run at once; the first `hold` calls wait
    for `gate`."""

    def __init__(self, engine: OnnxEngine, hold: int = 0, pause_s: float = 0.0) -> None:
        self.engine = engine
        self.hold = hold
        self.pause_s = pause_s
        self.gate = threading.Event()
        self.started = threading.Event()
        self.sizes: list[int] = []
        self.texts: list[list[str]] = []
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def __call__(self, rows: list[Row]) -> BatchOutcome:
        with self._lock:
            self.sizes.append(len(rows))
            self.texts.append([r.text for r in rows])
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            held = len(self.sizes) <= self.hold
        try:
            self.started.set()
            if held:
                assert self.gate.wait(10), "the test never opened the gate"
            if self.pause_s:
                time.sleep(self.pause_s)
            return self.engine.run(rows)
        finally:
            with self._lock:
                self.running -= 1


def _rows(loaded: dict, texts: list[str]) -> list[Row]:
    return [Row(loaded["frozen_three"], t) for t in texts]


async def _until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.002)


async def _first_held_then_the_rest(
    batcher: Batcher, recorder: Recorder, rows: list[Row]
) -> tuple[list, list]:
    """Row 0 into a slot the recorder holds, the other rows submitted meanwhile, then the gate opened:
    (the batch sizes seen while it was held, every row's result)."""
    first = asyncio.ensure_future(batcher.submit(rows[0]))
    await _until(recorder.started.is_set)
    rest = [asyncio.ensure_future(batcher.submit(r)) for r in rows[1:]]
    await asyncio.sleep(0.05)
    while_held = list(recorder.sizes)
    recorder.gate.set()
    return while_held, await asyncio.gather(first, *rest)


def _same_as_alone(engine: OnnxEngine, rows: list[Row], results: list) -> None:
    for row, got in zip(rows, results, strict=True):
        np.testing.assert_allclose(got.probs, engine.classify([row])[0].probs, atol=1e-5)


def test_rows_that_arrive_while_the_slot_is_busy_run_together_as_the_next_batch(
    loaded_scenarios: dict,
) -> None:
    engine = OnnxEngine(BatchPolicy(max_batch_tokens=4096))
    recorder = Recorder(engine, hold=1)
    batcher = Batcher(recorder, BatchPolicy(max_concurrent_batches=1))
    rows = _rows(loaded_scenarios, TEXTS)

    while_held, results = asyncio.run(_first_held_then_the_rest(batcher, recorder, rows))
    assert while_held == [1]  # the busy slot took nothing more
    assert recorder.sizes == [1, len(rows) - 1]
    assert recorder.texts[1] == TEXTS[1:]  # in arrival order
    _same_as_alone(engine, rows, results)


def test_no_more_batches_run_at_once_than_there_are_slots(loaded_scenarios: dict) -> None:
    engine = OnnxEngine(BatchPolicy(max_batch_tokens=4096))
    recorder = Recorder(engine, pause_s=0.03)
    batcher = Batcher(recorder, BatchPolicy(max_concurrent_batches=2))
    rows = _rows(loaded_scenarios, TEXTS * 3)

    async def scenario() -> list:
        tasks = []
        for row in rows:
            tasks.append(asyncio.ensure_future(batcher.submit(row)))
            await asyncio.sleep(0.005)
        return await asyncio.gather(*tasks)

    results = asyncio.run(scenario())
    assert recorder.most_running == 2
    assert sum(recorder.sizes) == len(rows)
    assert len(recorder.sizes) < len(rows)  # rows queued behind busy slots shared batches
    _same_as_alone(engine, rows, results)


@pytest.mark.parametrize(("share", "sizes"), [(False, [6]), (True, [3, 3])])
def test_with_share_waiting_rows_idle_slots_split_the_rows_waiting(
    loaded_scenarios: dict, share: bool, sizes: list[int]
) -> None:
    engine = OnnxEngine(BatchPolicy(max_batch_tokens=4096))
    recorder = Recorder(engine, pause_s=0.05)
    batcher = Batcher(recorder, BatchPolicy(max_concurrent_batches=2, share_waiting_rows=share))
    rows = _rows(loaded_scenarios, TEXTS)

    async def scenario() -> list:
        await batcher.submit(rows[0])  # the slots exist and both wait for rows
        await asyncio.sleep(0.01)
        return await asyncio.gather(*(batcher.submit(r) for r in rows))  # six rows while both are idle

    results = asyncio.run(scenario())
    assert sorted(recorder.sizes[1:]) == sizes
    assert recorder.most_running == len(sizes)
    assert sorted(t for texts in recorder.texts[1:] for t in texts) == sorted(TEXTS)
    _same_as_alone(engine, rows, results)


def test_a_batch_never_exceeds_max_batch_size(loaded_scenarios: dict) -> None:
    engine = OnnxEngine(BatchPolicy(max_batch_tokens=4096))
    recorder = Recorder(engine, hold=1)
    batcher = Batcher(recorder, BatchPolicy(max_batch_size=2, max_concurrent_batches=1))
    rows = _rows(loaded_scenarios, TEXTS)

    _while_held, results = asyncio.run(_first_held_then_the_rest(batcher, recorder, rows))
    assert recorder.sizes == [1, 2, 2, 1]
    _same_as_alone(engine, rows, results)


@pytest.mark.parametrize(("wait_s", "first_batch"), [(0.0, 1), (0.5, 3)])
def test_a_free_slot_waits_batch_wait_timeout_s_for_more_rows(
    loaded_scenarios: dict, wait_s: float, first_batch: int
) -> None:
    engine = OnnxEngine(BatchPolicy(max_batch_tokens=4096))
    recorder = Recorder(engine)
    batcher = Batcher(recorder, BatchPolicy(batch_wait_timeout_s=wait_s, max_concurrent_batches=1))
    rows = _rows(loaded_scenarios, TEXTS[:3])

    async def scenario() -> list:
        first = asyncio.ensure_future(batcher.submit(rows[0]))
        await asyncio.sleep(0.05)  # the slot is free: with no wait it has started row 0 alone
        rest = [asyncio.ensure_future(batcher.submit(r)) for r in rows[1:]]
        return await asyncio.gather(first, *rest)

    results = asyncio.run(scenario())
    assert recorder.sizes[0] == first_batch
    assert sum(recorder.sizes) == 3
    _same_as_alone(engine, rows, results)


@pytest.mark.parametrize("gone_rows", [1, 2], ids=["one row (submit)", "two rows (submit_many)"])
def test_a_cancelled_requests_rows_are_skipped_and_the_others_answer(
    loaded_scenarios: dict, gone_rows: int
) -> None:
    engine = OnnxEngine(BatchPolicy(max_batch_tokens=4096))
    recorder = Recorder(engine, hold=1)
    batcher = Batcher(recorder, BatchPolicy(max_concurrent_batches=1))
    rows = _rows(loaded_scenarios, TEXTS[: 2 + gone_rows])
    gone_part, kept_row = rows[1:-1], rows[-1]

    async def scenario() -> list:
        first = asyncio.ensure_future(batcher.submit(rows[0]))
        await _until(recorder.started.is_set)
        if len(gone_part) == 1:
            gone = asyncio.ensure_future(batcher.submit(gone_part[0]))
        else:
            gone = asyncio.ensure_future(batcher.submit_many(gone_part))
        kept = asyncio.ensure_future(batcher.submit_many([kept_row]))
        await asyncio.sleep(0.01)
        gone.cancel()  # e.g. the client went away while its rows waited
        # The cancel reaches the future the request awaits at once, its other rows' futures when its
        # task next runs: let it run before the worker is let go (else the worker, a thread, could take
        # the second row first: a flake seen once on the 2-core box).
        await asyncio.wait([gone])
        recorder.gate.set()
        answered = [await first, *(await kept)]
        with pytest.raises(asyncio.CancelledError):
            await gone
        return answered

    answered = asyncio.run(scenario())
    assert recorder.texts == [[TEXTS[0]], [kept_row.text]]
    _same_as_alone(engine, [rows[0], kept_row], answered)
    batcher.close()


def test_a_requests_rows_join_the_queue_together_so_a_worker_never_starts_on_part_of_them(
    loaded_scenarios: dict,
) -> None:
    # Two idle workers: a request's rows submitted one by one could wake one worker on the first rows
    # alone; submit_many queues them at once, so each request of 6 rows is one batch of 6, every time.
    engine = OnnxEngine(BatchPolicy(max_batch_tokens=4096))
    recorder = Recorder(engine)
    batcher = Batcher(recorder, BatchPolicy(max_concurrent_batches=2))
    rows = _rows(loaded_scenarios, TEXTS)

    async def scenario() -> list:
        return [await batcher.submit_many(rows) for _ in range(20)]

    answers = asyncio.run(scenario())
    assert recorder.sizes == [len(rows)] * 20
    assert recorder.texts[0] == TEXTS  # in order
    for results in answers:
        _same_as_alone(engine, rows, results)
    batcher.close()


def test_a_batch_that_fails_answers_its_rows_with_the_error_and_the_slot_keeps_serving(
    loaded_scenarios: dict,
) -> None:
    engine = OnnxEngine(BatchPolicy(max_batch_tokens=4096))
    calls = []

    def run(rows: list[Row]) -> BatchOutcome:
        calls.append(len(rows))
        if len(calls) == 1:
            raise RuntimeError("device lost")
        return engine.run(rows)

    batcher = Batcher(run, BatchPolicy(max_concurrent_batches=1))
    rows = _rows(loaded_scenarios, TEXTS[:2])

    async def scenario() -> object:
        with pytest.raises(RuntimeError, match="device lost"):
            await batcher.submit(rows[0])
        return await batcher.submit(rows[1])

    result = asyncio.run(scenario())
    assert calls == [1, 1]
    _same_as_alone(engine, [rows[1]], [result])


def test_the_workers_answer_rows_of_every_event_loop_on_their_own_loop(
    loaded_scenarios: dict,
) -> None:
    engine = OnnxEngine(BatchPolicy(max_batch_tokens=4096))
    batcher = Batcher(engine.run, BatchPolicy(max_concurrent_batches=1))
    rows = _rows(loaded_scenarios, TEXTS[:2])
    for _ in range(2):  # each asyncio.run is a new loop; the same worker serves both
        result = asyncio.run(batcher.submit(rows[0]))
        _same_as_alone(engine, [rows[0]], [result])
    assert len(batcher._workers) == 1
    # Two loops at once, one in another thread: their rows share the worker's batch, and each is
    # answered on its own loop.
    recorder = Recorder(engine, hold=1)
    batcher = Batcher(recorder, BatchPolicy(max_concurrent_batches=1))
    other: list = []
    held = threading.Thread(target=lambda: other.append(asyncio.run(batcher.submit(rows[0]))))
    held.start()
    assert recorder.started.wait(10)

    async def here_then_open() -> list:
        mine = asyncio.ensure_future(batcher.submit(rows[1]))
        await asyncio.sleep(0.05)
        assert not mine.done()  # waiting behind the held pass: nothing runs it elsewhere
        recorder.gate.set()
        return [await mine]

    here = asyncio.run(here_then_open())
    held.join(10)
    assert recorder.sizes == [1, 1]
    _same_as_alone(engine, rows, [other[0], here[0]])
    batcher.close()


def test_close_answers_the_rows_still_waiting_and_refuses_new_ones(loaded_scenarios: dict) -> None:
    engine = OnnxEngine(BatchPolicy(max_batch_tokens=4096))
    recorder = Recorder(engine, hold=1)
    batcher = Batcher(recorder, BatchPolicy(max_concurrent_batches=1))
    rows = _rows(loaded_scenarios, TEXTS[:3])

    async def scenario() -> tuple[list, list]:
        first = asyncio.ensure_future(batcher.submit(rows[0]))
        await _until(recorder.started.is_set)
        waiting = [asyncio.ensure_future(batcher.submit(r)) for r in rows[1:]]
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(asyncio.to_thread(batcher.close))
        await asyncio.sleep(0.05)
        recorder.gate.set()  # the pass under way finishes and answers
        await closing
        late = [await asyncio.gather(batcher.submit(rows[0]), return_exceptions=True)]
        return await asyncio.gather(first, *waiting, return_exceptions=True), late[0]

    done, late = asyncio.run(scenario())
    _same_as_alone(engine, rows[:1], done[:1])
    assert [type(r) for r in done[1:]] == [BatcherClosedError, BatcherClosedError]
    assert isinstance(late[0], BatcherClosedError)
    assert recorder.sizes == [1]
    assert all(not w.is_alive() for w in batcher._workers)


def _sized_rows(loaded: dict, lengths: list[int]) -> list[Row]:
    """Rows already tokenized (as a replica tokenizes on arrival), `lengths` tokens each, special included."""
    return [
        Row(loaded["frozen_three"], f"row {i}", [0] + [100 + i] * (n - 2) + [2], False)
        for i, n in enumerate(lengths)
    ]


@pytest.mark.parametrize(
    ("padding", "budget", "batches"),
    [
        # rows of similar length share a pass; a row that would pad the others (or be padded) by more
        # than 2 tokens a row waits for a pass of its own kind; the oldest row always goes first
        (2, 4096, [[1, 3, 4], [2, 5], [6]]),
        # any padding, but at most 20 tokens a pass: the rows closest to the oldest fill it first
        (4096, 20, [[1, 3, 4], [2], [5], [6]]),
        # off: every row waiting, in arrival order, as before passes by length
        (None, 4096, [[1, 2, 3, 4, 5, 6]]),
    ],
)
def test_with_pass_padding_tokens_a_batch_is_one_pass_of_rows_of_similar_length(
    loaded_scenarios: dict, padding: int | None, budget: int, batches: list[list[int]]
) -> None:
    engine = OnnxEngine(BatchPolicy(max_batch_tokens=4096))
    recorder = Recorder(engine, hold=1)
    policy = BatchPolicy(max_concurrent_batches=1, max_batch_tokens=budget, pass_padding_tokens=padding)
    batcher = Batcher(recorder, policy)
    rows = _sized_rows(loaded_scenarios, [4, 4, 12, 5, 6, 11, 16])

    _while_held, results = asyncio.run(_first_held_then_the_rest(batcher, recorder, rows))
    assert recorder.texts[1:] == [[f"row {i}" for i in batch] for batch in batches]
    _same_as_alone(engine, rows, results)


def test_rows_left_out_of_a_pass_keep_their_turn(loaded_scenarios: dict) -> None:
    """A long row that no pass of short rows takes is the oldest row of the next batch, not starved."""
    engine = OnnxEngine(BatchPolicy(max_batch_tokens=4096))
    recorder = Recorder(engine, hold=1)
    batcher = Batcher(recorder, BatchPolicy(max_concurrent_batches=1, pass_padding_tokens=0))
    rows = _sized_rows(loaded_scenarios, [4, 5, 16, 5, 5, 16, 5])

    _while_held, results = asyncio.run(_first_held_then_the_rest(batcher, recorder, rows))
    assert recorder.texts[1:] == [["row 1", "row 3", "row 4", "row 6"], ["row 2", "row 5"]]
    _same_as_alone(engine, rows, results)


def test_a_pass_looks_no_further_than_the_oldest_max_batch_size_rows(loaded_scenarios: dict) -> None:
    """Rows of later requests do not take the places of older requests' rows (a request answers when
    its last row has run): the candidates are the oldest max_batch_size rows waiting."""
    engine = OnnxEngine(BatchPolicy(max_batch_tokens=4096))
    recorder = Recorder(engine, hold=1)
    policy = BatchPolicy(max_batch_size=3, max_concurrent_batches=1, pass_padding_tokens=0)
    batcher = Batcher(recorder, policy)
    rows = _sized_rows(loaded_scenarios, [4, 4, 12, 12, 4, 4])

    _while_held, results = asyncio.run(_first_held_then_the_rest(batcher, recorder, rows))
    assert recorder.texts[1:] == [["row 1"], ["row 2", "row 3"], ["row 4", "row 5"]]
    _same_as_alone(engine, rows, results)


@pytest.mark.parametrize("wait_s", [0.0, 30.0])
def test_a_pass_with_no_room_for_another_row_runs_without_waiting(
    loaded_scenarios: dict, wait_s: float
) -> None:
    """batch_wait_timeout_s counted rows alone: with passes by length, a queue of long rows (two a pass
    here) left each pass short of max_batch_size rows, so every pass waited the whole timeout (a 64-text
    request of 128-token texts: 32 passes x the wait). A pass with no room in max_batch_tokens for one
    more row of its width is full: it runs at once, however long the wait."""
    engine = OnnxEngine(BatchPolicy(max_batch_tokens=4096))
    recorder = Recorder(engine)
    policy = BatchPolicy(
        batch_wait_timeout_s=wait_s, max_concurrent_batches=1, pass_padding_tokens=8, max_batch_tokens=24
    )
    batcher = Batcher(recorder, policy)
    rows = _sized_rows(loaded_scenarios, [12] * 6)

    async def scenario() -> list:
        return await asyncio.wait_for(batcher.submit_many(rows), 10)  # the bug: 3 passes x 30 s

    results = asyncio.run(scenario())
    batcher.close()
    assert recorder.sizes == [2, 2, 2]
    _same_as_alone(engine, rows, results)


def test_a_pass_with_room_still_waits_for_more_rows(loaded_scenarios: dict) -> None:
    """The wait stays where more rows could join the pass: one short row, its pass far from the budget."""
    engine = OnnxEngine(BatchPolicy(max_batch_tokens=4096))
    recorder = Recorder(engine)
    policy = BatchPolicy(batch_wait_timeout_s=0.5, max_concurrent_batches=1, pass_padding_tokens=8)
    batcher = Batcher(recorder, policy)
    rows = _sized_rows(loaded_scenarios, [6, 6, 6])

    async def scenario() -> list:
        first = asyncio.ensure_future(batcher.submit(rows[0]))
        await asyncio.sleep(0.05)  # inside the wait: the slot has not run row 0 alone
        rest = [asyncio.ensure_future(batcher.submit(r)) for r in rows[1:]]
        return await asyncio.gather(first, *rest)

    results = asyncio.run(scenario())
    batcher.close()
    assert recorder.sizes == [3]
    _same_as_alone(engine, rows, results)
