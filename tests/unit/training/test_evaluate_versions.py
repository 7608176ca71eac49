"""`labelwise evaluate`: a version's torch weights, or its exported graph through the serving engine, on a
labeled file or the version's own test/validation split; publish records each graph's test-split figures."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from model_repository import ModelRepository, UsageError
from tests.conftest import toy_sentences

pytest.importorskip("onnxruntime", reason="the serving extra is not installed")
pytest.importorskip("optimum", reason="the export extra is not installed")

LABELS = ["positive", "negative", "neutral"]
SCENARIO = "toy_eval"


def _write(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def _rows(n: int, seed: int) -> list[tuple[str, str]]:
    """Unique rows; every third carries HTML and stray spaces, which the version's normalisation removes:
    the engine is given these raw texts, torch the cleaned ones."""
    rows = []
    for label in LABELS:
        for i, text in enumerate(toy_sentences(label, n, seed=seed)):
            text = f"{text[:-1]} #{seed}-{i}."
            rows.append((f"  <b>{text}</b>   " if i % 3 == 0 else text, label))
    random.Random(seed).shuffle(rows)
    return rows


@pytest.fixture(scope="module")
def published(pretrained_base: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A LoRA version exported in fp32 and int8 (v1) and the same run published without graphs (v2)."""
    from training import custom_scenario, make_train_config, publish_run, train

    root = tmp_path_factory.mktemp("evaluate")
    _write(root / "data" / "train.csv", _rows(50, seed=11))
    _write(root / "data" / "validation.csv", _rows(10, seed=12))
    scenario = custom_scenario(SCENARIO, LABELS, root / "data", max_length_tokens=32, test_fraction=0.2)
    config = make_train_config(
        scenario,
        "lora",
        base_model=str(pretrained_base),
        output_dir=root / "run",
        batch_size=8,
        learning_rate=1e-2,
        num_train_epochs=3,
        early_stopping_patience=None,
        warmup_ratio=0.0,
    )
    result = train(config)
    repo = ModelRepository(root / "repo")
    exported = publish_run(result, repo, export_precisions=["fp32", "int8"])
    bare = publish_run(result, repo, export_precisions=None)
    return SimpleNamespace(repo=repo, result=result, exported=exported, bare=bare, root=root)


def test_publish_records_each_graphs_test_split_figures_and_the_int8_delta(published) -> None:
    m = published.exported
    test = published.result.data.test
    assert test is not None and len(test) == 30  # 20% of 150 train rows, held out before training
    block = m.metrics["test"]
    assert block["rows"] == 30
    assert 0.0 <= block["accuracy"] <= 1.0 and 0.0 <= block["macro_f1"] <= 1.0
    parity = {e.precision: e.parity for e in m.exports}
    assert set(parity) == {"fp32", "int8"}
    for record in parity.values():
        assert record is not None and record.test_rows == 30
        assert record.test_accuracy is not None and record.test_macro_f1 is not None
    # fp32 matches torch to 1e-4 in logits, so its argmax and accuracy are torch's
    assert parity["fp32"].test_accuracy == pytest.approx(block["accuracy"], abs=1 / 30 + 1e-9)
    delta = parity["int8"].test_accuracy - parity["fp32"].test_accuracy
    assert block["int8_delta_vs_fp32"] == pytest.approx(delta, abs=1e-6)
    assert m.metrics["accuracy"] == published.result.metrics["accuracy"]  # validation metrics kept
    assert "test" not in published.bare.metrics  # no graphs, no test figures


def test_split_test_scores_the_held_out_rows_never_trained_on(published) -> None:
    from training import evaluation_rows

    rows = evaluation_rows(published.exported, split="test")
    assert rows.source == "test split" and len(rows.rows) == 30
    train_texts = set(published.result.data.train.raw or [])
    validation_texts = set(published.result.data.validation.raw or [])
    assert rows.rows.raw is not None and not set(rows.rows.raw) & (train_texts | validation_texts)
    assert rows.rows.raw == published.result.data.test.raw
    validation = evaluation_rows(published.exported, split="validation")
    assert validation.rows.raw == published.result.data.validation.raw


def test_torch_on_the_validation_split_reproduces_the_published_metrics(published, tmp_path: Path) -> None:
    from labelwise.evaluation import evaluate_version

    metrics = evaluate_version(
        published.repo, SCENARIO, split="validation", ref=1, precision="torch", output_dir=tmp_path
    )
    assert metrics["n_samples"] == len(published.result.data.validation)
    assert metrics["accuracy"] == pytest.approx(published.exported.metrics["accuracy"], abs=1e-9)
    assert metrics["precision"] == "torch" and metrics["data"] == "validation rows"
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0
    assert json.loads((tmp_path / "metrics.json").read_text())["precision"] == "torch"


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_engine_precisions_score_the_raw_texts_as_served_and_agree_with_torch(
    published, precision: str, tmp_path: Path
) -> None:
    from labelwise.evaluation import engine_logits, evaluate_version
    from training import evaluation_rows, torch_logits

    rows = evaluation_rows(published.exported, split="test").rows
    assert rows.raw != rows.texts  # the engine must clean the raw texts itself
    torch_pred = torch_logits(published.repo, SCENARIO, 1, rows.texts).argmax(-1)
    logits, how = engine_logits(published.repo, published.exported, rows.raw, precision)
    agreement = float((logits.argmax(-1) == torch_pred).mean())
    assert agreement >= (0.99 if precision == "fp32" else 0.8), agreement
    assert how["provider"] == "CPUExecutionProvider" and how["engine_group"] == "graph"

    metrics = evaluate_version(
        published.repo, SCENARIO, split="test", ref=1, precision=precision, output_dir=tmp_path
    )
    gold = np.asarray(rows.label_ids)
    assert metrics["precision"] == precision and metrics["n_samples"] == len(rows)
    assert metrics["accuracy"] == pytest.approx(float((logits.argmax(-1) == gold).mean()), abs=1e-9)
    torch_accuracy = float((torch_pred == gold).mean())
    assert abs(metrics["accuracy"] - torch_accuracy) <= 1 - agreement + 1e-9
    # publish scored the same rows with onnxruntime directly, on the cleaned texts
    parity = published.exported.export(precision).parity
    assert metrics["accuracy"] == pytest.approx(parity.test_accuracy, abs=1 / len(rows) + 1e-9)


def test_a_precision_the_version_lacks_is_a_usage_error_naming_what_is_there(published) -> None:
    from labelwise.evaluation import check_precision, evaluate_version

    with pytest.raises(UsageError, match=r"toy_eval v1 has no such graph; available: torch, fp32, int8 "):
        evaluate_version(published.repo, SCENARIO, split="test", ref=1, precision="fp16")
    with pytest.raises(UsageError, match=r"v2 was published without ONNX graphs; available: torch"):
        evaluate_version(published.repo, SCENARIO, split="test", ref=2, precision="int8")
    fp32 = published.exported.export("fp32")
    with_fp16 = published.exported.model_copy(
        update={"exports": [*published.exported.exports, fp32.model_copy(update={"precision": "fp16"})]}
    )
    with pytest.raises(UsageError, match=r"fp16 needs ONNX Runtime's CUDAExecutionProvider.*fp32, int8"):
        check_precision(with_fp16, "fp16", ["CPUExecutionProvider"])
    check_precision(with_fp16, "fp16", ["CUDAExecutionProvider", "CPUExecutionProvider"])


def test_cli_evaluate_split_and_precision(published, tmp_path: Path) -> None:
    from labelwise.cli import app

    repo = str(published.repo.root)
    ok = CliRunner().invoke(
        app,
        [
            "evaluate",
            "-s",
            SCENARIO,
            "-v",
            "1",
            "-r",
            repo,
            "--split",
            "test",
            "--precision",
            "int8",
            "-o",
            str(tmp_path),
        ],
    )
    assert ok.exit_code == 0, ok.output
    said = " ".join(ok.stdout.split())  # rich wraps at the terminal width
    assert "toy_eval v1 on test split (30 rows), precision int8 on CPUExecutionProvider: accuracy" in said
    missing = CliRunner().invoke(
        app, ["evaluate", "-s", SCENARIO, "-v", "2", "-r", repo, "--split", "test", "--precision", "fp32"]
    )
    assert missing.exit_code == 2 and "available: torch" in missing.stderr
    both = CliRunner().invoke(app, ["evaluate", "-s", SCENARIO, "-r", repo])
    assert both.exit_code == 2 and "--data FILE or --split" in both.stderr


def test_loading_a_lora_version_prints_no_newly_initialized_warning(published, capfd) -> None:
    from training import load_published_model

    capfd.readouterr()
    load_published_model(published.repo, SCENARIO, 1)
    err = capfd.readouterr().err
    assert "newly initialized" not in err and "TRAIN this model" not in err


def test_publish_scores_the_test_rows_in_the_passes_serving_runs(published) -> None:
    """int8 quantises each pass with one activation scale, so a row's int8 logits depend on the rows and
    the padding sharing its pass: publish must cut the test rows as a replica does, or its int8 figure is
    not the served one. Same rows through the serving engine: the same passes, row for row."""
    from labelwise.evaluation import engine_logits
    from serving.batching import BatchPolicy
    from serving.engine import (
        BaseEncoderCache,
        EngineSettings,
        MultiAdapterCache,
        OnnxEngine,
        Row,
        load_scenario,
    )
    from training import evaluation_rows
    from training.export.parity import tokenize_passes
    from training.publish import load_published_model

    rows = published.result.data.test
    more = [" and then some more words" * (i % 5) for i in range(3 * len(rows))]
    # publish tokenizes the cleaned texts; clients send the raw ones
    cleaned = [f"{text}{extra}" for text, extra in zip(rows.texts * 3, more, strict=True)]
    long = [f"{text}{extra}" for text, extra in zip(rows.raw * 3, more, strict=True)]
    _model, tokenizer, manifest = load_published_model(published.repo, SCENARIO, 1)
    batches, order = tokenize_passes(tokenizer, cleaned, manifest.max_length_tokens, max_batch_tokens=64)
    assert sorted(order.tolist()) == list(range(len(long)))
    shapes = [b["input_ids"].shape for b in batches]
    assert len(shapes) > 2 and all(r * w <= 64 or r == 1 for r, w in shapes)

    settings = EngineSettings(["CPUExecutionProvider"], ["int8"], 1)
    loaded = load_scenario(published.repo, SCENARIO, 1, settings, BaseEncoderCache(), MultiAdapterCache())
    policy = BatchPolicy(max_batch_tokens=64)
    served = []
    for start in range(0, len(long), policy.max_batch_size):
        chunk = long[start : start + policy.max_batch_size]
        outcome = OnnxEngine(policy).run([Row(loaded, t) for t in chunk])
        served += [(p.rows, p.tokens) for p in outcome.passes]
    assert served == [(r, r * w) for r, w in shapes]

    # and the figures publish recorded are the engine's at serving's default budget, to the last row
    test_rows = evaluation_rows(published.exported, split="test").rows
    for precision in ("fp32", "int8"):
        logits, how = engine_logits(published.repo, published.exported, test_rows.raw, precision)
        assert how["max_batch_tokens"] == 256
        accuracy = float((logits.argmax(-1) == np.asarray(test_rows.label_ids)).mean())
        assert accuracy == pytest.approx(published.exported.export(precision).parity.test_accuracy, abs=1e-9)


@pytest.mark.parametrize("split", ["test", "validation"])
def test_a_split_whose_run_file_is_gone_names_it_as_the_runs(published, tmp_path: Path, split: str) -> None:
    """It said only "data file X does not exist", not that X is the file the version's run read."""
    from training import DataError, evaluation_rows

    manifest = published.exported
    moved = {**manifest.training_config, "train_path": str(tmp_path / "moved.csv")}
    with pytest.raises(
        DataError, match=rf"the {split} rows of .* are carved from .*moved\.csv, the file its run"
    ):
        evaluation_rows(manifest.model_copy(update={"training_config": moved}), split=split)
