"""`labelwise evaluate --split test|validation` scores the rows the version held out, or refuses: publish
records what identifies them, and a train file changed since carves other rows (some of them trained on)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from model_repository import ModelRepository
from model_repository.identity import file_sha256
from tests.conftest import toy_sentences, write_rows

LABELS = ["positive", "negative", "neutral"]
SCENARIO = "toy_heldout"


def _rows(n: int, seed: int) -> list[tuple[str, str]]:
    return [
        (f"{t[:-1]} #{seed}-{i}.", label)
        for label in LABELS
        for i, t in enumerate(toy_sentences(label, n, seed))
    ]


@pytest.fixture(scope="module")
def published(pretrained_base: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A full fine-tune of a scenario whose test split AND validation rows are carved from its train file,
    published twice: with an fp32 graph (v1), and torch weights only (v2)."""
    from training import custom_scenario, make_train_config, publish_run, train

    root = tmp_path_factory.mktemp("held-out")
    train_file = write_rows(root / "data" / "train.csv", _rows(30, seed=5))
    scenario = custom_scenario(
        SCENARIO, LABELS, root / "data", max_length_tokens=32, test_fraction=0.2, validation_file=None
    )
    config = make_train_config(
        scenario,
        "full",
        base_model=str(pretrained_base),
        output_dir=root / "run",
        batch_size=8,
        max_steps=6,
        early_stopping_patience=None,
    )
    result = train(config)
    repo = ModelRepository(root / "repo")
    exported = publish_run(result, repo, export_precisions=["fp32"])
    bare = publish_run(result, repo, export_precisions=None)
    return SimpleNamespace(
        repo=repo, result=result, exported=exported, bare=bare, train_file=train_file, root=root
    )


def test_publish_records_what_identifies_the_held_out_and_validation_rows(published) -> None:
    from training.data import SPLIT_VERSION, rows_digest

    data = published.result.data
    assert data.test is not None and data.validation_is_split
    for manifest in (published.exported, published.bare):  # with and without the export's metrics
        record = manifest.metrics["held_out"]
        assert record == {
            "split_version": SPLIT_VERSION,
            "train_file_sha256": file_sha256(published.train_file),
            "test_rows": len(data.test),
            "test_sha256": rows_digest(data.test, LABELS),
            "validation_rows": len(data.validation),
            "validation_sha256": rows_digest(data.validation, LABELS),
        }
    assert "test" in published.exported.metrics  # the export's test figures are kept beside it


def test_a_changed_train_file_is_refused_not_scored_on_rows_the_version_trained_on(
    published, tmp_path: Path
) -> None:
    from labelwise.cli import app
    from labelwise.evaluation import evaluate_version
    from training import evaluation_rows
    from training.errors import DataError

    # the file as trained: the very rows held out, in either split
    assert evaluation_rows(published.exported, split="test").rows.raw == published.result.data.test.raw
    evaluation_rows(published.exported, split="validation")
    original = published.train_file.read_bytes()
    try:
        # 12 newly labelled rows appended, nothing else changed: the split carved today moves
        with open(published.train_file, "a", encoding="utf-8") as fh:
            fh.writelines(f"{text},{label}\n" for text, label in _rows(4, seed=77))
        for split, what in (("test", "held out"), ("validation", "validated on")):
            refused = rf"toy_heldout v1: the {split} rows carved today are not the ones it {what} when"
            with pytest.raises(
                DataError, match=refused + r" .*changed since.*score a labeled file with --data"
            ):
                evaluate_version(published.repo, SCENARIO, split=split, ref=1, output_dir=tmp_path)
        cli = CliRunner().invoke(
            app, ["evaluate", "-s", SCENARIO, "-v", "2", "-r", str(published.repo.root), "--split", "test"]
        )
        assert cli.exit_code == 2, cli.output
        (line,) = cli.stderr.strip().splitlines()
        assert line.startswith("error: toy_heldout v2: the test rows carved today") and "--data" in line
        assert "Traceback" not in cli.output
    finally:
        published.train_file.write_bytes(original)
    metrics = evaluate_version(published.repo, SCENARIO, split="test", ref=1, output_dir=tmp_path)
    assert metrics["n_samples"] == len(published.result.data.test)


def test_a_version_published_before_the_record_is_scored_with_a_warning(
    published, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from labelwise.evaluation import evaluate_version

    copy = tmp_path / "repo"
    shutil.copytree(published.repo.root, copy)
    path = copy / SCENARIO / "2" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["metrics"].pop("held_out", None)  # as every version published before it was recorded
    path.write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="training"):
        metrics = evaluate_version(ModelRepository(copy), SCENARIO, split="test", ref=2, output_dir=tmp_path)
    assert metrics["n_samples"] == len(published.result.data.test)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("toy_heldout v2 was published before its held-out rows were recorded")
    assert "cannot be verified" in warning and "\n" not in warning


def test_other_rows_from_the_same_file_and_split_version_are_said_to_come_from_this_code(
    tmp_path: Path,
) -> None:
    """SST-2's test split was 2,010 rows under a cap counting texts; carved today it is 2,000 from the same
    file, under the same SPLIT_VERSION: the refusal says the code carves other rows, not 'other rows'."""
    from training.data import SPLIT_VERSION, LabeledTexts, held_out_changes

    train_file = write_rows(tmp_path / "train.csv", _rows(3, seed=1))
    config = SimpleNamespace(
        train_path=train_file, validation_path=None, scenario=SimpleNamespace(labels=LABELS)
    )
    rows = LabeledTexts(["a", "b"], [0, 1], "test split")
    record = {
        "split_version": SPLIT_VERSION,
        "train_file_sha256": file_sha256(train_file),
        "test_rows": 3,
        "test_sha256": "0" * 64,
    }
    why = held_out_changes(record, config, "test", rows)
    assert why == f"this code carves other rows from the same {train_file}; 3 rows then, 2 now"
    # a changed file is said as before, and the code is not blamed for it
    changed = held_out_changes({**record, "train_file_sha256": "1" * 64}, config, "test", rows)
    assert changed == f"{train_file} changed since; 3 rows then, 2 now"
