"""Bad input to `labelwise results` and `labelwise compare` is one `error:` line and exit 2, not a
traceback: budgets that are not positive integers, a strategy list with no strategy in it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelwise.cli import app


def _one_error_line(result, *fragments: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in line


@pytest.mark.parametrize("budgets", ["1k", "0", "1000,-5", ",", "²"])  # "²".isdigit(), int() refuses it
def test_results_refuses_budgets_that_are_not_positive_integers(tmp_path: Path, budgets: str) -> None:
    # --time-budget-s 0: were the budgets taken, no cell would start
    args = ["results", "--budgets", budgets, "--time-budget-s", "0"]
    out = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out"), "--docs", str(tmp_path / "r.md")])
    _one_error_line(out, f"--budgets {budgets!r}", "positive integers")
    assert not (tmp_path / "r.md").exists()


def test_results_and_compare_refuse_a_strategy_list_without_a_strategy(tmp_path: Path) -> None:
    out = CliRunner().invoke(
        app,
        ["results", "--strategies", ",", "--time-budget-s", "0", "--out", str(tmp_path), "--docs",
         str(tmp_path / "r.md")],
    )  # fmt: skip
    _one_error_line(out, "--strategies ','", "full")
    out = CliRunner().invoke(app, ["compare", "--scenario", "spam", "--strategies", ",", "-o", str(tmp_path)])
    _one_error_line(out, "--strategies ','", "full, frozen, lora")


def test_compare_strategies_names_the_missing_strategies() -> None:
    pytest.importorskip("torch", reason="the training extra is not installed")
    from training import ScenarioConfigError, compare_strategies

    with pytest.raises(ScenarioConfigError, match="no strategy to compare: name at least one of full"):
        compare_strategies("spam", strategies=())


@pytest.mark.parametrize("budget", ["nan", "-5"])
def test_results_refuses_a_time_budget_that_is_not_a_number(tmp_path: Path, budget: str) -> None:
    """`--time-budget-s nan` compared false with the time spent: the job ran every cell, no limit; a
    negative budget was taken as 0 and said "time budget -5 s spent"."""
    args = [
        "results",
        "--time-budget-s",
        budget,
        "--out",
        str(tmp_path / "out"),
        "--docs",
        str(tmp_path / "r.md"),
    ]
    _one_error_line(CliRunner().invoke(app, args), f"--time-budget-s {float(budget)}", "seconds")
    assert not (tmp_path / "out").exists()


def test_results_refuses_a_docs_or_out_that_a_file_is_in_the_way_of(tmp_path: Path) -> None:
    """--report-only with --docs under a file failed as `error: NotADirectoryError` (exit 1) once the report
    was made; with --out a file it read no cells and wrote an empty report. Each is refused by name first."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    docs, out = tmp_path / "docs" / "results.md", tmp_path / "out"
    cases = [
        (
            ["--out", str(out), "--docs", str(a_file / "results.md")],
            f"--docs {a_file / 'results.md'} is inside",
        ),
        (["--out", str(a_file), "--docs", str(docs)], f"--out {a_file} is a file, not a folder"),
        (["--out", str(a_file / "out"), "--docs", str(docs)], f"--out {a_file / 'out'} is inside {a_file}"),
        (["--out", str(out), "--docs", str(tmp_path)], f"--docs {tmp_path} is a folder"),
    ]
    for args, says in cases:
        _one_error_line(CliRunner().invoke(app, ["results", "--report-only", *args]), says)
        assert not docs.exists() and not out.exists() and a_file.read_text() == "x"
    # and before a cell runs: --time-budget-s 0 would start none and write the report
    run = ["results", "--time-budget-s", "0", "--out", str(out), "--docs", str(a_file / "results.md")]
    _one_error_line(CliRunner().invoke(app, run), "is inside")


@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [("--stages", "", "matrix, curve"), ("--stages", ",", "matrix, curve"), ("--scenarios", "", "sentiment")],
)
def test_results_refuses_stages_or_matrix_scenarios_naming_none(
    tmp_path: Path, flag: str, value: str, fragment: str
) -> None:
    """An empty --stages planned no cell and exited 0; an empty --scenarios left the matrix with none."""
    args = ["results", flag, value, "--time-budget-s", "0", "--out", str(tmp_path / "out")]
    out = CliRunner().invoke(app, [*args, "--docs", str(tmp_path / "r.md")])
    _one_error_line(out, f"{flag} {value!r}", fragment)
    assert not (tmp_path / "r.md").exists()
