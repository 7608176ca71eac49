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


def test_a_test_split_that_no_held_out_text_fits_is_refused_naming_test_max_rows(tmp_path: Path) -> None:
    """Every text held out twice and test_max_rows 1: the split kept no row, and a scenario asking for a
    test split trained without one, saying nothing. Refused with the cap that fits the fewest copies."""
    rows = [(f"message number {i} about {LABELS[i % 3]}", LABELS[i % 3]) for i in range(60)] * 2
    folder = write_rows(tmp_path / "dup" / "train.csv", rows).parent
    with pytest.raises(DataError, match=r"test_max_rows 1 holds no test row: .* raise test_max_rows to 2 or"):
        prepare_data(_config(folder, tmp_path, test_fraction=0.2, test_max_rows=1))
    with pytest.raises(DataError, match="set test_fraction: 0 to train without a test split"):
        load_test_split(_config(folder, tmp_path, test_fraction=0.2, test_max_rows=1))
    raised = prepare_data(_config(folder, tmp_path, test_fraction=0.2, test_max_rows=2))
    assert raised.test is not None and len(raised.test) == 2  # the cap the refusal names holds a text


def test_a_test_split_of_classes_with_one_distinct_text_each_is_refused(tmp_path: Path) -> None:
    rows = [(f"the one text about {label}", label) for label in LABELS] * 10
    folder = write_rows(tmp_path / "dup" / "train.csv", rows).parent
    with pytest.raises(DataError, match=r"no test split can be held out of .*no class has 2 distinct texts"):
        prepare_data(_config(folder, tmp_path, test_fraction=0.2))


def test_a_cap_below_each_classs_held_out_text_holds_another_held_out_text_that_fits(tmp_path: Path) -> None:
    """The one text a class held out (5 copies each, test_max_rows 3) does not fit, another held-out text
    of a single row does: the test split is that row, not empty."""
    rows = [(f"text {i} about positive", "positive") for i in range(10)]
    rows.append(("text 0 about negative", "negative"))
    rows += [("text 7 about positive", "positive"), ("text 0 about negative", "negative")] * 4
    rows.append(("text 1 about negative", "negative"))
    folder = write_rows(tmp_path / "dup" / "train.csv", rows).parent
    prepared = prepare_data(_config(folder, tmp_path, test_fraction=0.3, test_max_rows=3))
    assert prepared.test is not None and len(prepared.test) == 1
    assert not set(prepared.test.texts) & set(prepared.train.texts)
