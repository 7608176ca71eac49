"""`labelwise export` reads its parity rows as training read them, maps labels by name and does not carry
the parent's test figures into the child."""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_repository import ModelRepository, layout
from tests.conftest import toy_sentences, write_rows

from .conftest import LABELS, MAX_LENGTH_TOKENS

pytest.importorskip("optimum.exporters.onnx", reason="the training extra is not installed")
pytest.importorskip("onnxruntime")

# Label names that are digits (star ratings): '1' is the model's index 0, never index 1.
STARS = ["1", "2", "3"]


def test_digit_label_names_map_through_label2id() -> None:
    from training.export.parity import label_ids

    label2id = {name: i for i, name in enumerate(STARS)}
    assert label_ids(["1", "3", "2"], label2id).tolist() == [0, 2, 1]
    assert label_ids([2, np.int64(0)], label2id).tolist() == [2, 0]  # training passes ids: indices
    from training.errors import ExportError

    with pytest.raises(ExportError, match="'4' is not one of the model's labels"):
        label_ids(["4"], label2id)


def _toy_run(tmp_path: Path, base_dir: Path) -> tuple[Any, ModelRepository]:
    """The train config of a full run on a toy scenario with its own validation file, and an empty
    repository."""
    from tests.conftest import write_toy_csv
    from training import custom_scenario, make_train_config

    data = tmp_path / "toy"
    write_toy_csv(data / "train.csv", 10, seed=1)
    write_toy_csv(data / "validation.csv", 10, seed=2)
    scenario = custom_scenario("toy", LABELS, data, max_length_tokens=MAX_LENGTH_TOKENS)
    config = make_train_config(scenario, "full", base_model=str(base_dir), output_dir=tmp_path / "run")
    return config, ModelRepository(tmp_path / "repo")


def _publish_full(
    repo: ModelRepository,
    name: str,
    labels: list[str],
    base_dir: Path,
    base_ref: Any,
    tokenizer: Any,
    config: Any,
    texts: list[str],
    metrics: dict[str, Any],
) -> Any:
    """A full version of a tiny random classifier, with a real training_config and the given metrics."""
    import json

    import torch
    from transformers import AutoModelForSequenceClassification

    from training.export import export_into

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        base_dir,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={v: i for i, v in enumerate(labels)},
    ).eval()
    with repo.new_version(
        name,
        strategy="full",
        base_model=base_ref,
        labels=labels,
        max_length_tokens=MAX_LENGTH_TOKENS,
        metrics=metrics,
        training_config=json.loads(config.model_dump_json()),
    ) as draft:
        tokenizer.save_pretrained(draft.path / layout.TOKENIZER_DIR)
        model.save_pretrained(draft.path / layout.WEIGHTS_DIR, safe_serialization=True)
        draft.fields.update(
            export_into(
                draft.path,
                model=model,
                tokenizer=tokenizer,
                strategy="full",
                base_model=base_ref,
                precisions="fp32",
                parity_texts=texts,
                max_length_tokens=MAX_LENGTH_TOKENS,
                say=lambda _m: None,
            )
        )
    return draft.manifest


@pytest.mark.parametrize(
    ("columns", "labels", "unknown"),
    [
        (("text", "label"), LABELS, "positive#negative"),  # an unknown label the scenario drops
        (("text", "label"), STARS, "9"),  # digit names: '1' is index 0
        (("review", "stars"), STARS, "9"),  # the scenario's own columns
    ],
)
def test_reexport_reads_rows_with_the_scenario_loader(
    columns, labels, unknown, tmp_path, tiny_roberta_dir, tiny_base_ref, tiny_tokenizer, monkeypatch
):
    """As intent_atis: an unknown validation label that the scenario drops, the scenario's columns, digit
    labels; the re-export reads the rows as training did (cleaned), and the gold ids are the names'."""
    from training import custom_scenario, make_train_config
    from training.export import reexport
    from training.export.parity import label_ids

    rows = [
        (f"  <b>{t}</b>  ", name)
        for name, word in zip(labels, LABELS, strict=True)
        for t in toy_sentences(word, 8)
    ]
    rows += [(t, unknown) for t in toy_sentences("neutral", 3, seed=9)]
    random.Random(3).shuffle(rows)
    data = tmp_path / "data"
    write_rows(data / "train.csv", rows, columns)
    validation = write_rows(data / "validation.csv", rows, columns)
    scenario = custom_scenario(
        "rows",
        labels,
        data,
        text_column=columns[0],
        label_column=columns[1],
        unknown_validation_labels="drop",
        max_length_tokens=MAX_LENGTH_TOKENS,
    )
    config = make_train_config(
        scenario, "full", base_model=str(tiny_roberta_dir), output_dir=tmp_path / "run"
    )
    repo = ModelRepository(tmp_path / "repo")
    parent = _publish_full(
        repo, "rows", labels, tiny_roberta_dir, tiny_base_ref, tiny_tokenizer, config, ["ok"], {}
    )
    seen: list[dict[str, Any]] = []
    real = reexport.export_into
    monkeypatch.setattr(reexport, "export_into", lambda *a, **kw: seen.append(kw) or real(*a, **kw))

    known = [(t, name) for t, name in rows if name in labels]
    label2id = {name: i for i, name in enumerate(labels)}
    for parity_file in (None, validation):  # the run's own validation rows, then --validation PATH
        child = reexport.reexport_version(repo, "rows", parent.version, "fp32", parity_file)
        assert child.exports[0].parity.n_samples == len(known) == 24  # the 3 unknown rows dropped
        kwargs = seen[-1]
        assert kwargs["parity_texts"] == [
            " ".join(t.replace("<b>", " ").replace("</b>", " ").split()) for t, _ in known
        ]
        gold = label_ids(kwargs["parity_labels"], label2id)
        assert gold.tolist() == [label2id[name] for _, name in known]


def test_reexport_does_not_inherit_the_parents_test_metrics(
    tmp_path, tiny_roberta_dir, tiny_base_ref, tiny_tokenizer
):
    """The parent's metrics.test describes its own graphs (int8_delta_vs_fp32): an fp32-only child must
    not claim it; the validation metrics, the weights', stay."""
    from training.export.reexport import reexport_version

    config, repo = _toy_run(tmp_path, tiny_roberta_dir)
    test = {"rows": 30, "accuracy": 0.5, "macro_f1": 0.4, "int8_delta_vs_fp32": -0.01}
    parent = _publish_full(
        repo,
        "toy",
        LABELS,
        tiny_roberta_dir,
        tiny_base_ref,
        tiny_tokenizer,
        config,
        ["ok"],
        {"macro_f1": 0.41, "test": test},
    )
    child = reexport_version(repo, "toy", parent.version, "fp32")
    assert [e.precision for e in child.exports] == ["fp32"]
    assert "test" not in child.metrics
    assert child.metrics["macro_f1"] == 0.41
    assert repo.verify("toy", parent.version).metrics["test"] == test  # the parent is untouched


@pytest.mark.parametrize(
    ("ref", "named"), [("latest", "spam 'latest'"), ("production", "spam 'production'"), (3, "spam v3")]
)
def test_a_version_that_does_not_resolve_is_named_as_given(
    tmp_path: Path, ref: str | int, named: str
) -> None:
    from training.errors import SourceVersionError
    from training.export.reexport import reexport_version

    with pytest.raises(SourceVersionError, match=f"^{re.escape(named)}: cannot re-export"):
        reexport_version(ModelRepository(tmp_path / "repo"), "spam", ref)


@pytest.mark.parametrize("own_file", [True, False], ids=["validation-file", "carved-from-train"])
def test_export_refuses_validation_rows_that_changed_since_training(
    own_file, tmp_path, tiny_roberta_dir, tiny_base_ref, tiny_tokenizer
):
    """Parity was checked on the run's validation file (or the rows carved from its train file) as the
    file is today, after it changed: other rows than the run validated on. Refused as `evaluate --split
    validation` refuses them (exit 2, one line naming what changed and --validation); a labeled file
    given with --validation is still used."""
    from typer.testing import CliRunner

    from labelwise.cli import app
    from tests.conftest import write_toy_csv
    from training import custom_scenario, make_train_config
    from training.data import held_out_record, prepare_data

    data = tmp_path / "toy"
    train = write_toy_csv(data / "train.csv", 10, seed=1)
    validation = write_toy_csv(data / "validation.csv", 10, seed=2)
    carved = {} if own_file else {"validation_file": None}
    scenario = custom_scenario("toy", LABELS, data, max_length_tokens=MAX_LENGTH_TOKENS, **carved)
    config = make_train_config(
        scenario, "full", base_model=str(tiny_roberta_dir), output_dir=tmp_path / "run"
    )
    record = held_out_record(config, prepare_data(config))
    repo = ModelRepository(tmp_path / "repo")
    args = (tiny_roberta_dir, tiny_base_ref, tiny_tokenizer, config, ["ok"], {"held_out": record})
    parent = _publish_full(repo, "toy", LABELS, *args)
    changed = validation if own_file else train
    write_toy_csv(changed, 12, seed=3)  # relabelled and extended since the run
    export = ["export", "-s", "toy", "-v", str(parent.version), "-p", "fp32,int8", "-r", str(repo.root)]
    result = CliRunner().invoke(app, export)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        "error: toy v1: the validation rows read today are not the ones its run validated on ("
    )
    assert f"{changed} changed since" in line and "pass --validation PATH" in line
    assert repo.list_versions("toy") == [1]
    given = write_toy_csv(tmp_path / "labeled.csv", 10, seed=4)
    result = CliRunner().invoke(app, [*export, "--validation", str(given)])
    assert result.exit_code == 0 and "published toy v2 (parent v1)" in result.output, result.output


def test_export_warns_that_a_version_without_held_out_records_cannot_have_its_rows_verified(
    tmp_path, tiny_roberta_dir, tiny_base_ref, tiny_tokenizer, caplog
):
    """A version published before its held-out rows were recorded: parity is checked on its validation rows
    as they read today, which nothing can verify; the export goes on, and says so (as `evaluate --split`
    does) and how to choose the rows instead."""
    from typer.testing import CliRunner

    from labelwise.cli import app

    config, repo = _toy_run(tmp_path, tiny_roberta_dir)
    parent = _publish_full(
        repo, "toy", LABELS, tiny_roberta_dir, tiny_base_ref, tiny_tokenizer, config, ["ok"], {}
    )
    export = ["export", "-s", "toy", "-v", str(parent.version), "-p", "fp32,int8", "-r", str(repo.root)]
    with caplog.at_level(logging.WARNING, logger="training"):
        result = CliRunner().invoke(app, export)
    assert result.exit_code == 0 and "published toy v2 (parent v1)" in result.output, result.output
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    expected = (
        "toy v1 was published before its held-out rows were recorded: the validation rows read today, "
        "which its parity is checked on, cannot be verified to be the ones it validated on; pass "
        "--validation PATH to check parity on a labeled file of your choice"
    )
    assert warnings.count(expected) == 1, warnings


def test_export_warns_as_training_did_when_max_eval_samples_kept_more_validation_rows(
    tmp_path, tiny_roberta_dir, tiny_base_ref, tiny_tokenizer, caplog
):
    """A run with max_eval_samples below its class count validated on one row of each class, and training
    warned so; a re-export reads the run's validation rows again through the same cap and said nothing
    (parity is checked on those rows)."""
    from tests.conftest import write_toy_csv
    from training import custom_scenario, make_train_config
    from training.data import held_out_record, prepare_data
    from training.export.reexport import parity_rows

    data = tmp_path / "toy"
    write_toy_csv(data / "train.csv", 10, seed=1)
    validation = write_toy_csv(data / "validation.csv", 10, seed=2)
    scenario = custom_scenario("toy", LABELS, data, max_length_tokens=MAX_LENGTH_TOKENS)
    config = make_train_config(
        scenario, "full", base_model=str(tiny_roberta_dir), output_dir=tmp_path / "run", max_eval_samples=2
    )
    expected = (
        f"max_eval_samples (--max-eval-samples) 2 is below the 3 classes of {validation}: kept 3 rows, one "
        "of each class, so that the run sees every class"
    )
    with caplog.at_level(logging.WARNING, logger="training"):
        record = held_out_record(config, prepare_data(config))
    assert expected in [r.getMessage() for r in caplog.records]  # what the run said
    repo = ModelRepository(tmp_path / "repo")
    args = (tiny_roberta_dir, tiny_base_ref, tiny_tokenizer, config, ["ok"], {"held_out": record})
    parent = _publish_full(repo, "toy", LABELS, *args)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="training"):
        texts, _labels = parity_rows(parent)
    assert len(texts) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [expected]
