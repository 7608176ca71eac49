"""The results job's staleness and report: run-level settings and test rows make a record stale, the matrix
shows every scenario that ran, the SST-2 table one budget, and what is left to run counts stale records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import write_toy_csv

pytest.importorskip("sklearn", reason="the training extra is not installed")

SENTIMENT = ("negative", "neutral", "positive")


def _record(cell: Any, **extra: Any) -> dict[str, Any]:
    """A finished cell's record, every field the report's tables and plots read."""
    from labelwise import results
    from training import load_scenario

    labels = list(load_scenario(cell.scenario).labels)
    return {
        "cell": asdict(cell),
        "key": cell.key,
        "params": results.cell_params(cell),
        "split_version": results.split_version(),
        "max_eval_samples": results.eval_rows(cell.scenario),
        "train_rows": cell.rows or 1000,
        "validation_rows": 500,
        "test_rows": 100,
        "labels": labels,
        "majority_test_accuracy": 0.5,
        "test": {
            "accuracy": 0.8,
            "macro_f1": 0.7,
            "per_class_f1": dict.fromkeys(labels, 0.7),
            "support": dict.fromkeys(labels, 1),
        },
        "validation": {"accuracy": 0.8, "macro_f1": 0.75},
        "epochs_run": 3.0,
        "best_epoch": 2.0,
        "train_time_s": 10.0,
        "cell_wall_s": 12.0,
        "trainable_params": 1000,
        "total_params": 10000,
        "artifact_bytes": 4000,
        "machine": "x86_64 with 2 CPU cores, no GPU",
    } | extra


# ---- run-level settings and test rows: a record that no longer runs as its cell runs is stale ----------


@pytest.fixture(scope="module")
def frozen_cell(
    tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimpleNamespace]:
    """A frozen matrix cell of `sentiment` run by the results job on toy data and the tiny encoder."""
    from labelwise import results

    root = tmp_path_factory.mktemp("frozen-cell")
    train_file = write_toy_csv(root / "data" / "sentiment" / "train.csv", 30, seed=1, labels=SENTIMENT)
    write_toy_csv(root / "data" / "sentiment" / "validation.csv", 8, seed=2, labels=SENTIMENT)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LABELWISE_DATA_DIR", str(root / "data"))
        cell = results.Cell("matrix", "sentiment", "frozen", 40)
        record = results.run_cell(cell, root / "out", None, None, str(tiny_roberta_dir))
        yield SimpleNamespace(cell=cell, record=record, train_file=train_file, tiny=str(tiny_roberta_dir))


def _stale_row(tmp_path: Path, record: dict[str, Any]) -> str:
    """The report's "Set aside" row of a record moved to stale/."""
    from labelwise import results

    folder = tmp_path / "out" / "stale" / record["key"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps(record))
    report = results.Report()
    results._stale_section(report, tmp_path / "out", tmp_path / "no-ledger")
    (row,) = [line for line in report.lines if line.startswith(f"| {record['key']} |")]
    return row


def test_a_cell_records_its_run_level_settings_and_another_patience_makes_it_stale(
    frozen_cell: SimpleNamespace, tmp_path: Path
) -> None:
    """Every frozen cell's early stopping patience is the run's default (the scenarios set none for
    frozen): it was neither recorded nor compared."""
    from labelwise import results

    record = frozen_cell.record
    assert record["run_settings"]["early_stopping_patience"] == 2  # resolved: the run's default
    assert record["run_settings"]["adversarial"] == "none"
    assert results.is_current(record, frozen_cell.tiny)
    patient = dict(record, run_settings={**record["run_settings"], "early_stopping_patience": 5})
    assert not results.is_current(patient, frozen_cell.tiny)
    assert _stale_row(tmp_path, patient).endswith("| run.early_stopping_patience 5 → 2 |")


def test_a_cell_whose_train_file_changed_since_is_stale(frozen_cell: SimpleNamespace, tmp_path: Path) -> None:
    """Rows appended to the train file: the test split carved today holds other rows than the cell was
    scored on, some of them rows it trained on."""
    from labelwise import results

    record = frozen_cell.record
    assert results.is_current(record, frozen_cell.tiny)
    original = frozen_cell.train_file.read_bytes()
    try:
        with open(frozen_cell.train_file, "a", encoding="utf-8") as fh:
            fh.writelines(f"A fresh review number {i} was great today.,positive\n" for i in range(6))
        assert not results.is_current(record, frozen_cell.tiny)
        assert f"| test rows {record['test_sha256'][:8]} → " in _stale_row(tmp_path, record)
    finally:
        frozen_cell.train_file.write_bytes(original)
    assert results.is_current(record, frozen_cell.tiny)


def test_an_adversarial_cell_recorded_at_another_epsilon_is_stale() -> None:
    """Records written before run_settings name only their epsilon: the FGM section's header would say
    epsilon 0.25 above figures trained at 1.0."""
    from labelwise import results

    cell = results.Cell("fgm", "sentiment", "lora", 1000, seed=1, adversarial="fgm")
    assert results.is_current(_record(cell, adversarial_epsilon=results.FGM_EPSILON))
    assert not results.is_current(_record(cell, adversarial_epsilon=1.0))
    assert not results.is_current(_record(cell, run_settings=results.cell_settings(cell)["run_settings"]
                                          | {"adversarial_epsilon": 1.0}))  # fmt: skip
    # a run-level setting added since, at its default, changes nothing
    now = results.cell_settings(cell)["run_settings"]
    older = {k: v for k, v in now.items() if k != "pgd_steps"}
    assert results.is_current(_record(cell, run_settings=older))


# ---- the report ----------------------------------------------------------------------------------


def test_the_matrix_reports_every_scenario_a_matrix_cell_ran_on(tmp_path: Path) -> None:
    """`labelwise results --scenarios sst2` trains matrix cells the report left out (table and plot)."""
    from labelwise import results

    cell = results.Cell("matrix", "sst2", "frozen", 40, export=True)
    done = {cell.key: _record(cell, test_rows=8)}
    report = results.Report()
    results._matrix_section(report, done, tmp_path / "img")
    text = "\n".join(report.lines)
    assert "| sst2 (8, 0.500) | frozen | 0.800 | 0.700 |" in text
    assert "## 7 scenarios × three strategies" in text and "| emotion | full | not run yet" in text
    assert (tmp_path / "img" / "results-matrix-40.png").stat().st_size > 0
    # the plot's bars are drawn for the same scenarios as the table's rows
    assert results.matrix_scenarios(done) == (*results.SCENARIOS, "sst2")


def test_the_sst2_table_shows_one_budget_the_largest(tmp_path: Path) -> None:
    """Runs at 30 then 60 rows: the table said 30 rows and took frozen from the 30-row cell and full from
    the 60-row one."""
    from labelwise import results

    done = {}
    for strategy, rows, accuracy in (("frozen", 30, 0.61), ("frozen", 60, 0.72), ("full", 60, 0.83)):
        cell = results.Cell("sst2", "sst2", strategy, rows)
        done[cell.key] = _record(cell, test={"accuracy": accuracy, "macro_f1": accuracy})
    report = results.Report()
    results._sst2_section(report, done)
    text = "\n".join(report.lines)
    assert (
        "60 train rows, scored on SST-2's own held-out test split (cells at other budgets, not shown: 30"
        in text
    )
    assert "| frozen | 0.7200 |" in text and "| full | 0.8300 |" in text and "0.6100" not in text


@pytest.mark.parametrize("stale", [False, True])
def test_report_only_counts_stale_records_as_not_run(tmp_path: Path, stale: bool) -> None:
    """docs/results.md said "Every cell of the default job has run" when most records were stale (scored
    on the test split carved row by row, split version 1)."""
    from labelwise import results
    from labelwise.cli import app

    docs = tmp_path / "docs" / "results.md"
    ledger = results.ledger_dir(docs)
    ledger.mkdir(parents=True)
    cells = results.plan(results.DEFAULT_STAGES, results.SCENARIOS, (1000, 4000))
    for cell in cells:
        record = _record(cell, **({"split_version": 1} if stale and cell.stage == "matrix" else {}))
        (ledger / f"{cell.key}.json").write_text(json.dumps(record))
    stale_count = sum(c.stage == "matrix" for c in cells) if stale else 0
    out = CliRunner().invoke(
        app, ["results", "--report-only", "--out", str(tmp_path / "out"), "--docs", str(docs)]
    )
    assert out.exit_code == 0, out.output
    remaining = docs.read_text().splitlines()[4]
    if not stale:
        assert remaining == "Every cell of the default job (`make results`) has run."
        return
    assert remaining.startswith("**Not yet run**: ") and "Every cell" not in docs.read_text()
    assert (
        f" {stale_count} of the {len(cells)} records below no longer run as their cell runs today"
        in remaining
    )


def test_results_without_out_write_under_the_runs_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--out` defaults to results/ under LABELWISE_RUNS_DIR, as every run folder (it was runs/results in
    the working directory whatever the variable said)."""
    from labelwise.cli import app

    monkeypatch.setenv("LABELWISE_RUNS_DIR", str(tmp_path / "runs-here"))
    monkeypatch.chdir(tmp_path)
    docs = tmp_path / "docs" / "results.md"
    args = [
        "results",
        "--stages",
        "matrix",
        "--scenarios",
        "spam",
        "--budgets",
        "100",
        "--time-budget-s",
        "0",
    ]
    out = CliRunner().invoke(app, [*args, "--docs", str(docs)])  # the budget spent before the first cell
    assert out.exit_code == 0, out.output
    assert (tmp_path / "runs-here" / "results").is_dir()
    assert not (tmp_path / "runs").exists()
