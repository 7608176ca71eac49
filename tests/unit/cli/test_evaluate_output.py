"""`labelwise evaluate` prints label names and paths as they are: Rich read `[...]` in them as markup (a
label "[spam]" printed as nothing), and cut long ones and the summary line at 80 columns when the output
was piped or redirected. The data folder's name holds brackets too: datasets read it as a glob pattern."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from model_repository import ModelRepository
from tests.conftest import write_toy_csv

pytest.importorskip("torch", reason="the training extra is not installed")
pytest.importorskip("onnxruntime", reason="the serving extra is not installed")
pytest.importorskip("optimum", reason="the export extra is not installed")

NAMES = {
    "positive": "[spam]",
    "negative": "ham [bold]x",
    "neutral": "atis_flight#atis_airfare#atis_ground_service",
}


def _renamed(path: Path) -> Path:
    rows = list(csv.reader(path.open(encoding="utf-8")))
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([rows[0], *[[text, NAMES[label]] for text, label in rows[1:]]])
    return path


def test_evaluate_prints_bracketed_and_long_labels_whole(tiny_roberta_dir: Path, tmp_path: Path) -> None:
    from labelwise.cli import app
    from training import custom_scenario, make_train_config, train_and_publish

    _renamed(write_toy_csv(tmp_path / "data [1]" / "train.csv", 12, seed=1, labels=tuple(NAMES)))
    _renamed(write_toy_csv(tmp_path / "data [1]" / "validation.csv", 3, seed=2, labels=tuple(NAMES)))
    scenario = custom_scenario("brackets", list(NAMES.values()), tmp_path / "data [1]", max_length_tokens=32)
    config = make_train_config(
        scenario,
        "full",
        base_model=str(tiny_roberta_dir),
        output_dir=tmp_path / "run",
        batch_size=8,
        max_steps=2,
    )
    repo = ModelRepository(tmp_path / "repo")
    train_and_publish(config, repo, export_precisions=["fp32"])
    out = CliRunner().invoke(
        app,
        ["evaluate", "-s", "brackets", "-r", str(repo.root), "--split", "validation", "--precision", "fp32"],
    )
    assert out.exit_code == 0, out.output
    assert "[spam]" in out.output and "ham [bold]x" in out.output, out.output  # not read as markup
    # the long label folds onto a second line of its cell, whole, rather than losing its end to "…"
    assert "atis_flight#atis_airfare#atis_ground_" in out.output and "service" in out.output, out.output
    assert "…" not in out.output, out.output
    summary = next(line for line in out.output.splitlines() if "macro-F1" in line)
    assert "scored in" in summary, out.output  # one line, not cut at 80 columns
