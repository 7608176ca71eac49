"""Review mends of `labelwise results`, `labelwise compare` and `labelwise evaluate`: a cell whose twin runs
earlier in the same job trains once; the SST-2 and ATIS tables find the matrix's twins; a collapsed strategy
does not cost the comparison; records and reports are written whole and a cut record is named; the report
says how the test split prompted the defaults' revisions; evaluate's unknown-label message and lora_mode.

The expensive step (run_cell, train, publish_run) is stubbed where the control flow under test is elsewhere.
"""

from __future__ import annotations

import builtins
import csv
import io
import json
import logging
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from labelwise import results
from labelwise.cli import app
from model_repository.errors import LabelwiseError
from tests.conftest import write_toy_csv

pytest.importorskip("matplotlib", reason="the training extra is not installed")

CLEAN_ENV: dict[str, str | None] = {"LABELWISE_REPOSITORY": None, "COLUMNS": "200"}


def _record(cell: results.Cell, labels: tuple[str, ...] = ("a", "b"), **extra: Any) -> dict[str, Any]:
    """A finished cell's record, as far as the job's loop and the report's tables read it."""
    return {
        "cell": asdict(cell),
        "key": cell.key,
        "params": None,  # is_current: judged on the fields it has
        "train_rows": cell.rows or 1000,
        "validation_rows": 500,
        "test_rows": 100,
        "labels": list(labels),
        "majority_test_accuracy": 0.5,
        "test": {
            "accuracy": 0.8,
            "macro_f1": 0.7,
            "per_class_f1": dict.fromkeys(labels, 0.7),
            "support": dict.fromkeys(labels, 50),
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
        **extra,
    }


# ---- 1. a twin queued earlier in the same job ------------------------------------------------------


def test_a_cell_whose_matrix_twin_runs_earlier_in_the_same_job_trains_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained: list[str] = []

    def run_cell(cell: results.Cell, *_args: Any, **_kwargs: Any) -> dict[str, Any]:
        trained.append(cell.key)
        return _record(cell)

    monkeypatch.setattr(results, "run_cell", run_cell)
    said: list[str] = []
    done = results.run(tmp_path / "out", ("matrix", "fgm"), ("sentiment",), (1000,), None, said.append)

    # the matrix's sentiment LoRA cell at 1,000 rows is FGM's plain seed 42: trained once, by the matrix
    assert "matrix-sentiment-lora-n1000-s42" in trained
    assert "fgm-sentiment-lora-n1000-s42" not in trained
    assert len(trained) == len(set(trained)) == 8  # 3 matrix cells + FGM's 6 less the twin
    # nothing was done before the job: the twin is not "already done"
    assert (
        said[0] == "results: 9 cells planned, 0 already done, 8 to run (1 the same run as a cell before it)"
    )
    assert results._reuse(results.Cell("fgm", "sentiment", "lora", 1000), done)["key"] == (
        "matrix-sentiment-lora-n1000-s42"
    )


def test_what_is_left_counts_a_twin_queued_before_it_once() -> None:
    cells = results.plan(("matrix", "fgm"), ("sentiment",), (1000,))
    assert [c.key for c in results.to_run(cells, {})] == [
        c.key for c in cells if c.key != "fgm-sentiment-lora-n1000-s42"
    ]


# ---- 2. the SST-2 table when the matrix covered sst2 -----------------------------------------------


def test_the_sst2_table_reads_the_matrix_cells_that_stood_in_for_its_own() -> None:
    cells = results.plan(("matrix", "sst2"), ("sst2",), (1000,))
    done = {c.key: _record(c) for c in cells if c.stage == "matrix"}
    assert all(results._reuse(c, done) for c in cells if c.stage == "sst2")  # none trains: the matrix's serve

    report = results.Report()
    results._sst2_section(report, done)
    rows = [line for line in report.lines if line.startswith("| ") and "---" not in line]
    assert rows[1:] == [
        "| full | 0.8000 | 10 | 1,000 | 4.0 kB |",
        "| lora | 0.8000 | 10 | 1,000 | 4.0 kB |",
        "| frozen | 0.8000 | 10 | 1,000 | 4.0 kB |",
    ]
    assert any("1,000 train rows" in line for line in report.lines)


def test_the_sst2_table_keeps_its_own_cells_and_its_largest_budget() -> None:
    own = results.Cell("sst2", "sst2", "full", 4000)
    matrix = results.Cell("matrix", "sst2", "lora", 1000, export=True)
    done = {own.key: _record(own, train_time_s=40.0), matrix.key: _record(matrix)}
    report = results.Report()
    results._sst2_section(report, done)
    rows = [line for line in report.lines if line.startswith(("| full", "| lora", "| frozen"))]
    assert rows == ["| full | 0.8000 | 40 | 1,000 | 4.0 kB |"]  # 4,000 rows: the matrix's 1,000 not mixed in
    assert any("other budgets, not shown: 1,000 rows" in line for line in report.lines)


# ---- 4. ATIS without the matrix at 1,000 rows ------------------------------------------------------


def test_the_atis_stage_runs_its_weighted_cells_when_the_matrix_has_no_1000_rows(tmp_path: Path) -> None:
    cells = results.plan(("matrix", "atis"), ("intent_atis",), (2000, 4000))
    keys = [c.key for c in cells]
    assert "atis-intent_atis-full-n1000-s42" in keys and "atis-intent_atis-lora-n1000-s42" in keys
    done = {c.key: _record(c) for c in cells}
    report = results.Report()
    results._atis_section(report, done, tmp_path / "img")
    assert [line.split(" | ")[:2] for line in report.lines if line.startswith(("| full", "| lora"))] == [
        ["| full", "on"],
        ["| full", "off"],
        ["| lora", "on"],
        ["| lora", "off"],
    ]


def test_the_atis_stage_reuses_the_matrix_cells_at_1000_rows(tmp_path: Path) -> None:
    cells = results.plan(("matrix", "atis"), ("intent_atis",), (1000,))
    done = {c.key: _record(c) for c in cells if c.stage == "matrix" or c.class_weighting == "off"}
    weighted_atis = results.Cell("atis", "intent_atis", "full", 1000)
    assert results._reuse(weighted_atis, done)["key"] == "matrix-intent_atis-full-n1000-s42"  # not trained
    weighted = done["matrix-intent_atis-full-n1000-s42"]
    weighted["test"] = {**weighted["test"], "accuracy": 0.9}
    report = results.Report()
    results._atis_section(report, done, tmp_path / "img")
    assert "| full | on | 0.900 | 0.700 | 0 |" in report.lines


# ---- 3. a collapsed strategy in `labelwise compare` ------------------------------------------------


@pytest.fixture
def collapsing_lora(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """train / save_weights / publish_run stubbed: LoRA collapses, publish refuses it as publish_run does."""
    import training.evaluate as ev
    from training.errors import CollapsedRunError

    published: list[str] = []

    def train(config: Any) -> SimpleNamespace:
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        metrics = {"accuracy": 0.9, "macro_f1": 0.8, "collapsed": config.strategy == "lora"}
        return SimpleNamespace(
            config=config, metrics=metrics, train_time_s=1.0, trainable_params=10, total_params=100
        )

    def publish_run(result: Any, repository: Any, export_precisions: Any = None) -> SimpleNamespace:
        if result.metrics["collapsed"]:
            raise CollapsedRunError(f"refusing to publish spam/{result.config.strategy}: the run collapsed")
        published.append(result.config.strategy)
        return SimpleNamespace(version=len(published))

    monkeypatch.setattr(ev, "train", train)
    monkeypatch.setattr(ev, "save_weights", lambda result, path: 1000)
    monkeypatch.setattr(ev, "publish_run", publish_run)
    return published


def test_compare_writes_the_comparison_when_one_strategy_collapses_then_says_so(
    tmp_path: Path, collapsing_lora: list[str]
) -> None:
    from training.errors import CollapsedRunError
    from training.evaluate import compare_strategies

    out = tmp_path / "cmp"
    with pytest.raises(CollapsedRunError, match=r"spam: lora collapsed and was not published") as caught:
        compare_strategies("spam", output_dir=out, repository=object())
    assert "published: full v1, frozen v2" in str(caught.value)
    assert collapsing_lora == ["full", "frozen"]  # the strategies after it still trained and published
    assert {"comparison.md", "comparison.json", "comparison.png"} <= {p.name for p in out.iterdir()}
    rows = {r["strategy"]: r for r in json.loads((out / "comparison.json").read_text())}
    assert rows["lora"]["collapsed"] is True and rows["lora"]["version"] is None
    assert "refusing to publish spam/lora" in rows["lora"]["publish_refused"]
    assert rows["full"]["collapsed"] is False and rows["full"]["version"] == 1
    table = (out / "comparison.md").read_text()
    assert "| lora ✗ |" in table and "not published" in table
    assert [r.strategy for r in caught.value.rows] == ["full", "frozen", "lora"]  # type: ignore[attr-defined]


def test_compare_without_a_repository_marks_a_collapsed_run(
    tmp_path: Path, collapsing_lora: list[str]
) -> None:
    from training.evaluate import compare_strategies

    rows, out = compare_strategies("spam", output_dir=tmp_path / "cmp")
    assert [(r.strategy, r.collapsed) for r in rows] == [("full", False), ("frozen", False), ("lora", True)]
    table = (out / "comparison.md").read_text()
    assert "| lora ✗ |" in table and "✗ collapsed" in table and "not published" not in table
    assert json.loads((out / "comparison.json").read_text())[2]["collapsed"] is True


def test_the_compare_command_exits_1_with_one_line_after_writing_the_comparison(
    tmp_path: Path, collapsing_lora: list[str]
) -> None:
    out = tmp_path / "cmp"
    args = ["compare", "-s", "spam", "-r", str(tmp_path / "repo"), "-o", str(out)]
    result = CliRunner().invoke(app, args, env=CLEAN_ENV)
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: spam: lora collapsed and was not published") and str(out) in line
    assert (out / "comparison.md").is_file() and "Traceback" not in result.output


# ---- 5. whole writes, and a cut record named -------------------------------------------------------


def _cut_writes(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...]) -> None:
    """Every text write to a file whose name holds one of `names` stops half-way (a full disk, a kill)."""
    real_open = builtins.open

    def cutting_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = real_open(file, mode, *args, **kwargs)
        if "w" not in mode or not any(n in Path(str(file)).name for n in names):
            return fh
        write = fh.write

        def half(text: str) -> int:
            write(text[: len(text) // 2])
            fh.flush()
            raise OSError(28, "No space left on device")

        fh.write = half
        return fh

    monkeypatch.setattr(builtins, "open", cutting_open)
    monkeypatch.setattr(io, "open", cutting_open)


def test_a_record_write_cut_short_leaves_the_record_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cell = results.Cell("matrix", "spam", "full", 1000, export=True)
    ledger = tmp_path / "docs" / "results-cells"
    (tmp_path / "out" / "cells" / cell.key).mkdir(parents=True)
    before = _record(cell)
    results.save_record(tmp_path / "out", ledger, before)
    _cut_writes(monkeypatch, ("result.json", f"{cell.key}.json"))
    with pytest.raises(OSError):
        results.save_record(tmp_path / "out", ledger, _record(cell, train_time_s=99.0))
    monkeypatch.undo()
    for path in (tmp_path / "out" / "cells" / cell.key / "result.json", ledger / f"{cell.key}.json"):
        assert json.loads(path.read_text()) == before, path
    assert sorted(p.name for p in ledger.iterdir()) == [f"{cell.key}.json"]  # no temporary file left


def test_write_text_atomic_replaces_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.evaluate import write_text_atomic

    path = tmp_path / "metrics.json"
    write_text_atomic(path, '{"a": 1}')
    _cut_writes(monkeypatch, ("metrics.json",))
    with pytest.raises(OSError):
        write_text_atomic(path, '{"a": 2, "b": 3}')
    monkeypatch.undo()
    assert path.read_text() == '{"a": 1}' and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.parametrize("text", ["", '{"key": "matrix-spam-full-n1000-s42", "cell": {"sta', "[]"])
def test_a_cut_ledger_record_is_named_as_one_error(tmp_path: Path, text: str) -> None:
    ledger = tmp_path / "docs" / "results-cells"
    ledger.mkdir(parents=True)
    bad = ledger / "matrix-spam-full-n1000-s42.json"
    bad.write_text(text)
    with pytest.raises(LabelwiseError, match=r"matrix-spam-full-n1000-s42\.json") as caught:
        results.load_done(tmp_path / "out", ledger)
    assert "delete it" in str(caught.value)


def test_a_cut_run_folder_record_is_named_by_the_report_command(tmp_path: Path) -> None:
    bad = tmp_path / "out" / "cells" / "matrix-spam-full-n1000-s42" / "result.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"key": ')
    args = ["results", "--report-only", "--out", str(tmp_path / "out"), "--docs", str(tmp_path / "d.md")]
    result = CliRunner().invoke(app, args, env=CLEAN_ENV)
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cell record {bad} cannot be read") and "Traceback" not in result.output


# ---- 6. what the report says of the test split ------------------------------------------------------


def test_the_report_says_the_test_split_prompted_rounds_of_the_defaults(tmp_path: Path) -> None:
    variant = "lora-qkvd-r8-lr1e-3-pooler-1200steps"
    search = results.Cell("search", "intent", "lora", 1000, variant=variant)
    done = {search.key: _record(search, test=None, validation_history=[[1.0, 0.5], [2.0, 0.6]])}
    docs = tmp_path / "docs" / "results.md"
    text = results.write_report(tmp_path / "out", docs, done).read_text()
    (defaults,) = [line for line in text.splitlines() if line.startswith("- **Defaults**")]
    assert "no per-run tuning" in defaults
    for fragment in (
        "prompted by gaps seen on the test split",
        "third and fourth search rounds",
        "emotion's early stopping reading more validation rows",
        "the spread stage",
        "selection bias",
        "fresh held-out split",
    ):
        assert fragment in defaults, fragment
    (search_intro,) = [
        line for line in text.splitlines() if line.startswith("Candidates at 1,000 train rows")
    ]
    assert "these runs never score the test split" in search_intro  # still true
    assert "was not blind to the test split" in search_intro and "selection bias" in search_intro
    assert "decision threshold only" not in text  # the validation rows also judged the candidates


# ---- 7. evaluate: a label the version does not know; lora_mode of a non-LoRA version ----------------


def test_evaluate_names_the_versions_labels_for_an_unknown_label_in_the_file(tmp_path: Path) -> None:
    from training.errors import DataError
    from training.evaluate import evaluation_rows

    data = tmp_path / "eval.csv"
    with open(data, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["text", "label"], ["great stuff", "positive"], ["meh", "mixed"]])
    manifest = SimpleNamespace(
        scenario="toy",
        version=3,
        labels=["positive", "negative", "neutral"],
        training_config=None,
        text_normalization=None,
    )
    with pytest.raises(DataError) as caught:
        evaluation_rows(manifest, data)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "'mixed'" in message and "toy v3" in message and "positive, negative, neutral" in message
    assert "fix the file" in message and "scenario config" not in message


def test_training_keeps_the_scenario_config_advice_for_an_unknown_label(tmp_path: Path) -> None:
    from training import custom_scenario
    from training.data import load_labeled
    from training.errors import DataError

    data = write_toy_csv(tmp_path / "train.csv", 3, labels=("positive", "negative", "neutral"))
    scenario = custom_scenario("toy", ["positive", "negative"], tmp_path)
    with pytest.raises(DataError, match="add it to `labels` in the scenario config"):
        load_labeled(data, scenario, ["positive", "negative"])


@pytest.fixture(scope="module")
def full_version(tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A full version of the tiny encoder, exported in fp32 (a few steps: its figures do not matter)."""
    pytest.importorskip("onnxruntime", reason="the serving extra is not installed")
    pytest.importorskip("optimum", reason="the export extra is not installed")
    from model_repository import ModelRepository
    from training import custom_scenario, make_train_config, publish_run, train

    root = tmp_path_factory.mktemp("full-version")
    labels = ("positive", "negative", "neutral")
    write_toy_csv(root / "data" / "train.csv", 20, seed=1, labels=labels)
    write_toy_csv(root / "data" / "validation.csv", 6, seed=2, labels=labels)
    scenario = custom_scenario(
        "toy_full", list(labels), root / "data", max_length_tokens=32, test_fraction=0.2
    )
    config = make_train_config(
        scenario,
        "full",
        base_model=str(tiny_roberta_dir),
        output_dir=root / "run",
        batch_size=8,
        max_steps=4,
        early_stopping_patience=None,
        warmup_ratio=0.0,
    )
    repo = ModelRepository(root / "repo")
    manifest = publish_run(train(config), repo, export_precisions=["fp32"])
    return SimpleNamespace(repo=repo, manifest=manifest)


def test_lora_mode_shared_on_a_full_version_records_what_ran(
    full_version: SimpleNamespace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from labelwise.evaluation import evaluate_version

    with caplog.at_level(logging.WARNING, logger="labelwise.evaluation"):
        metrics = evaluate_version(
            full_version.repo,
            "toy_full",
            split="test",
            precision="fp32",
            lora_mode="shared",
            output_dir=tmp_path / "eval",
        )
    # serving runs a full version on its own graph whatever the mode: lora_mode does not apply to it
    assert metrics["lora_mode"] is None and metrics["engine_group"] == "graph"
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["lora_mode"] is None
    assert any("applies to LoRA versions" in r.getMessage() for r in caplog.records)


# ---- 7. flags a mode would ignore; what the report draws and says -------------------------------------


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--stages", "bogus"], "--stages applies"),
        (["--variants", "x", "--budgets", "7"], "--budgets, --variants apply"),
        (
            ["--scenarios", "spam", "--strategies", "nope", "--time-budget-s", "5"],
            "--scenarios, --strategies, ",
        ),
    ],
)
def test_report_only_refuses_the_flags_of_a_run_it_would_ignore(
    tmp_path: Path, extra: list[str], named: str
) -> None:
    """Every other flag was accepted, invalid values too, and the full report written (exit 0)."""
    docs = tmp_path / "d.md"
    args = ["results", "--report-only", "--out", str(tmp_path / "out"), "--docs", str(docs), *extra]
    result = CliRunner().invoke(app, args, env=CLEAN_ENV)
    assert result.exit_code == 2, result.output
    assert named in result.output and "not to --report-only" in result.output
    assert not docs.exists()


def test_variants_without_the_search_stage_are_refused_not_dropped(tmp_path: Path, monkeypatch) -> None:
    """--variants without --stages search ran the whole default job (51 cells) and no candidate."""
    ran: list[Any] = []
    monkeypatch.setattr(results, "run", lambda *a, **k: ran.append((a, k)))
    base = ["results", "--out", str(tmp_path / "out"), "--docs", str(tmp_path / "d.md")]
    variant = next(iter(results.SEARCH))
    refused = CliRunner().invoke(app, [*base, "--variants", variant], env=CLEAN_ENV)
    assert (
        refused.exit_code == 2
        and "which --stages 'matrix,curve,atis,fgm,sst2' does not run" in refused.output
    )
    assert ran == []
    taken = CliRunner().invoke(app, [*base, "--stages", "search", "--variants", variant], env=CLEAN_ENV)
    assert taken.exit_code == 0, taken.output
    assert ran and ran[0][1]["variants"] == (variant,)


def test_the_majority_line_is_the_majority_answers_macro_f1_not_its_accuracy() -> None:
    """On imbalanced data the accuracy line sat far above what always answering the majority label
    scores in macro-F1: ATIS's frozen bar looked under a baseline it beat elevenfold."""
    from training.metrics import classification_metrics

    labels = ("a", "b", "c", "d")
    truth = [0] * 70 + [1] * 20 + [2] * 10  # "d" has no test rows
    cell = results.Cell("matrix", "toy", "full", 1000)
    rec = _record(cell, labels, majority_test_accuracy=0.7)
    rec["test"]["support"] = {"a": 70, "b": 20, "c": 10, "d": 0}
    import numpy as np

    constant = classification_metrics(np.asarray(truth), np.zeros(100, dtype=int), list(labels))["macro_f1"]
    assert results.majority_macro_f1(rec) == pytest.approx(constant) and constant == pytest.approx(
        0.2745, abs=1e-4
    )


def test_the_sst2_section_names_the_machine_its_records_ran_on(tmp_path: Path) -> None:
    cells = [results.Cell("sst2", "sst2", s, 4000) for s in results.STRATEGY_ORDER]
    gpu = "x86_64 with 16 CPU cores, GPU NVIDIA H100 80GB HBM3"
    done = {c.key: _record(c, ("negative", "positive"), machine=gpu) for c in cells}
    text = results.write_report(tmp_path / "out", tmp_path / "docs" / "results.md", done).read_text()
    assert f"here MiniLM on {gpu}, 4,000 train rows" in text and "2 CPU cores" not in text
