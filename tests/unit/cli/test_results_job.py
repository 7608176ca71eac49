"""`make results` on a tiny encoder: every cell trains, is scored on the held-out split, resumes, reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import write_toy_csv

pytest.importorskip("torch", reason="the training extra is not installed")
pytest.importorskip("onnxruntime", reason="the serving extra is not installed")

SENTIMENT = ("negative", "neutral", "positive")


# CI time (30 minutes on the 2-core box): in `make test-all`, not `make test`.
@pytest.mark.slow
def test_the_results_job_scores_held_out_rows_resumes_and_writes_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_roberta_dir: Path
) -> None:
    from labelwise import results
    from training.export import exporter

    # The frozen cell's head stays on the int8 base whatever its 8 validation rows say (one row is 12.5
    # points): this test follows the int8 base's figures; the frozen int8 guard has its own tests.
    monkeypatch.setattr(exporter, "FROZEN_INT8_MAX_DROP", 1.0)
    data = tmp_path / "data"
    write_toy_csv(data / "sentiment" / "train.csv", 30, seed=1, labels=SENTIMENT)
    write_toy_csv(data / "sentiment" / "validation.csv", 8, seed=2, labels=SENTIMENT)
    monkeypatch.setenv("LABELWISE_DATA_DIR", str(data))
    out, docs = tmp_path / "results", tmp_path / "docs" / "results.md"
    said: list[str] = []
    done = results.run(
        out, ("matrix",), ("sentiment",), (40,), docs, said.append, base_model=str(tiny_roberta_dir)
    )

    assert sorted(done) == sorted(f"matrix-sentiment-{s}-n40-s42" for s in ("full", "lora", "frozen"))
    for key, record in done.items():
        assert record["test_rows"] == 9  # 10% of the 90 train rows, 3 per class, carved before the cap
        assert record["train_rows"] <= 40
        assert 0.0 <= record["test"]["accuracy"] <= 1.0 and set(record["test"]["per_class_f1"]) == set(
            SENTIMENT
        )
        assert record["trainable_params"] > 0 and record["artifact_bytes"] > 0
        assert sum(record["test"]["support"].values()) == 9  # each label's test rows
        assert record["best_epoch_rule"] == results.BEST_EPOCH_RULE and record["finished_at"]
        # The largest budget exports: both graphs were scored through the serving engine.
        for precision in ("fp32", "int8"):
            assert 0.0 <= record[f"test_{precision}"]["accuracy"] <= 1.0, key
        run_config = json.loads((out / "cells" / key / "run" / "train_config.json").read_text())
        assert run_config["scenario"]["test_fraction"] == 0.1
    assert said[0].startswith("results: 3 cells planned, 0 already done, 3 to run")

    report = docs.read_text()
    assert "| sentiment (9, 0.333) | full |" in report and "| sentiment | full | not run yet" not in report
    assert "every version through the serving engine from the raw texts, as a replica runs it" in report
    assert "| emotion | full | not run yet" in report  # a partial run says what it has not run
    assert (docs.parent / "img" / "results-matrix-40.png").stat().st_size > 0

    # A record names the base model it trained (and its scenario-level settings): a rerun on the same base
    # skips it (a rerun on another base runs it again: test_results_records.py).
    tiny = str(tiny_roberta_dir)
    assert all(
        rec["base_model"] == tiny and rec["scenario_settings"]["name"] == "sentiment" for rec in done.values()
    )
    again: list[str] = []
    assert results.run(out, ("matrix",), ("sentiment",), (40,), docs, again.append, base_model=tiny) == done
    assert again[0].startswith("results: 3 cells planned, 3 already done, 0 to run")

    # The ledger beside the report (kept in git) holds every cell's record: a fresh clone, without runs/,
    # resumes from it and writes the same tables; it cannot rescore what it did not publish, and does not.
    ledger = docs.parent / "results-cells"
    assert sorted(p.stem for p in ledger.glob("*.json")) == sorted(done)
    assert all(rec["version_created_at"] and "machine" in rec for rec in done.values())
    report_before = docs.read_text()
    elsewhere: list[str] = []
    fresh = tmp_path / "fresh-clone-runs"
    assert (
        results.run(fresh, ("matrix",), ("sentiment",), (40,), docs, elsewhere.append, base_model=tiny)
        == done
    )
    assert elsewhere[0].startswith("results: 3 cells planned, 3 already done, 0 to run")
    assert docs.read_text().replace(str(fresh), str(out)) == report_before
    assert results.score_served(fresh, results.load_done(fresh, ledger), None, results.engine_scorer()) == 0

    # What serving runs is what is scored: every strategy through the serving engine (full and LoRA graphs
    # as a CPU replica runs them, layer norms unfused; frozen as the shared base encoder + head), not
    # publish's parity on training's session. A frozen cell scored by publish, as before, is scored again.
    scored_by = {k.split("-")[2]: r["test_int8"]["scored_by"] for k, r in done.items()}
    assert scored_by == {"full": "serving engine", "lora": "serving engine", "frozen": "serving engine"}
    frozen_file = out / "cells" / "matrix-sentiment-frozen-n40-s42" / "result.json"
    engine_figures = json.loads(frozen_file.read_text())["test_int8"]
    old = json.loads(frozen_file.read_text())
    old["test_int8"] = {"accuracy": -1.0, "macro_f1": -1.0, "scored_by": "publish"}
    frozen_file.write_text(json.dumps(old))
    from model_repository import ModelRepository

    rescored = results.load_done(out)
    repository = ModelRepository(out / "repository")
    n = results.score_served(
        out, rescored, repository, results.engine_scorer(), said.append, str(tiny_roberta_dir)
    )
    assert n == 1 and json.loads(frozen_file.read_text())["test_int8"] == engine_figures
    # publish's own figures for a frozen version are the served path's (shared base + head) too
    frozen_manifest = repository.verify("sentiment", json.loads(frozen_file.read_text())["version"])
    served = frozen_manifest.metrics["test"]["served"]
    assert served["int8"]["accuracy"] == pytest.approx(engine_figures["accuracy"], abs=1e-4)
    assert frozen_manifest.metrics["test"]["int8_delta_vs_fp32"] == pytest.approx(
        served["int8"]["accuracy"] - served["fp32"]["accuracy"], abs=1e-6
    )
    # The figures name the shared base's int8 recipe; figures taken under another recipe (a base exported
    # before it, since removed and exported again) are scored again, current ones are not.
    assert engine_figures["base_quantization"].endswith("attention / feed-forward output nodes kept fp32")
    assert "† |" in docs.read_text()  # the frozen row's int8 is marked as partly quantised
    assert results.score_served(out, results.load_done(out), repository, results.engine_scorer()) == 0
    old = json.loads(frozen_file.read_text())
    old["test_int8"] = {**old["test_int8"], "accuracy": -1.0, "base_quantization": "every MatMul int8"}
    frozen_file.write_text(json.dumps(old))
    n = results.score_served(out, results.load_done(out), repository, results.engine_scorer())
    assert n == 1 and json.loads(frozen_file.read_text())["test_int8"] == engine_figures
    # Figures scored in other passes than serving's (publish before model_repository.passes cut 32 rows per
    # pass in file order) are scored again through the engine; run_cell records the same today.
    full_file = out / "cells" / "matrix-sentiment-full-n40-s42" / "result.json"
    published = json.loads(full_file.read_text())
    assert published["test_int8"]["passes"] == results.SERVING_PASSES
    old = json.loads(full_file.read_text())
    old["test_int8"] = {"accuracy": -1.0, "macro_f1": -1.0, "scored_by": "publish"}
    full_file.write_text(json.dumps(old))
    n = results.score_served(out, results.load_done(out), repository, results.engine_scorer())
    again = json.loads(full_file.read_text())["test_int8"]
    assert n == 1 and again["scored_by"] == "serving engine" and again["passes"] == results.SERVING_PASSES
    assert (again["accuracy"], again["macro_f1"]) == (
        published["test_int8"]["accuracy"],
        published["test_int8"]["macro_f1"],
    )

    # A default changed since a cell ran (here: its recorded learning rate differs): the cell is set aside
    # under stale/ to run again; cells that match today's defaults stay.
    full_file = out / "cells" / "matrix-sentiment-full-n40-s42" / "result.json"
    changed = json.loads(full_file.read_text())
    changed["params"]["learning_rate"] = 0.5
    full_file.write_text(json.dumps(changed))
    current = results.load_done(out)
    moved = results.set_aside_stale(out, current, said.append, str(tiny_roberta_dir))
    assert moved == ["matrix-sentiment-full-n40-s42"] and sorted(current) == sorted(
        f"matrix-sentiment-{s}-n40-s42" for s in ("lora", "frozen")
    )
    assert (out / "stale" / "matrix-sentiment-full-n40-s42" / "result.json").is_file()
    # Set aside in the ledger too (the ledger's copy still has the old learning rate: change it there).
    ledgered = json.loads((ledger / "matrix-sentiment-full-n40-s42.json").read_text())
    ledgered["params"]["learning_rate"] = 0.5
    (ledger / "matrix-sentiment-full-n40-s42.json").write_text(json.dumps(ledgered))
    from_ledger = results.load_done(fresh, ledger)
    assert results.set_aside_stale(fresh, from_ledger, said.append, str(tiny_roberta_dir), ledger) == [
        "matrix-sentiment-full-n40-s42"
    ]
    assert (ledger / "stale" / "matrix-sentiment-full-n40-s42.json").is_file()
    assert sorted(results.load_done(fresh, ledger)) == sorted(current)
    assert "moved to" in said[-1] and "matrix-sentiment-full-n40-s42" in said[-1]
    results.write_report(out, docs, current)
    report = docs.read_text()
    assert "| sentiment | full | not run yet" in report
    assert "## Set aside: cells trained under earlier defaults" in report
    assert "| matrix-sentiment-full-n40-s42 |" in report and "learning_rate 0.5 → " in report

    # A scenario's early stopping moved to another cap of validation rows (EVAL_ROWS) sets its cells aside
    # too, at the same parameters; a record that does not name its cap ran with MAX_EVAL_ROWS.
    assert all(rec["max_eval_samples"] == results.MAX_EVAL_ROWS for rec in current.values())
    del current["matrix-sentiment-lora-n40-s42"]["max_eval_samples"]
    assert results.set_aside_stale(out, dict(current), said.append, str(tiny_roberta_dir)) == []
    # Records scored on held-out rows chosen another way (split row by row before SPLIT_VERSION 2: a record
    # that names no version) are set aside too.
    assert all(rec["split_version"] == results.split_version() == 2 for rec in current.values())
    unsplit = {k: dict(v) for k, v in current.items()}
    del unsplit["matrix-sentiment-frozen-n40-s42"]["split_version"]
    moved_split = results.set_aside_stale(out / "none", unsplit, said.append, str(tiny_roberta_dir))
    assert moved_split == ["matrix-sentiment-frozen-n40-s42"]
    monkeypatch.setitem(results.EVAL_ROWS, "sentiment", 6)
    assert sorted(results.set_aside_stale(out, current, said.append, str(tiny_roberta_dir))) == [
        f"matrix-sentiment-{s}-n40-s42" for s in ("frozen", "lora")
    ]
    assert current == {}
    results.write_report(out, docs, current)
    assert f"validation rows {results.MAX_EVAL_ROWS} → 6" in docs.read_text()
    # A cell set aside a second time keeps the first record: the second one is named with the time.
    first = (ledger / "stale" / "matrix-sentiment-full-n40-s42.json").read_text()
    (ledger / "matrix-sentiment-full-n40-s42.json").write_text(first)
    results.set_aside_stale(
        fresh, results.load_done(fresh, ledger), said.append, str(tiny_roberta_dir), ledger
    )
    assert (ledger / "stale" / "matrix-sentiment-full-n40-s42.json").read_text() == first
    assert len(list((ledger / "stale").glob("matrix-sentiment-full-n40-s42-*.json"))) == 1


def test_the_plan_reuses_matrix_cells_and_states_every_stage() -> None:
    from labelwise.results import plan

    cells = plan(("matrix", "curve", "atis", "fgm", "sst2"), ("sentiment", "intent_atis"), (1000, 4000))
    keys = [c.key for c in cells]
    assert len(keys) == len(set(keys))
    assert sum(c.export for c in cells) == 12  # every matrix cell exports fp32 + int8
    assert "atis-intent_atis-full-n1000-s42-cw-off" in keys
    assert sum(c.adversarial == "fgm" for c in cells) == 3
    assert [c.rows for c in cells if c.stage == "curve"] == [16000, 16000]


def test_the_fgm_table_takes_the_matrix_cell_as_seed_42_without_fgm() -> None:
    from labelwise.results import FGM_SEEDS, Cell, Report, _fgm_section

    def rec(cell: Cell, acc: float) -> dict:
        return {
            "key": cell.key,
            "cell": {"stage": cell.stage, "adversarial": cell.adversarial},
            "test": {"accuracy": acc, "macro_f1": acc - 0.1},
            "train_time_s": 10.0,
        }

    matrix = Cell("matrix", "sentiment", "lora", 1000, export=True)
    done = {matrix.key: rec(matrix, 0.60)}
    for i, seed in enumerate(FGM_SEEDS):
        fgm = Cell("fgm", "sentiment", "lora", 1000, seed=seed, adversarial="fgm")
        done[fgm.key] = rec(fgm, 0.62 + i / 100)
        if seed != 42:
            plain = Cell("fgm", "sentiment", "lora", 1000, seed=seed)
            done[plain.key] = rec(plain, 0.58 + i / 100)
    report = Report()
    _fgm_section(report, done)
    lines = [line for line in report.lines if line.startswith(("| plain", "| FGM"))]
    # plain: 0.60 (the matrix cell), 0.59, 0.60 -> mean 0.597; FGM: 0.62, 0.63, 0.64 -> 0.630 ± 0.010
    assert lines == [
        "| plain | 3 | 0.597 ± 0.006 | 0.497 ± 0.006 | 10 |",
        "| FGM | 3 | 0.630 ± 0.010 | 0.530 ± 0.010 | 10 |",
    ]


def test_search_candidates_can_be_chosen_and_run_on_their_scenarios() -> None:
    from labelwise.results import SEARCH, SEARCH_ON, plan

    every = plan(("search",), (), (1000,))
    assert len(every) == len(SEARCH) + sum(len(on) - 1 for on in SEARCH_ON.values())
    chosen = plan(("search",), (), (1000,), variants=("lora-qv-r16-lr2e-3-1200steps",))
    assert [(c.scenario, c.variant) for c in chosen] == [
        ("emotion", "lora-qv-r16-lr2e-3-1200steps"),
        ("sentiment", "lora-qv-r16-lr2e-3-1200steps"),
    ]
    # A second-round candidate runs as a matrix cell does: its settings win over the search's fixed ones.
    settings = SEARCH["lora-qv-r16-lr2e-3-1200steps"][1]
    assert settings["min_train_steps"] == 1200 and settings["max_eval_samples"] == 500


def test_a_search_candidate_is_never_taken_for_the_matrix_cell() -> None:
    from labelwise.results import Cell, _reuse

    matrix = Cell("matrix", "emotion", "lora", 1000, export=True)
    done = {matrix.key: {"key": matrix.key}}
    assert _reuse(Cell("atis", "emotion", "lora", 1000), done) == {"key": matrix.key}
    assert (
        _reuse(Cell("search", "emotion", "lora", 1000, variant="lora-qv-r16-lr2e-3-1200steps"), done) is None
    )
    assert _reuse(Cell("fgm", "emotion", "lora", 1000, adversarial="fgm"), done) is None


def test_the_plan_can_be_narrowed_to_some_strategies() -> None:
    from labelwise.results import plan

    cells = plan(
        ("matrix", "curve", "atis", "fgm", "sst2"), ("sentiment", "emotion"), (1000,), strategies=("lora",)
    )
    assert {c.strategy for c in cells} == {"lora"}
    assert [c.key for c in cells if c.stage == "matrix"] == [
        "matrix-sentiment-lora-n1000-s42",
        "matrix-emotion-lora-n1000-s42",
    ]
    assert sum(c.stage == "fgm" for c in cells) == 6  # FGM runs LoRA: kept
    full_only = plan(("matrix", "fgm", "curve"), ("spam",), (1000,), strategies=("full",))
    assert [c.key for c in full_only] == ["matrix-spam-full-n1000-s42", "curve-sentiment-full-n16000-s42"]


def test_a_recovered_search_record_is_marked_and_keeps_its_best_beyond_the_shown_epochs() -> None:
    from labelwise.results import Cell, Report, _search_section

    cell = Cell("search", "emotion", "lora", 1000, variant="lora-qkvd-r8-lr1e-3-1200steps")
    ran = Cell("search", "emotion", "full", 1000, variant="full-lr5e-5")
    done = {
        cell.key: {
            "key": cell.key,
            "cell": {"stage": "search", "scenario": "emotion", "strategy": "lora", "variant": cell.variant},
            "validation_history": [[float(i), 0.5 + i / 100] for i in range(1, 11)],
            "validation_best_macro_f1": 0.864,  # reached after the 10 epochs the report showed
            "epochs_run": 15.0,
            "train_time_s": 736.0,
            "recovered": {"from": "docs/results.md at commit 3c81424"},
        },
        ran.key: {
            "key": ran.key,
            "cell": {"stage": "search", "scenario": "emotion", "strategy": "full", "variant": ran.variant},
            "validation_history": [[1.0, 0.4], [2.0, 0.7], [3.0, 0.6]],
            "epochs_run": 3.0,
            "train_time_s": 100.0,
        },
    }
    report = Report()
    _search_section(report, done)
    rows = {line.split(" | ")[1]: line for line in report.lines if line.startswith("| emotion |")}
    assert rows["lora-qkvd-r8-lr1e-3-1200steps ‡"].endswith("| 15.0 | 0.864 | 736 |")
    assert rows["full-lr5e-5"].endswith("| 3.0 | 0.700 | 100 |")
    assert any(line.startswith("‡ Recovered") and "3c81424" in line for line in report.lines)


def test_a_parameter_added_at_its_default_does_not_make_a_record_stale() -> None:
    from labelwise import results

    recorded = {"learning_rate": 1e-3, "lora_r": 8}
    # lora_train_pooler came after the record: at its default (False) the run is the same run...
    assert results.same_params(recorded, {**recorded, "lora_train_pooler": False})
    # ...but not when today's default turns it on, nor when a recorded value changed.
    assert not results.same_params(recorded, {**recorded, "lora_train_pooler": True})
    assert not results.same_params(recorded, {"learning_rate": 2e-3, "lora_r": 8, "lora_train_pooler": False})
    # A key no StrategyParams field names is never excused.
    assert not results.same_params(recorded, {**recorded, "not_a_field": None})


def test_the_spread_stage_reuses_the_matrix_cell_as_seed_42_and_reports_the_gap_seed_by_seed() -> None:
    from labelwise.results import SPREAD, SPREAD_SEEDS, Cell, Report, _spread_section, plan

    cells = plan(("spread",), (), (1000,))
    ((scenario, rows),) = SPREAD
    assert [(c.strategy, c.seed) for c in cells] == [
        (s, seed) for seed in SPREAD_SEEDS for s in ("full", "lora")
    ]
    assert {(c.scenario, c.rows) for c in cells} == {(scenario, rows)}

    def record(cell: Cell, f1: float) -> dict:
        return {
            "cell": {"seed": cell.seed},
            "key": cell.key,
            "test": {"accuracy": f1 + 0.03, "macro_f1": f1},
            "validation": {"macro_f1": f1 + 0.02},
            "validation_rows": 2000,
            "train_time_s": 100.0,
        }

    f1 = {("full", 42): 0.872, ("lora", 42): 0.859, ("full", 1): 0.870, ("lora", 1): 0.877}
    done = {}
    for (strategy, seed), value in f1.items():
        cell = Cell("matrix" if seed == 42 else "spread", scenario, strategy, rows, seed=seed)
        done[cell.key] = record(cell, value)
    r = Report()
    _spread_section(r, done)
    text = "\n".join(r.lines)
    assert "| full | 2 | 42: 0.872, 1: 0.870 | 0.871 ± 0.001 |" in text
    assert "early stopping read 2,000 of them here" in text
    assert "| lora | 2 | 42: 0.859, 1: 0.877 | 0.868 ± 0.013 |" in text
    assert "seed by seed: -1.3, +0.7 points; mean -0.3." in text
    # one seed per strategy cannot show a spread: no section
    r = Report()
    _spread_section(r, {k: v for k, v in done.items() if v["cell"]["seed"] == 42})
    assert r.lines == []
