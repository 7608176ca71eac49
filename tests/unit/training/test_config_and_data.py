"""Scenario configs, data loading and every bad input: each stops before training with one clear message."""

from __future__ import annotations

import os
from pathlib import Path
from typing import get_args

import pytest
from pydantic import BaseModel, ValidationError

from tests.conftest import write_rows
from training import (
    BaseModelNotFoundError,
    CleaningConfig,
    DataError,
    ScenarioConfig,
    ScenarioConfigError,
    StrategyError,
    StrategyParams,
    TrainConfig,
    class_weights,
    classification_metrics,
    clean_text,
    custom_scenario,
    list_scenarios,
    load_scenario,
    make_train_config,
    prepare_data,
    resolve_base_model,
    train,
)
from training.metrics import use_class_weights
from training.model import lora_targets

LABELS = ["positive", "negative", "neutral"]


def test_packaged_scenarios_load_with_their_label_sets() -> None:
    expected = {
        "sentiment": 3,
        "news_topic": 5,
        "intent": 77,
        "intent_atis": 21,
        "spam": 2,
        "emotion": 6,
        "sst2": 2,
    }
    assert set(expected) <= set(list_scenarios())
    for name, n_labels in expected.items():
        scenario = load_scenario(name)
        assert scenario.name == name and len(scenario.labels) == n_labels
        assert set(scenario.strategies) == {"full", "frozen", "lora"}
    assert load_scenario("sentiment").labels == ["negative", "neutral", "positive"]


def test_data_dir_setting_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELWISE_DATA_DIR", str(tmp_path))
    write_rows(tmp_path / "spam" / "train.csv", [("hi", "ham")])
    write_rows(tmp_path / "spam" / "validation.csv", [("win", "spam")])
    config = make_train_config(
        "spam", "lora", max_train_samples=100, lora_r=4, num_train_epochs=1, max_length_tokens=32
    )
    assert config.train_path == tmp_path / "spam" / "train.csv"
    assert config.validation_path == tmp_path / "spam" / "validation.csv"
    assert config.params.lora_r == 4 and config.params.num_train_epochs == 1
    assert config.scenario.max_length_tokens == 32 and config.max_train_samples == 100
    with pytest.raises(ScenarioConfigError, match="learning_rate"):
        make_train_config("spam", "full", learning_rate=-1)
    with pytest.raises(ScenarioConfigError, match="unknown strategy 'adapter'"):
        make_train_config("spam", "adapter")
    with pytest.raises(ScenarioConfigError, match="unknown scenario 'nope'"):
        load_scenario("nope")
    # an empty or blank --base-model was taken for the default, whose load error named a model not asked for
    for blank in ("", "  "):
        with pytest.raises(ScenarioConfigError, match=r"invalid training setting: base_model: empty: give"):
            make_train_config("spam", "full", base_model=blank)
    assert make_train_config("spam", "full").base_model == "distilroberta-base"


def test_cleaning_defaults_keep_case_punctuation_and_digits() -> None:
    text = "  <b>Great</b>   phone!! See https://x.io/a?b=1 or www.shop.com &amp; call 555 \n"
    assert clean_text(text, CleaningConfig()) == "Great phone!! See or & call 555"
    seed_style = CleaningConfig(lowercase=True, remove_punctuation=True, remove_digits=True)
    assert clean_text(text, seed_style) == "great phone see or call"


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_formats_load_and_labels_follow_the_config_order(fmt: str, tmp_path: Path) -> None:
    import pandas as pd

    rows = [("good one", "positive"), ("bad one", "negative"), ("meh", "neutral"), ("fine", "positive")]
    held = [("so good", "positive"), ("awful", "negative"), ("okay", "neutral")]
    paths = {}
    for name, table in (("train", rows), ("validation", held)):
        frame = pd.DataFrame(table, columns=["body", "tag"])
        path = paths[name] = tmp_path / f"{name}.{fmt}"
        if fmt == "csv":
            frame.to_csv(path, index=False)
        elif fmt == "jsonl":
            frame.to_json(path, orient="records", lines=True)
        else:
            frame.to_parquet(path)
    scenario = custom_scenario(
        "fmt",
        ["neutral", "negative", "positive"],
        tmp_path,
        text_column="body",
        label_column="tag",
        train_file=str(paths["train"]),
        validation_file=str(paths["validation"]),
    )
    data = prepare_data(make_train_config(scenario, "full", output_dir=tmp_path / "run"))
    assert data.train.texts == ["good one", "bad one", "meh", "fine"]
    assert data.train.label_ids == [2, 1, 0, 2]
    assert data.validation.label_ids == [2, 1, 0]


def test_stratified_validation_split_and_caps(tmp_path: Path) -> None:
    rows = [(f"text {i}", "positive") for i in range(80)] + [(f"other {i}", "negative") for i in range(20)]
    rows += [("lonely", "neutral")]
    write_rows(tmp_path / "train.csv", rows)
    scenario = custom_scenario("split", LABELS, tmp_path, validation_split=0.2)
    data = prepare_data(make_train_config(scenario, "full", output_dir=tmp_path / "run"))
    assert data.validation_is_split
    assert sorted(data.validation.label_ids).count(0) == 16 and data.validation.label_ids.count(1) == 4
    assert 2 in data.train.label_ids and 2 not in data.validation.label_ids  # a single row stays in train
    assert not set(data.train.texts) & set(data.validation.texts)
    capped = prepare_data(
        make_train_config(scenario, "full", output_dir=tmp_path / "run", max_train_samples=10)
    )
    assert len(capped.train) <= 10 and set(capped.train.label_ids) == {0, 1, 2}


def test_class_weights_and_auto_switch() -> None:
    assert class_weights([10, 30, 60]) == pytest.approx([100 / 30, 100 / 90, 100 / 180])
    assert class_weights([5, 0, 5]) == pytest.approx([1.0, 1.0, 1.0])
    assert use_class_weights("auto", [10, 40], 3.0) and not use_class_weights("auto", [10, 30], 3.0)
    assert use_class_weights("on", [10, 10], 3.0) and not use_class_weights("off", [1, 100], 3.0)


def test_metrics_macro_f1_and_per_class() -> None:
    m = classification_metrics([0, 0, 1, 1, 2, 2], [0, 0, 1, 0, 2, 2], ["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["per_class"]["b"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["macro_f1"] == pytest.approx((0.8 + 2 / 3 + 1.0) / 3)  # 'd' has no rows: not averaged
    assert m["confusion_matrix"][1] == [1, 1, 0, 0]


# ---- bad input: one clear message, nothing trained ---------------------------------------------------


def _config(tmp_path: Path, tiny: Path, strategy: str = "full", **settings):
    scenario = custom_scenario("bad", settings.pop("labels", LABELS), tmp_path / "data", **settings)
    return make_train_config(scenario, strategy, base_model=str(tiny), output_dir=tmp_path / "run")


def _stops(config, error: type[Exception], *needles: str) -> None:
    with pytest.raises(error) as info:
        train(config)
    for needle in needles:
        assert needle in str(info.value), str(info.value)
    assert not Path(config.output_dir).exists()  # nothing was written: training never started


def test_missing_file(tmp_path: Path, tiny_roberta_dir: Path) -> None:
    config = _config(tmp_path, tiny_roberta_dir)
    _stops(config, DataError, "train.csv", "does not exist")


def test_missing_column(tmp_path: Path, tiny_roberta_dir: Path) -> None:
    write_rows(tmp_path / "data" / "train.csv", [("good", "positive")], header=("sentence", "label"))
    _stops(_config(tmp_path, tiny_roberta_dir), DataError, "train.csv", "missing column 'text'", "sentence")


@pytest.mark.parametrize("content", ["", "text,label\n"])
def test_empty_file(content: str, tmp_path: Path, tiny_roberta_dir: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text(content)
    _stops(_config(tmp_path, tiny_roberta_dir), DataError, "train.csv")


def test_validation_label_not_in_config(tmp_path: Path, tiny_roberta_dir: Path) -> None:
    write_rows(tmp_path / "data" / "train.csv", [("good", "positive"), ("bad", "negative")])
    write_rows(tmp_path / "data" / "validation.csv", [("good", "positive"), ("so so", "mixed")])
    _stops(_config(tmp_path, tiny_roberta_dir), DataError, "validation.csv", "'mixed'", "not in the scenario")


def test_validation_label_can_be_dropped_by_config(tmp_path: Path) -> None:
    write_rows(tmp_path / "train.csv", [("good", "positive"), ("bad", "negative")])
    write_rows(tmp_path / "validation.csv", [("fine", "positive"), ("so so", "mixed")])
    scenario = custom_scenario("drop", LABELS, tmp_path, unknown_validation_labels="drop")
    data = prepare_data(make_train_config(scenario, "full", output_dir=tmp_path / "run"))
    assert data.validation.texts == ["fine"] and data.dropped_validation_rows == 1


def test_fewer_than_two_classes(tmp_path: Path, tiny_roberta_dir: Path) -> None:
    with pytest.raises(ScenarioConfigError, match="at least 2 labels"):
        custom_scenario("one", ["positive"], tmp_path)
    write_rows(tmp_path / "data" / "train.csv", [("good", "positive"), ("great", "positive")])
    _stops(_config(tmp_path, tiny_roberta_dir), DataError, "train.csv", "fewer than 2 classes")


def test_base_model_not_available_offline(tmp_path: Path, toy_data_dir: Path) -> None:
    scenario = custom_scenario("toy", LABELS, toy_data_dir)
    config = make_train_config(
        scenario, "full", base_model="some-org/never-downloaded", output_dir=tmp_path / "r"
    )
    _stops(config, BaseModelNotFoundError, "some-org/never-downloaded", "--base-model /path/to/local/copy")


def test_minilm_alias_resolves_to_the_packaged_copy(minilm_dir: Path) -> None:
    base = resolve_base_model("minilm")
    assert base.path == minilm_dir and base.architecture == "bert"
    assert base.id == "sentence-transformers/all-MiniLM-L6-v2" and len(base.content_hash or "") == 64


def test_lora_targets_per_architecture() -> None:
    assert lora_targets("roberta", None) == ["query", "key", "value", "dense"]
    assert lora_targets("distilbert", None) == ["q_lin", "v_lin"]
    assert lora_targets("gpt_neox", ["query_key_value"]) == ["query_key_value"]
    with pytest.raises(StrategyError, match="gpt_neox"):
        lora_targets("gpt_neox", None)


def test_qlora_needs_cuda(tmp_path: Path, toy_data_dir: Path, tiny_roberta_dir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the CPU refusal cannot be seen here")
    scenario = custom_scenario("toy", LABELS, toy_data_dir)
    config = make_train_config(
        scenario, "lora", base_model=str(tiny_roberta_dir), qlora=True, output_dir=tmp_path / "r"
    )
    with pytest.raises(StrategyError, match="CUDA"):
        train(config)
    with pytest.raises(ScenarioConfigError, match="lora"):
        make_train_config(scenario, "full", qlora=True)


def test_cli_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from labelwise.cli import app

    result = CliRunner().invoke(
        app,
        [
            "train",
            "--scenario",
            "spam",
            "--strategy",
            "lora",
            "--data",
            str(tmp_path / "absent.csv"),
            "--no-publish",
            "-o",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 2
    assert "absent.csv" in result.output and "does not exist" in result.output
    assert "Traceback" not in result.output


def test_a_data_file_or_scenario_yaml_that_is_a_device_is_not_said_to_be_missing(tmp_path: Path) -> None:
    """A link to /dev/null (or /dev/zero) was reported as "does not exist", which sent people looking for
    a missing file; it is named as not a regular file, and never read."""
    from training.data import read_table

    data, yaml_file = tmp_path / "train.csv", tmp_path / "tickets.yaml"
    data.symlink_to(os.devnull)
    yaml_file.symlink_to(os.devnull)
    with pytest.raises(DataError, match=r"^data file .*train\.csv is not a regular file$"):
        read_table(data, ["text", "label"])
    with pytest.raises(ScenarioConfigError, match=r"^scenario file .*tickets\.yaml is not a regular file$"):
        load_scenario(yaml_file)


def test_a_scenario_yaml_not_utf8_or_a_folder_is_refused_in_one_line_naming_it(tmp_path: Path) -> None:
    """A scenario YAML saved as UTF-16 (or Latin-1) failed as `error: UnicodeDecodeError: ...` (exit 1,
    no file named); a folder named like a YAML was said not to exist."""
    from typer.testing import CliRunner

    from labelwise.cli import app

    utf16 = tmp_path / "tickets.yaml"
    utf16.write_text("name: tickets\nlabels: [a, b]\n", encoding="utf-16")
    with pytest.raises(ScenarioConfigError) as caught:
        load_scenario(utf16)
    assert str(caught.value) == (
        f"scenario file {utf16} is not UTF-8 text (byte 0xff: invalid start byte); re-save it as UTF-8"
    )
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(ScenarioConfigError, match=r"^scenario file .*folder\.yaml is a folder$"):
        load_scenario(tmp_path / "folder.yaml")
    result = CliRunner().invoke(
        app, ["train", "-s", str(utf16), "--strategy", "frozen", "--no-publish", "-o", str(tmp_path / "r")]
    )
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: {caught.value}\n"


def test_weighted_sampling_turns_auto_loss_weights_off(tmp_path: Path) -> None:
    """Sampling by 1/count already balances the batches; weighting the loss by 1/count too would turn the
    imbalance around. auto weighting is off with weighted sampling; `on` still weights, as asked."""
    from training.trainer import _class_balance

    rows = [(f"text {i}", "positive") for i in range(80)] + [(f"other {i}", "negative") for i in range(10)]
    write_rows(tmp_path / "train.csv", rows)
    scenario = custom_scenario("balance", LABELS, tmp_path, validation_split=0.2)

    def balance(**settings):  # type: ignore[no-untyped-def]
        config = make_train_config(scenario, "full", output_dir=tmp_path / "run", **settings)
        return _class_balance(config, prepare_data(config))

    alone = balance()  # 8:1 imbalance: auto weights the loss
    assert alone.weighted and alone.loss_weights is not None and alone.sample_weights is None
    sampled = balance(weighted_sampling=True)
    assert not sampled.weighted and sampled.loss_weights is None and sampled.sample_weights is not None
    both = balance(weighted_sampling=True, class_weighting="on")
    assert both.weighted and both.loss_weights is not None and both.sample_weights is not None


def test_csv_cells_are_read_as_written(tmp_path: Path) -> None:
    """No type or missing-value guessing: a text "NA" or "null" is a text, labels "true" / "007" are those
    strings; an empty cell is refused by name."""
    rows = [
        ("NA", "true"),
        ("null", "false"),
        ("None", "007"),
        ("n/a", "true"),
        ("#N/A", "false"),
        ("x", "007"),
    ]
    write_rows(tmp_path / "train.csv", rows)
    scenario = custom_scenario("asis", ["true", "false", "007"], tmp_path, validation_split=0.4)
    data = prepare_data(make_train_config(scenario, "full", output_dir=tmp_path / "run"))
    texts = set(data.train.texts) | set(data.validation.texts)
    assert texts == {"NA", "null", "None", "n/a", "#N/A", "x"}
    write_rows(tmp_path / "train.csv", [*rows, ("", "true")])
    with pytest.raises(DataError, match="row 8: empty 'text'"):
        prepare_data(make_train_config(scenario, "full", output_dir=tmp_path / "run"))


def test_a_validation_split_with_no_rows_is_refused_before_training(tmp_path: Path) -> None:
    write_rows(tmp_path / "train.csv", [("good", "positive"), ("bad", "negative")])  # one row per class
    scenario = custom_scenario("tiny", LABELS, tmp_path, validation_split=0.2)
    with pytest.raises(DataError, match=r"no validation rows for 'tiny'.*at least 2 rows"):
        prepare_data(make_train_config(scenario, "full", output_dir=tmp_path / "run"))


def test_runs_made_in_the_same_second_get_folders_of_their_own() -> None:
    """Two configs made at once (one process, or several: the pid is in the name) never share a run folder,
    whose metrics, plots and checkpoints each run writes."""
    first = make_train_config("spam", "lora")
    second = make_train_config("spam", "lora")
    assert first.output_dir != second.output_dir
    assert first.output_dir.parent == second.output_dir.parent
    assert f"-p{os.getpid()}" in first.output_dir.name and second.output_dir.name.startswith("lora-")


def test_a_strategy_block_given_in_part_keeps_that_strategys_defaults() -> None:
    """`frozen: {learning_rate: 0.001}` changed the rate and silently dropped the frozen defaults (200 epochs
    at batch 64, weight decay 0.05) for a bare StrategyParams' 3 epochs at batch 16."""
    from training.config import ScenarioConfig, StrategyParams, _default_strategies

    config = ScenarioConfig(
        name="partial",
        labels=["a", "b"],
        strategies={"frozen": {"learning_rate": 0.001}, "full": StrategyParams(num_train_epochs=5)},
    )
    frozen, full, lora = (config.strategies[s] for s in ("frozen", "full", "lora"))  # type: ignore[index]
    assert (frozen.learning_rate, frozen.num_train_epochs, frozen.batch_size, frozen.weight_decay) == (
        0.001,
        200,
        64,
        0.05,
    )
    assert (full.learning_rate, full.head_learning_rate, full.num_train_epochs) == (1e-4, 1e-3, 5)
    assert lora == _default_strategies()["lora"]
    # A block that lists every field (a recorded config read again) is taken as it is.
    whole = StrategyParams(learning_rate=0.5).model_dump()
    again = ScenarioConfig(name="partial", labels=["a", "b"], strategies={"frozen": whole})
    assert again.strategies["frozen"].model_dump() == whole  # type: ignore[index]


def test_a_validation_file_the_scenario_names_that_is_missing_is_refused_not_split(tmp_path: Path) -> None:
    """A validation_file of the scenario's own naming (here a typo) became a random split of train without a
    word; only the default validation.csv falls back to a split when the dataset lacks it."""
    write_rows(tmp_path / "data" / "train.csv", [("good", "pos"), ("bad", "neg")] * 10)
    typo = custom_scenario("typo", ["pos", "neg"], tmp_path / "data", validation_file="valdation.csv")
    with pytest.raises(ScenarioConfigError, match=r"valdation\.csv.*does not exist.*validation_file: null"):
        make_train_config(typo, "full", output_dir=tmp_path / "run")
    default = custom_scenario("default", ["pos", "neg"], tmp_path / "data", validation_file="validation.csv")
    assert make_train_config(default, "full", output_dir=tmp_path / "run").validation_path is None


def test_data_that_is_itself_validation_csv_is_not_its_own_validation_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """--data x/validation.csv took its sibling validation.csv, i.e. itself: the run chose its checkpoint and
    reported metrics on its own train rows. A real sibling is still taken, and the log says so."""
    import logging

    rows = [("good", "pos"), ("bad", "neg")] * 10
    train = write_rows(tmp_path / "data" / "train.csv", rows)
    validation = write_rows(tmp_path / "data" / "validation.csv", rows[:4])
    with caplog.at_level(logging.INFO, logger="training.config"):
        itself = make_train_config("spam", "full", data=validation, output_dir=tmp_path / "run")
        beside = make_train_config("spam", "full", data=train, output_dir=tmp_path / "run")
    assert itself.validation_path is None  # a split of the file
    assert beside.validation_path == validation.absolute()
    messages = [r.getMessage() for r in caplog.records]
    assert any("its own sibling validation" in m for m in messages), messages
    assert any(f"validation: {validation}, beside the train file" in m for m in messages), messages


@pytest.mark.parametrize(
    ("separator", "says"), [(";", "separated by ';': save it with commas"), ("\t", "name the file .tsv")]
)
def test_a_csv_separated_by_another_character_says_so(tmp_path: Path, separator: str, says: str) -> None:
    """`text;label` read as one column was answered "set text_column / label_column", the wrong fix."""
    from training.data import read_table

    path = tmp_path / "train.csv"
    path.write_text(f"text{separator}label\ngood{separator}pos\nbad{separator}neg\n", encoding="utf-8")
    with pytest.raises(DataError, match=says):
        read_table(path, ["text", "label"])
    named = tmp_path / "named.csv"
    named.write_text("body,tag\ngood,pos\n", encoding="utf-8")
    with pytest.raises(DataError, match="set text_column / label_column"):
        read_table(named, ["text", "label"])


def test_an_invalid_override_says_each_problem_without_pydantics_banner() -> None:
    """`--learning-rate -1` was refused with pydantic's whole text: its error count, type tag, input dump and
    a documentation URL per problem."""
    with pytest.raises(ScenarioConfigError) as caught:
        make_train_config("sentiment", "lora", learning_rate=-1.0)
    message = str(caught.value)
    assert message == "scenario 'sentiment': invalid override: learning_rate: Input should be greater than 0"


def test_invalid_epochs_from_the_command_line_are_one_problem() -> None:
    """`--epochs -1` is also the cap on what min_train_steps may add (max_train_epochs): it was refused
    twice, the second time under a field the user never set."""
    from labelwise.training_runs import train_overrides

    with pytest.raises(ScenarioConfigError) as caught:
        make_train_config("sentiment", "lora", **train_overrides(num_train_epochs=-1.0))
    assert str(caught.value) == (
        "scenario 'sentiment': invalid override: num_train_epochs: Input should be greater than 0"
    )
    assert train_overrides(num_train_epochs=2.0)["max_train_epochs"] == 2.0  # a valid count is the cap


def test_an_invalid_scenario_yaml_says_each_problem_without_pydantics_banner(tmp_path: Path) -> None:
    """A scenario YAML's bad field was refused with pydantic's whole text (error count, type tag, input dump,
    documentation URL), where an override of the same field says `field: message`."""
    path = tmp_path / "tickets.yaml"
    path.write_text("name: Bad Name\nlabels: [a, a]\n", encoding="utf-8")
    with pytest.raises(ScenarioConfigError) as caught:
        load_scenario(path)
    assert str(caught.value) == (
        f"{path}: invalid scenario config: name: String should match pattern '^[a-z0-9][a-z0-9_-]{{0,63}}$'; "
        "labels: labels must be unique; repeated: ['a']"
    )


def _number_fields(model: type[BaseModel]) -> list[str]:
    return [
        name
        for name, field in model.model_fields.items()
        if {int, float} & {*get_args(field.annotation), field.annotation}
    ]


def _valid_train_config() -> dict:
    return make_train_config("sentiment", "lora", output_dir="runs/x").model_dump()


BOOLEAN_FOR_A_NUMBER = [
    *[(ScenarioConfig, name) for name in _number_fields(ScenarioConfig)],
    *[(StrategyParams, name) for name in _number_fields(StrategyParams)],
    *[(TrainConfig, name) for name in _number_fields(TrainConfig)],
]


@pytest.mark.parametrize(("model", "name"), BOOLEAN_FOR_A_NUMBER, ids=lambda x: getattr(x, "__name__", x))
@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_refused_for_every_number_field_naming_it(
    model: type[BaseModel], name: str, value: bool
) -> None:
    """YAML's true/false was read as 1/0 (bool is an int to pydantic): `lora_r: true` trained rank 1,
    `num_train_epochs: true` one epoch, `test_max_rows: true` a test split of one row."""
    valid = {
        ScenarioConfig: {"name": "tickets", "labels": ["a", "b"]},
        StrategyParams: {},
        TrainConfig: _valid_train_config() if model is TrainConfig else {},
    }[model]
    with pytest.raises(ValidationError) as refused:
        model.model_validate({**valid, name: value})
    (error,) = refused.value.errors()
    assert error["loc"] == (name,)
    assert f"{name} {str(value).lower()}: a boolean where a number goes; give a number" in error["msg"]


def test_the_boolean_training_fields_still_take_booleans() -> None:
    scenario = ScenarioConfig(name="tickets", labels=["a", "b"], int8_guard=False, weighted_sampling=True)
    assert scenario.int8_guard is False and scenario.weighted_sampling is True
    assert StrategyParams(lora_train_pooler=True).lora_train_pooler is True
    assert len(BOOLEAN_FOR_A_NUMBER) > 25  # the refusal above is parametrized over them: none went missing


def test_train_refuses_a_boolean_number_in_a_scenario_yaml_naming_the_field(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from labelwise.cli import app

    path = tmp_path / "tickets.yaml"
    path.write_text("name: tickets\nlabels: [a, b]\nstrategies:\n  lora: {lora_r: true}\n", encoding="utf-8")
    result = CliRunner().invoke(
        app,
        ["train", "--scenario", str(path), "--strategy", "lora", "--no-publish", "-o", str(tmp_path / "r")],
    )
    assert result.exit_code == 2, result.output
    assert (
        "strategies.lora.lora_r: lora_r true: a boolean where a number goes; give a number" in result.output
    )
    assert "Traceback" not in result.output
