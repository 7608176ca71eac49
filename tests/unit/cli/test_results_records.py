"""The results job's records and report, without training: the kept epoch, labels without test rows, the
split note, stale scenario settings, and which of two records of a cell (run folder, ledger) is kept."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the training extra is not installed")


# ---- 1. epochs (best): the checkpoint the run kept ------------------------------------------------


def test_the_best_epoch_is_the_checkpoint_the_trainer_kept_not_the_last_of_equal_f1s() -> None:
    from labelwise import results
    from training.metrics import selection_score, training_epochs

    # news_topic full at 4,000 rows: epoch 9 ties epoch 6's macro-F1 at a higher validation loss
    hist = [(6, 0.9913, 0.05), (7, 0.9858, 0.06), (8, 0.9858, 0.07), (9, 0.9913, 0.08)]
    log = [
        {"epoch": e, "eval_macro_f1": f, "eval_loss": loss, "eval_selection": selection_score(f, loss)}
        for e, f, loss in hist
    ]
    assert training_epochs(log) == (6.0, 9.0)
    assert results._epochs(log) == (9.0, 6.0)
    # equal F1 and a LOWER loss later: the later epoch was kept
    later = [dict(e, eval_selection=selection_score(e["eval_macro_f1"], 1.0 - e["epoch"] / 10)) for e in log]
    assert results._epochs(later) == (9.0, 9.0)
    assert results._epochs([]) == (None, None)


def test_an_old_record_of_equal_f1_epochs_reports_the_first_as_the_run_kept_it() -> None:
    from labelwise import results

    # the committed record of news_topic full at 4,000 rows (trained 2 December 2026: first best kept)
    history = [[1.0, 0.9692], [2.0, 0.9819], [3.0, 0.9821], [4.0, 0.9731], [5.0, 0.9908]]
    history += [[6.0, 0.9913], [7.0, 0.9858], [8.0, 0.9858], [9.0, 0.9913]]
    old = {"epochs_run": 9.0, "best_epoch": 9.0, "validation_history": history}
    assert results._epoch_text(old) == "9.0 (6.0)"
    # a fractional last epoch (the history rounds it): the recorded value where it is the kept one
    lora = {
        "epochs_run": 11.881188,
        "best_epoch": 11.881188,
        "validation_history": [[9.0, 0.8], [11.88, 0.9]],
    }
    assert results._epoch_text(lora) == "11.9 (11.9)"
    # a record that names the rule already holds the kept epoch
    new = dict(old, best_epoch=9.0, best_epoch_rule=results.BEST_EPOCH_RULE)
    assert results._epoch_text(new) == "9.0 (9.0)"
    # trained after equal F1s went to the lower loss (split version 2), without the losses: not known
    assert results._epoch_text(dict(old, split_version=2)) == "9.0"
    assert results._epoch_text(dict(old, split_version=2, validation_history=history[:6])) == "9.0 (6.0)"


# ---- 2. classes with F1 = 0: only labels with test rows -------------------------------------------

ATIS = ["flight", "airfare", "meal", "cheapest"]


def _atis(strategy: str, stage: str, f1: dict[str, float], support: dict[str, int] | None) -> dict:
    test: dict[str, Any] = {"accuracy": 0.9, "macro_f1": 0.5, "per_class_f1": f1}
    if support is not None:
        test["support"] = support
    cw = "off" if stage == "atis" else None
    return {
        "key": f"{stage}-intent_atis-{strategy}-n1000-s42" + ("-cw-off" if cw else ""),
        "cell": {"stage": stage, "scenario": "intent_atis", "strategy": strategy, "rows": 1000, "seed": 42}
        | {"class_weighting": cw},
        "labels": ATIS,
        "train_rows": 1000,
        "test_rows": 10,
        "split_version": 1,
        "test": test,
    }


def test_the_atis_table_and_plot_leave_out_labels_without_test_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labelwise import results, results_plots

    f1 = {"flight": 0.9, "airfare": 0.0, "meal": 0.0, "cheapest": 0.0}
    support = {"flight": 8, "airfare": 2, "meal": 0, "cheapest": 0}
    weighted = _atis("full", "matrix", f1, support)
    # a record written before per-class support was recorded: its split carved again (here: stubbed)
    plain = _atis("full", "atis", dict(f1, airfare=0.5), None)
    monkeypatch.setattr(results, "test_split_labels", lambda s, v: (10, ("flight", "airfare")), raising=False)
    drawn: dict[str, Any] = {}

    def capture(fig: Any, path: Path) -> Path:
        (ax,) = fig.axes
        drawn["ticks"] = [t.get_text() for t in ax.get_xticklabels()]
        drawn["heights"] = [p.get_height() for p in ax.patches]
        return path

    monkeypatch.setattr(results_plots, "_save", capture)
    done = {rec["key"]: rec for rec in (weighted, plain)}
    report = results.Report()
    results._atis_section(report, done, tmp_path)
    rows = [line for line in report.lines if line.startswith("| full |")]
    # weighted: airfare (2 test rows) is a real 0; meal and cheapest have no test rows
    assert rows == ["| full | on | 0.900 | 0.500 | 1 |", "| full | off | 0.900 | 0.500 | 0 |"]
    assert any("2 of the scenario's labels have none (cheapest, meal)" in line for line in report.lines)
    assert drawn["ticks"] == ["flight", "airfare"]  # no F1 = 0 bar for a label without test rows
    assert drawn["heights"] == [0.9, 0.0, 0.9, 0.5]

    # not known (no support, no data to carve the split again): every 0 counted, and said so
    monkeypatch.setattr(results, "test_split_labels", lambda s, v: None)
    report = results.Report()
    results._atis_section(report, done, tmp_path)
    assert "| full | off | 0.900 | 0.500 | 2 * |" in report.lines
    assert drawn["ticks"] == ["flight", "airfare", "meal", "cheapest"]
    assert np.isnan(drawn["heights"][2]) and drawn["heights"][6] == 0.0  # weighted: known absent, no bar


def test_test_scores_record_each_labels_test_rows_and_the_split_is_carved_as_the_record_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labelwise import results

    scored = results._scores([0, 0, 1], np.asarray([[2.0, 0, 0], [0, 2.0, 0], [0, 2.0, 0]]), ["a", "b", "c"])
    assert scored["support"] == {"a": 2, "b": 1, "c": 0}
    assert scored["macro_f1"] == pytest.approx(np.mean([2 / 3, 2 / 3]), abs=1e-4)  # c left out

    # sentiment with one 'neutral' row: no test split (row by row or by text) can hold it
    data = tmp_path / "data"
    rows = [(f"good {i}", "positive") for i in range(20)] + [(f"bad {i}", "negative") for i in range(20)]
    rows += [("so so", "neutral")]
    (data / "sentiment").mkdir(parents=True)
    with open(data / "sentiment" / "train.csv", "w", encoding="utf-8") as fh:
        fh.write("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows))
    monkeypatch.setenv("LABELWISE_DATA_DIR", str(data))
    results.test_split_labels.cache_clear()
    try:
        for version in (1, 2):
            n, labels = results.test_split_labels("sentiment", version)
            assert n == 4 and labels == ("negative", "positive")
        rec = {"cell": {"scenario": "sentiment"}, "test_rows": 4, "split_version": 2, "test": {}}
        assert results.test_labels_present(rec) == {"negative", "positive"}
        assert results.test_labels_present(dict(rec, test_rows=5)) is None  # not the split it was scored on
    finally:
        results.test_split_labels.cache_clear()


# ---- 3. the split note counts the cells that score the test split --------------------------------


def test_the_split_note_does_not_count_search_cells() -> None:
    from labelwise import results

    def rec(stage: str, version: int | None) -> dict:
        r: dict[str, Any] = {"cell": {"stage": stage}, "test": None if stage == "search" else {"accuracy": 1}}
        if version is not None:
            r["split_version"] = version
        return r

    now = results.split_version()
    done = {
        "m1": rec("matrix", now),
        "m2": rec("matrix", now),
        "s1": rec("search", None),
        "s2": rec("search", 1),
    }
    assert results._split_note(done) == "every cell below was scored on it."
    done["m3"] = rec("matrix", None)
    assert results._split_note(done).startswith("1 of the 3 test-scored cells below were trained")
    del done["m1"], done["m2"]
    assert results._split_note(done).startswith("all 1 test-scored cells below")


# ---- 4. stale: scenario-level settings and the base model ----------------------------------------


def _record(cell: Any, **extra: Any) -> dict[str, Any]:
    from labelwise import results

    return {
        "cell": asdict(cell),
        "key": cell.key,
        "params": results.cell_params(cell),
        "split_version": results.split_version(),
        "max_eval_samples": results.eval_rows(cell.scenario),
        "test": {"accuracy": 0.9, "macro_f1": 0.9, "per_class_f1": {}},
        "validation": {"macro_f1": 0.9},
        "train_time_s": 1.0,
    } | extra


def _today(cell: Any) -> dict[str, Any]:
    from labelwise import results
    from training import make_train_config

    config = make_train_config(cell.scenario, cell.strategy, base_model=results.BASE_MODEL, output_dir="x")
    dump = config.scenario.model_dump(exclude={"strategies", "search_space", "description"})
    return json.loads(json.dumps(dump))


def test_a_cell_run_under_other_scenario_settings_or_base_model_is_set_aside(tmp_path: Path) -> None:
    from labelwise import results

    cell = results.Cell("matrix", "spam", "full", 1000, export=True)
    today = _today(cell)
    current = _record(cell, scenario_settings=today, base_model=results.BASE_MODEL)
    older = _record(cell)  # written before scenario settings were recorded: the other checks only
    for rec in (current, older):
        assert results.set_aside_stale(tmp_path, {cell.key: rec}, print) == []
    cases = {
        "max_length_tokens": dict(today, max_length_tokens=64),
        "class_weighting": dict(today, class_weighting="off"),
        "test_fraction": dict(today, test_fraction=0.2),
        "cleaning": dict(
            today, cleaning=dict(today["cleaning"], lowercase=not today["cleaning"]["lowercase"])
        ),
    }
    for name, settings in cases.items():
        done = {cell.key: dict(current, scenario_settings=settings)}
        assert results.set_aside_stale(tmp_path / name, done, print) == [cell.key], name
    other_base = {cell.key: dict(current, base_model="distilroberta")}
    assert results.set_aside_stale(tmp_path / "base", other_base, print) == [cell.key]
    # the report's "Set aside" table names the setting that changed
    aside = tmp_path / "aside" / "stale" / cell.key
    aside.mkdir(parents=True)
    (aside / "result.json").write_text(
        json.dumps(dict(current, scenario_settings=cases["max_length_tokens"]))
    )
    report = results.Report()
    results._stale_section(report, tmp_path / "aside", tmp_path / "no-ledger")
    (row,) = [line for line in report.lines if line.startswith(f"| {cell.key} |")]
    assert "scenario.max_length_tokens 64 → 128" in row and "test_fraction" not in row


# ---- 5. run folder vs ledger: the fresher record wins, only the stale one is set aside --------------


def _both(tmp_path: Path, local: dict, ledgered: dict) -> tuple[Path, Path]:
    out, ledger = tmp_path / "out", tmp_path / "ledger"
    (out / "cells" / local["key"]).mkdir(parents=True)
    (out / "cells" / local["key"] / "result.json").write_text(json.dumps(local))
    ledger.mkdir()
    (ledger / f"{ledgered['key']}.json").write_text(json.dumps(ledgered))
    return out, ledger


def test_a_fresh_ledger_record_beats_a_stale_run_folder(tmp_path: Path) -> None:
    from labelwise import results

    cell = results.Cell("matrix", "spam", "full", 1000, export=True)
    old = _record(cell, split_version=1)
    fresh = _record(cell, test={**old["test"], "accuracy": 0.123})  # run on another machine
    out, ledger = _both(tmp_path, old, fresh)
    done = results.load_done(out, ledger)
    assert done[cell.key]["test"]["accuracy"] == 0.123
    assert results.set_aside_stale(out, done, print, ledger=ledger) == []
    assert json.loads((ledger / f"{cell.key}.json").read_text())["test"]["accuracy"] == 0.123
    assert not (ledger / "stale").exists()  # the fresh record is never set aside
    assert json.loads((out / "stale" / cell.key / "result.json").read_text()).get("split_version") == 1
    assert not (out / "cells" / cell.key).exists()


def test_a_fresh_run_folder_replaces_a_stale_ledger_record(tmp_path: Path) -> None:
    from labelwise import results

    cell = results.Cell("matrix", "spam", "full", 1000, export=True)
    old = _record(cell, split_version=1)
    fresh = _record(cell, test={**old["test"], "accuracy": 0.456})
    out, ledger = _both(tmp_path, fresh, old)
    done = results.load_done(out, ledger)
    assert results.set_aside_stale(out, done, print, ledger=ledger) == []
    assert json.loads((ledger / f"{cell.key}.json").read_text()) == fresh
    assert json.loads((ledger / "stale" / f"{cell.key}.json").read_text())["split_version"] == 1
    assert json.loads((out / "cells" / cell.key / "result.json").read_text()) == fresh


def test_of_two_current_records_the_later_one_is_kept_in_both_places(tmp_path: Path) -> None:
    from labelwise import results

    cell = results.Cell("matrix", "spam", "full", 1000, export=True)
    earlier = _record(cell, finished_at="2026-12-05T12:00:00+00:00")
    later = _record(cell, finished_at="2026-12-05T13:00:00+00:00", test={**earlier["test"], "accuracy": 0.7})
    out, ledger = _both(tmp_path, earlier, later)
    assert results.load_done(out, ledger)[cell.key] == later
    assert json.loads((out / "cells" / cell.key / "result.json").read_text()) == later
    assert not (out / "stale").exists() and not (ledger / "stale").exists()
    # a record without finished_at is timed by its publication
    published = _record(
        cell, version_created_at="2026-12-06T09:00:00.5Z", test={**earlier["test"], "accuracy": 0.8}
    )
    out, ledger = _both(tmp_path / "b", later, published)
    assert results.load_done(out, ledger)[cell.key] == published
    assert json.loads((ledger / f"{cell.key}.json").read_text()) == published
