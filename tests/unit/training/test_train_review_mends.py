"""Training settings found in review: `--epochs` is the epochs run, a seed out of numpy's range, LoRA
target modules that name nothing and a max length past the base's position table are refused before
any step, naming the setting; data paths are recorded absolute."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import FAST, LABELS


def test_epochs_from_the_command_line_are_the_epochs_run(toy_data_dir: Path) -> None:
    from labelwise.training_runs import train_overrides
    from training import custom_scenario, make_train_config
    from training.config import StrategyParams
    from training.trainer import planned_epochs

    strategies = {"full": StrategyParams(min_train_steps=1000, batch_size=16)}
    scenario = custom_scenario("toy", LABELS, toy_data_dir, strategies=strategies)
    config = make_train_config(
        scenario, "full", output_dir=toy_data_dir / "unused", **train_overrides(num_train_epochs=2)
    )
    assert planned_epochs(config.params, 1000) == 2.0
    # without --epochs the scenario's floor still raises a small set's epochs (16 steps an epoch)
    config = make_train_config(scenario, "full", output_dir=toy_data_dir / "unused")
    assert planned_epochs(config.params, 256) == 20.0


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_seed_out_of_range_is_refused_by_name(toy_scenario, seed: int) -> None:
    from training import ScenarioConfigError, make_train_config

    with pytest.raises(ScenarioConfigError, match="seed"):
        make_train_config(toy_scenario, "full", output_dir="unused", seed=seed)


def test_relative_data_paths_are_recorded_absolute(toy_scenario, toy_data_dir: Path, monkeypatch) -> None:
    from training import make_train_config

    monkeypatch.chdir(toy_data_dir)
    config = make_train_config(
        toy_scenario, "full", data="train.csv", validation_data="validation.csv", output_dir="unused"
    )
    assert config.train_path == toy_data_dir / "train.csv" and config.train_path.is_absolute()
    assert config.validation_path == toy_data_dir / "validation.csv"
    monkeypatch.chdir(os.sep)
    assert config.train_path.is_file()


def _tiny_config(toy_scenario, tiny_roberta_dir: Path, tmp_path: Path, strategy: str, **overrides):
    from training import make_train_config

    base = str(tiny_roberta_dir)
    return make_train_config(
        toy_scenario, strategy, base_model=base, output_dir=tmp_path, **{**FAST, **overrides}
    )


def test_lora_targets_that_name_nothing_are_a_strategy_error(
    toy_scenario, tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    from training import StrategyError, train

    config = _tiny_config(toy_scenario, tiny_roberta_dir, tmp_path, "lora", lora_target_modules=["nope"])
    with pytest.raises(StrategyError, match=r"lora_target_modules \['nope'\].*'query'"):
        train(config)


def test_a_max_length_past_the_bases_positions_is_refused_before_training(
    toy_scenario, tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    from training import ScenarioConfigError, train

    config = _tiny_config(toy_scenario, tiny_roberta_dir, tmp_path, "full", max_length_tokens=4096)
    with pytest.raises(ScenarioConfigError, match=r"max_length_tokens 4096 .* \(\d+ tokens\)"):
        train(config)
    assert not (tmp_path / "metrics.json").exists()


def test_an_epsilon_without_adversarial_training_is_refused(toy_scenario) -> None:
    from training import ScenarioConfigError, make_train_config

    with pytest.raises(ScenarioConfigError, match=r"--adversarial fgm\|pgd"):
        make_train_config(toy_scenario, "full", output_dir="unused", adversarial_epsilon=0.5)


def test_tsv_keeps_quotes_and_a_trailing_comma_is_an_empty_last_cell(tmp_path: Path) -> None:
    from training.data import read_table

    tsv = tmp_path / "train.tsv"
    tsv.write_text('text\tlabel\n"Great" movie\tpositive\nbad one\tnegative\n')
    assert read_table(tsv, ["text", "label"])["text"] == ['"Great" movie', "bad one"]
    csv = tmp_path / "train.csv"
    csv.write_text("text,label,\ngreat movie,positive,\nbad one,negative,\n")
    assert read_table(csv, ["text", "label"]) == {
        "text": ["great movie", "bad one"],
        "label": ["positive", "negative"],
    }


def test_a_whitespace_only_text_is_an_empty_text(toy_scenario, tmp_path: Path) -> None:
    from training import DataError
    from training.data import load_labeled

    data = tmp_path / "train.csv"
    data.write_text("text,label\ngood film,positive\n   ,negative\n")
    with pytest.raises(DataError, match=r"row 3: empty 'text'"):
        load_labeled(data, toy_scenario, LABELS, unknown="error")


def test_int8_export_does_not_log_the_quantizers_pre_processing_advice(caplog) -> None:
    import logging

    from training.export.graphs import _quiet

    with caplog.at_level(logging.WARNING), _quiet():
        logging.warning("Please consider to run pre-processing before quantization. Refer to example: x")
        logging.warning("a real warning")
    assert [r.getMessage() for r in caplog.records] == ["a real warning"]


def test_integer_labels_in_a_scenario_yaml_are_label_names_and_booleans_are_refused(tmp_path: Path) -> None:
    from training import ScenarioConfigError, load_scenario

    ints = tmp_path / "ints.yaml"
    ints.write_text("name: digits\nlabels: [0, 1]\n")
    assert load_scenario(str(ints)).labels == ["0", "1"]
    yes_no = tmp_path / "yes_no.yaml"
    yes_no.write_text("name: answers\nlabels: [yes, no]\n")
    with pytest.raises(ScenarioConfigError, match=r"labels\[0\] is the boolean True .*quote"):
        load_scenario(str(yes_no))


def test_jsonl_labels_typed_by_json_match_their_names(tmp_path: Path) -> None:
    from training import custom_scenario
    from training.data import load_labeled

    data = tmp_path / "train.jsonl"
    data.write_text(
        '{"text": "a", "label": true}\n{"text": "b", "label": false}\n{"text": "c", "label": 1.0}\n'
    )
    scenario = custom_scenario("flags", ["true", "false", "1"], tmp_path)
    loaded, _ = load_labeled(data, scenario, scenario.labels, unknown="error")
    assert list(loaded.label_ids) == [0, 1, 2]


def test_mpnet_positions_start_past_the_padding_index_like_roberta(
    tmp_path: Path, tiny_roberta_dir: Path
) -> None:
    """MPNet numbers positions from padding_idx + 1 too: max_length_tokens equal to its position table
    passed the check and the first step died in F.embedding with a bare IndexError."""
    import torch
    from transformers import AutoTokenizer, MPNetConfig, MPNetModel

    from training import custom_scenario, make_train_config
    from training.errors import ScenarioConfigError
    from training.model import resolve_base_model
    from training.trainer import _check_max_length

    folder = tmp_path / "mpnet"
    tokenizer = AutoTokenizer.from_pretrained(tiny_roberta_dir)
    tokenizer.model_max_length = 128
    tokenizer.save_pretrained(folder)
    config = MPNetConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=40, pad_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    MPNetModel(config).save_pretrained(folder)
    base = resolve_base_model(str(folder))
    scenario = custom_scenario("mp", ["a", "b"], tmp_path, max_length_tokens=40)
    with pytest.raises(
        ScenarioConfigError, match=r"max_length_tokens 40 is more than base model .* reads \(38 "
    ):
        _check_max_length(make_train_config(scenario, "full", base_model=str(folder)), base, tokenizer)


def test_a_base_tokenizer_that_cuts_and_pads_on_the_left_is_trained_as_it_is_served(
    tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    """Training honoured a tokenizer_config's truncation_side/padding_side "left" while a replica always
    drops the end of a long text and pads after it: the model was trained and scored on other ids."""
    import json
    import shutil

    from serving.engine.tokenize import TextTokenizer
    from training.model import resolve_base_model
    from training.trainer import load_tokenizer

    base = shutil.copytree(tiny_roberta_dir, tmp_path / "left")
    config_path = base / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(truncation_side="left", padding_side="left")
    config_path.write_text(json.dumps(config), encoding="utf-8")
    tokenizer = load_tokenizer(resolve_base_model(str(base)))
    text = "the first words stay and the last words of this long review go " * 3
    trained = tokenizer([text, "short"], truncation=True, max_length=8, padding=True)["input_ids"]
    tokenizer.save_pretrained(tmp_path / "version")  # what a version keeps for its replicas
    served = TextTokenizer(tmp_path / "version", max_length_tokens=8)
    ids, _cut = served.encode_ids([text, "short"])
    assert trained[0] == ids[0]
    assert trained[1][: len(ids[1])] == ids[1]  # the tokens first, the padding after them


@pytest.mark.parametrize("strategy", ["frozen", "full"])
def test_max_steps_is_the_runs_length_in_steps_for_every_strategy(
    strategy: str, toy_scenario, tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    """--max-steps past the epochs asked for: full and lora train that many steps (Hugging Face's
    max_steps overrides the epochs), and frozen stopped at its epochs, so `compare` gave the strategies
    different budgets. Now every strategy trains max_steps steps."""
    from training import make_train_config, prepare_data, train

    probe = make_train_config(
        toy_scenario, strategy, base_model=str(tiny_roberta_dir), output_dir=tmp_path / "probe", **FAST
    )
    steps_per_epoch = -(-len(prepare_data(probe).train.texts) // FAST["batch_size"])
    wanted = 2 * steps_per_epoch + 1  # past one epoch, not a whole number of them
    config = make_train_config(
        toy_scenario,
        strategy,
        base_model=str(tiny_roberta_dir),
        output_dir=tmp_path / "run",
        **{**FAST, "num_train_epochs": 1, "max_steps": wanted},
    )
    result = train(config)
    assert max(int(e["step"]) for e in result.log_history if "step" in e) == wanted


@pytest.mark.parametrize("epochs", [0.5, 1.5])
def test_frozen_trains_a_fraction_of_an_epoch_as_that_fraction_of_its_steps(
    epochs: float, toy_scenario, tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    """--epochs 0.5 with --strategy frozen trained a whole epoch (1.5: two), saying nothing. Full and lora
    train ceil(epochs x steps per epoch) steps (Hugging Face's Trainer); the frozen head now trains as many,
    and its last epoch, cut short, is logged as the fraction run."""
    import math

    from training import make_train_config, prepare_data, train
    from training.metrics import epoch_summary

    config = make_train_config(
        toy_scenario,
        "frozen",
        base_model=str(tiny_roberta_dir),
        output_dir=tmp_path / "run",
        **{**FAST, "num_train_epochs": epochs},
    )
    steps_per_epoch = -(-len(prepare_data(config).train.texts) // FAST["batch_size"])
    assert steps_per_epoch % 2  # an odd count: half an epoch is not a whole number of steps
    wanted = math.ceil(epochs * steps_per_epoch)
    result = train(config)
    assert max(int(e["step"]) for e in result.log_history if "step" in e) == wanted
    ran = round(wanted / steps_per_epoch, 2)
    assert result.metrics["head_epochs"] == ran
    assert epoch_summary(result.log_history).endswith(f"of {ran:g} run")


def _tensorboard_steps(folder: Path) -> dict[str, list[int]]:
    """The steps each scalar of a run's tensorboard/ was written at, in the order written."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps: dict[str, list[int]] = {}
    for events in sorted(folder.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            steps.setdefault(tag, []).extend(e.step for e in accumulator.Scalars(tag))
    return steps


def test_frozen_tensorboard_points_are_written_at_the_step_as_the_trainer_writes_them(
    toy_scenario, tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    """The frozen head wrote its TensorBoard points at int(epoch): with --epochs 1.5 its two evaluations
    (epochs 1 and 1.5) fell on the same x. Full and lora (Hugging Face's Trainer) write at global_step;
    frozen now writes at its own optimizer step, so the three strategies' curves share an x-axis."""
    pytest.importorskip("tensorboard")
    from training import make_train_config, train

    curves = {}
    for strategy in ("frozen", "full"):
        config = make_train_config(
            toy_scenario,
            strategy,
            base_model=str(tiny_roberta_dir),
            output_dir=tmp_path / strategy,
            **{**FAST, "num_train_epochs": 1.5},
        )
        result = train(config)
        curves[strategy] = _tensorboard_steps(tmp_path / strategy / "tensorboard")
        logged = [int(e["step"]) for e in result.log_history if "eval_macro_f1" in e]
        assert curves[strategy]["eval/macro_f1"] == logged
    frozen = curves["frozen"]
    for tag in ("train/loss", "train/epoch", "eval/loss", "eval/macro_f1"):
        assert frozen[tag] == sorted(set(frozen[tag])), tag  # distinct, increasing
    assert len(frozen["eval/macro_f1"]) == 2
    assert frozen["eval/macro_f1"] == curves["full"]["eval/macro_f1"]


def test_with_evaluation_by_steps_the_last_step_is_scored_too(
    toy_scenario, tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    """Evaluation every eval_steps left the steps after its last multiple trained and never scored: the
    run's end could never be the kept checkpoint. Five steps, evaluated every two: steps 2, 4 and 5."""
    from training import make_train_config, train

    config = make_train_config(
        toy_scenario,
        "full",
        base_model=str(tiny_roberta_dir),
        output_dir=tmp_path / "run",
        **{**FAST, "max_steps": 5},
    )
    result = train(config)
    scored = [int(e["step"]) for e in result.log_history if "eval_macro_f1" in e]
    assert scored == [2, 4, 5], scored


def test_a_lora_models_parameter_count_is_the_base_and_its_adapters(tiny_roberta_dir: Path) -> None:
    """peft keeps a frozen original beside each module trained in full (the head): it was counted too, so
    every LoRA run's total_params held the head twice."""
    from training.model import build_model, count_params, resolve_base_model

    base = resolve_base_model(str(tiny_roberta_dir))
    _, full_total = count_params(build_model(base, "full", list(LABELS)))
    lora = build_model(base, "lora", list(LABELS))
    adapters = sum(p.numel() for name, p in lora.named_parameters() if "lora_" in name)
    trainable, total = count_params(lora)
    assert adapters > 0 and total == full_total + adapters, (total, full_total, adapters)
    assert trainable < total


@pytest.mark.parametrize(
    ("setting", "value"),
    [("learning_rate", float("inf")), ("num_train_epochs", float("inf")), ("weight_decay", float("inf"))],
)
def test_an_infinite_setting_is_refused_by_name(toy_scenario, setting: str, value: float) -> None:
    """`--learning-rate inf` passed gt=0 and trained (a frozen spam head answered the majority label)."""
    from training import ScenarioConfigError, make_train_config

    with pytest.raises(ScenarioConfigError, match=f"(?s){setting}.*finite"):
        make_train_config(toy_scenario, "full", output_dir="unused", **{setting: value})


def test_an_infinite_search_bound_is_refused() -> None:
    from pydantic import ValidationError

    from training.tuning.space import ParamRange

    with pytest.raises(ValidationError, match="finite"):
        ParamRange(low=1e-5, high=float("inf"), log=True)
