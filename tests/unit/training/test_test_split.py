"""The scenario's own test split: fixed rows, stratified, never in train or validation, whatever the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_rows, write_toy_csv
from training import custom_scenario, load_scenario, make_train_config, prepare_data
from training.data import load_test_split
from training.errors import DataError

LABELS = ["positive", "negative", "neutral"]


def _config(data: Path, tmp_path: Path, **overrides):  # type: ignore[no-untyped-def]
    settings = {k: overrides.pop(k) for k in ("test_fraction", "test_max_rows") if k in overrides}
    scenario = custom_scenario("split", LABELS, data, **settings)
    return make_train_config(scenario, "full", output_dir=tmp_path / "run", **overrides)


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    write_toy_csv(tmp_path / "data" / "train.csv", 40, seed=3, labels=tuple(LABELS))
    return tmp_path / "data"


def test_test_rows_are_the_same_for_every_run_and_never_trained_on(data: Path, tmp_path: Path) -> None:
    first = prepare_data(_config(data, tmp_path, test_fraction=0.2, seed=1))
    other = prepare_data(_config(data, tmp_path, test_fraction=0.2, seed=7, max_train_samples=30))
    assert first.test is not None and other.test is not None
    assert first.test.raw == other.test.raw  # the run's seed and budget do not move the test rows
    assert len(first.test) == 24  # 20% of 120, 8 per class
    assert sorted(first.test.label_ids) == sorted([0, 1, 2] * 8)
    test_texts = set(first.test.raw or [])
    for prepared in (first, other):
        assert not test_texts & set(prepared.train.raw or [])
        assert not test_texts & set(prepared.validation.raw or [])  # validation split from what is left
    assert len(first.train) + len(first.validation) + len(first.test) == 120
    assert load_test_split(_config(data, tmp_path, test_fraction=0.2)).raw == first.test.raw


def test_the_test_split_is_capped_and_off_by_default_for_custom_scenarios(data: Path, tmp_path: Path) -> None:
    capped = prepare_data(_config(data, tmp_path, test_fraction=0.3, test_max_rows=12))
    assert capped.test is not None and len(capped.test) == 12
    plain = prepare_data(_config(data, tmp_path))
    assert plain.test is None and len(plain.train) + len(plain.validation) == 120
    with pytest.raises(DataError, match="no test split"):
        load_test_split(_config(data, tmp_path))


def test_packaged_scenarios_hold_out_a_tenth_of_train_up_to_2000_rows() -> None:
    for name in ("sentiment", "emotion", "intent", "intent_atis", "news_topic", "spam", "sst2"):
        scenario = load_scenario(name)
        assert (scenario.test_fraction, scenario.test_max_rows) == (0.1, 2000)


def test_copies_of_a_text_stay_on_one_side_of_every_held_out_split(tmp_path: Path) -> None:
    """A file that repeats texts (the SMS spam file does): split row by row, copies of a kept row landed
    among the test and validation rows; by distinct text, none does."""
    rows = [(f"message number {i % 30} about {LABELS[i % 3]}", LABELS[i % 3]) for i in range(150)]
    folder = write_rows(tmp_path / "dup" / "train.csv", rows).parent
    for seed in (1, 2, 3):
        prepared = prepare_data(_config(folder, tmp_path, test_fraction=0.2, seed=seed))
        assert prepared.test is not None
        train, validation, test = (set(p.texts) for p in (prepared.train, prepared.validation, prepared.test))
        assert not test & train and not test & validation and not validation & train, seed
        assert len(prepared.train) + len(prepared.validation) + len(prepared.test) == 150
        assert len(test) == 6 and len(prepared.test) == 30  # 20% of the 30 texts, with all their copies
        assert sorted(set(prepared.test.label_ids)) == [0, 1, 2]  # stratified by the texts' classes


@pytest.mark.parametrize("copies", [(2,), (1, 3), (1, 1, 1, 4)])
def test_test_max_rows_caps_rows_not_distinct_texts(tmp_path: Path, copies: tuple[int, ...]) -> None:
    """A text's copies all go to one side, and each copy is a row: capped by distinct text, SST-2's
    2,000-row test split held 2,010 rows. Rows of texts repeated (copies[i % len] times) to overshoot."""
    rows = []
    for i in range(120):
        label = LABELS[i % 3]
        rows += [(f"message number {i} about {label}", label)] * copies[i % len(copies)]
    folder = write_rows(tmp_path / "dup" / "train.csv", rows).parent
    for cap in (2, 12, 13):
        prepared = prepare_data(_config(folder, tmp_path, test_fraction=0.3, test_max_rows=cap))
        assert prepared.test is not None
        assert 0 < len(prepared.test) <= cap, (cap, len(prepared.test))
        if cap >= 12:  # a few rows short at most (a text's copies are held out whole), every class kept
            assert len(prepared.test) >= cap - max(copies), (cap, len(prepared.test))
            assert sorted(set(prepared.test.label_ids)) == [0, 1, 2]
        test = set(prepared.test.texts)
        assert not test & set(prepared.train.texts) and not test & set(prepared.validation.texts)
        assert len(prepared.train) + len(prepared.validation) + len(prepared.test) == len(rows)
