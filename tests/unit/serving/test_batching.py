"""What a pass worker runs on a batch (run_items), on real ONNX graphs (no Ray, no event loop)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from model_repository import NumpyHead
from serving.batching import BatchItem, BatchPolicy, run_items
from serving.engine import OnnxEngine, Row
from serving.metrics import ServingMetrics

# Different lengths, so that the engine's sort by length has to be undone to keep the order.
TEXTS = [
    "The film was great today.",
    "ok",
    "My order was awful again and the team was horrible as usual, I think.",
    "The flight was listed by noon.",
    "the app was brilliant",
    "His plan was dreadful overall.",
]


def _engine(max_batch_tokens: int) -> OnnxEngine:
    return OnnxEngine(BatchPolicy(max_batch_tokens=max_batch_tokens))


def _run(engine: OnnxEngine, rows: list[Row], metrics: ServingMetrics | None = None) -> list:
    items = [BatchItem(row, time.perf_counter()) for row in rows]
    return run_items(items, engine.run, metrics)


def _sample_count(metrics: ServingMetrics, name: str, **labels: str) -> float:
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == f"{name}_count" and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def _mixed_rows(loaded: dict) -> list[Row]:
    names = list(loaded)
    return [Row(loaded[names[i % len(names)]], text) for i, text in enumerate(TEXTS * 2)]


def test_one_result_per_row_in_order_equal_to_running_each_row_alone(loaded_scenarios: dict) -> None:
    engine = _engine(4096)
    rows = _mixed_rows(loaded_scenarios)
    results = _run(engine, rows)
    assert len(results) == len(rows)
    for row, result in zip(rows, results, strict=True):
        alone = engine.classify([row])[0]
        assert len(result.probs) == len(row.scenario.labels)
        np.testing.assert_allclose(result.probs, alone.probs, atol=1e-5)
        assert result.truncated == alone.truncated
    assert [r.truncated for r in results[:3]] == [False, False, True]  # 16 tokens at most


def test_rows_of_frozen_scenarios_share_one_base_pass_and_full_rows_run_their_graph(
    loaded_scenarios: dict,
) -> None:
    engine = _engine(4096)
    rows = _mixed_rows(loaded_scenarios)
    passes = engine.run(rows).passes
    per_group = {p.group: p.rows for p in passes}
    assert len(passes) == 2, passes
    assert per_group == {"graph": 4, "base": 8}  # full_three: 4 rows; frozen_three + frozen_two: 8
    # The batch handler records what it learns: rows per batch, each row's wait, each pass.
    metrics = ServingMetrics()
    _run(engine, rows, metrics)
    assert _sample_count(metrics, "labelwise_batch_rows") == 1
    assert _sample_count(metrics, "labelwise_queue_wait_seconds") == len(rows)
    assert _sample_count(metrics, "labelwise_forward_scenarios", group="base") == 1


def test_a_token_budget_splits_a_group_into_micro_batches(loaded_scenarios: dict) -> None:
    engine = _engine(32)
    rows = [Row(loaded_scenarios["frozen_three"], text) for text in TEXTS]
    results = _run(engine, rows)
    passes = engine.run(rows).passes
    assert sum(p.rows for p in passes) == len(rows) and len(passes) > 1
    assert all(p.tokens <= 32 for p in passes)
    reference = _engine(4096).classify(rows)
    for got, want in zip(results, reference, strict=True):
        np.testing.assert_allclose(got.probs, want.probs, atol=1e-5)


def test_a_broken_scenario_fails_its_own_rows_only(loaded_scenarios: dict) -> None:
    good = loaded_scenarios["frozen_two"]
    # A head fitted on a 33-wide encoder: it cannot read this base's 32 features.
    broken = dataclasses.replace(
        good,
        name="frozen_broken",
        head=NumpyHead("linear", {"weight": np.zeros((2, 33)), "bias": np.zeros(2)}),
    )
    engine = _engine(4096)
    rows = [
        Row(loaded_scenarios["full_three"], TEXTS[0]),
        Row(broken, TEXTS[1]),
        Row(good, TEXTS[2]),
        Row(broken, TEXTS[3]),
        Row(loaded_scenarios["frozen_three"], TEXTS[4]),
    ]
    results = _run(engine, rows)
    assert [type(r).__name__ for r in results] == [
        "RowResult",
        "ValueError",
        "RowResult",
        "ValueError",
        "RowResult",
    ]
    for i in (0, 2, 4):
        np.testing.assert_allclose(results[i].probs, engine.classify([rows[i]])[0].probs, atol=1e-5)


def test_micro_batches_sort_by_length_and_keep_each_pass_under_the_token_budget() -> None:
    lengths = [9, 2, 5, 30, 3, 5]
    chunks = BatchPolicy(max_batch_tokens=12).micro_batches(lengths)
    assert sorted(i for c in chunks for i in c) == list(range(len(lengths)))  # every row, once
    flat = [lengths[i] for c in chunks for i in c]
    assert flat == sorted(lengths)
    for chunk in chunks:  # a row over the budget alone gets a pass of its own
        assert len(chunk) * max(lengths[i] for i in chunk) <= 12 or len(chunk) == 1
    assert [lengths[i] for i in chunks[-1]] == [30]


def test_rows_whose_scores_are_not_finite_fail_with_their_scenario_named(loaded_scenarios: dict) -> None:
    """A NaN score would reach the answer as null (orjson writes NaN so): the engine fails those rows."""
    from serving.errors import ScoresNotFiniteError

    good = loaded_scenarios["frozen_two"]
    broken = dataclasses.replace(
        good,
        name="frozen_nan",
        head=NumpyHead("linear", {"weight": np.zeros((2, 32)), "bias": np.array([np.nan, 0.0])}),
    )
    results = _run(_engine(4096), [Row(broken, TEXTS[0]), Row(good, TEXTS[1]), Row(broken, TEXTS[2])])
    names = [type(r).__name__ for r in results]
    assert names == ["ScoresNotFiniteError", "RowResult", "ScoresNotFiniteError"]
    assert isinstance(results[0], ScoresNotFiniteError) and results[0].status_code == 500
    assert "'frozen_nan'" in str(results[0]) and "nan" in str(results[0])
    assert np.isfinite(results[1].probs).all()
