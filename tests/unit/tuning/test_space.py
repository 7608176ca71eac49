"""Bad search spaces and tune settings fail with one clear message before any trial runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from training import ScenarioConfigError, custom_scenario, load_scenario
from training.tuning import SearchSpace, TuningError, default_search_space, run_study


@pytest.mark.parametrize(
    ("space", "needle"),
    [
        ({"learning_rate": {"low": 1e-3, "high": 1e-5}}, "empty or inverted range"),
        ({"weight_decay": {"low": 0.1, "high": 0.1}}, "empty or inverted range"),
        ({"batch_size": {"choices": []}}, "choices is empty"),
        ({"momentum": {"low": 0.1, "high": 0.9}}, r"unknown search parameter\(s\) \['momentum'\]"),
        ({"learning_rate": {"low": 0.0, "high": 1e-3, "log": True}}, "log range needs low > 0"),
        ({"batch_size": {"low": 8, "high": 32.5}}, "batch_size is an integer"),
        ({"learning_rate": {"low": 1e-5}}, "needs both low and high"),
        ({}, "search space is empty"),
    ],
)
def test_bad_space_is_refused(space: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        SearchSpace.model_validate(space)


def test_scenario_yaml_with_a_bad_space_names_the_file(tmp_path: Path) -> None:
    raw = yaml.safe_load(Path(load_scenario.__globals__["SCENARIOS_DIR"], "spam.yaml").read_text())
    raw["search_space"] = {"learning_rate": {"low": 1e-2, "high": 1e-4, "log": True}}
    path = tmp_path / "spam.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ScenarioConfigError, match=r"(?s)spam\.yaml.*empty or inverted range"):
        load_scenario(path)


def test_packaged_scenarios_declare_valid_spaces() -> None:
    for name in ("spam", "sentiment"):
        space = load_scenario(name).search_space
        assert space is not None and "learning_rate" in space.ranges("lora")


def test_lora_dimensions_apply_to_lora_only() -> None:
    space = default_search_space()
    assert "lora_r" in space.ranges("lora")
    assert "lora_r" not in space.ranges("full")


def test_frozen_searches_no_epochs_its_head_keeps_the_best_of_many() -> None:
    space = default_search_space()
    assert "num_train_epochs" in space.ranges("full") and "num_train_epochs" in space.ranges("lora")
    assert "num_train_epochs" not in space.ranges("frozen") and "learning_rate" in space.ranges("frozen")


def test_frozen_searches_no_warmup_its_head_has_none() -> None:
    space = SearchSpace(
        learning_rate={"low": 1e-4, "high": 1e-2, "log": True}, warmup_ratio={"low": 0, "high": 0.2}
    )
    assert "warmup_ratio" in space.ranges("full") and "warmup_ratio" in space.ranges("lora")
    assert set(space.ranges("frozen")) == {"learning_rate"}


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"trials": 0}, "--trials must be at least 1"),
        ({"trials": 2, "timeout_s": 0}, "--timeout-s must be > 0"),
        ({"trials": 2, "pruner": "percentile"}, "--pruner: unknown pruner 'percentile'"),
        ({"trials": 2, "evals_per_epoch": 0}, "--evals-per-epoch must be at least 1"),
        ({"trials": 2, "study_name": "../x"}, r"--study-name '\.\./x'"),
    ],
)
def test_bad_tune_settings_fail_before_any_trial(kwargs: dict, needle: str, toy_data_dir, tmp_path) -> None:
    scenario = custom_scenario("toy", ["positive", "negative", "neutral"], toy_data_dir)
    with pytest.raises(TuningError, match=needle):
        run_study(scenario, "full", output_dir=tmp_path / "study", say=lambda line: None, **kwargs)
    assert not (tmp_path / "study").exists()


def test_space_without_a_dimension_for_the_strategy(toy_data_dir, tmp_path) -> None:
    scenario = custom_scenario(
        "toy", ["positive", "negative", "neutral"], toy_data_dir, search_space={"lora_r": {"choices": [4, 8]}}
    )
    with pytest.raises(TuningError, match="no dimension for strategy 'full'"):
        run_study(scenario, "full", trials=1, output_dir=tmp_path / "study", say=lambda line: None)
    assert not (tmp_path / "study").exists()


def test_a_frozen_space_of_epochs_and_warmup_says_frozen_searches_neither(toy_data_dir, tmp_path) -> None:
    """It said only "LoRA ones apply to lora only", of a space that declares no LoRA dimension."""
    space = {"num_train_epochs": {"low": 1, "high": 3, "step": 1}, "warmup_ratio": {"low": 0.0, "high": 0.2}}
    scenario = custom_scenario("toy", ["positive", "negative", "neutral"], toy_data_dir, search_space=space)
    with pytest.raises(TuningError) as caught:
        run_study(scenario, "frozen", trials=1, output_dir=tmp_path / "study", say=lambda line: None)
    assert "no dimension for strategy 'frozen'" in str(caught.value)
    assert "frozen searches none of ['num_train_epochs', 'warmup_ratio']" in str(caught.value)
    assert not (tmp_path / "study").exists()


def test_space_values_outside_the_strategy_limits(toy_data_dir, tmp_path) -> None:
    scenario = custom_scenario(
        "toy",
        ["positive", "negative", "neutral"],
        toy_data_dir,
        search_space={"warmup_ratio": {"low": 0.1, "high": 1.5}},
    )
    with pytest.raises(TuningError, match=r"search_space\.warmup_ratio: value 1\.5"):
        run_study(scenario, "full", trials=1, output_dir=tmp_path / "study", say=lambda line: None)


def test_the_default_trial_runs_the_nearest_choice_for_a_default_outside_them_and_names_it() -> None:
    """Every packaged frozen block trains at batch_size 64 while the default space offers 8/16/32: Optuna
    cannot run 64, and drawing one at random would report a random run as the default."""
    from training import make_train_config
    from training.tuning.study import _default_values

    config = make_train_config("spam", "frozen", output_dir=Path("unused"))
    assert config.params.batch_size == 64
    ranges = default_search_space().ranges("frozen")
    assert [float(c) for c in ranges["batch_size"].choices] == [8.0, 16.0, 32.0]
    values, outside = _default_values(ranges, config.params)
    assert values["batch_size"] == 32 and outside == {"batch_size": 64}
    assert values["learning_rate"] == config.params.learning_rate  # a range keeps the strategy's own value
    inside = SearchSpace.model_validate({"batch_size": {"choices": [32, 64]}}).ranges("frozen")
    assert _default_values(inside, config.params) == ({"batch_size": 64}, {})


@pytest.mark.parametrize(
    ("space", "needle"),
    [
        # bool is an int to pydantic: a step of 1 and choices of 1 and 4, said nowhere
        ({"learning_rate": {"low": 1e-3, "high": 2.0, "step": True}}, "step true: a boolean where a number"),
        ({"lora_r": {"choices": [True, 4]}}, r"choices\[0\] true: a boolean where a number goes; give a"),
        ({"lora_r": {"low": False, "high": 8}}, "low false: a boolean where a number goes; give a number"),
    ],
)
def test_a_boolean_for_a_number_is_refused_naming_it(tmp_path: Path, space: dict, needle: str) -> None:
    path = tmp_path / "tickets.yaml"
    path.write_text(yaml.safe_dump({"name": "tickets", "labels": ["a", "b"], "search_space": space}))
    with pytest.raises(ScenarioConfigError, match=needle):
        load_scenario(path)
    assert SearchSpace.model_validate({"lora_r": {"choices": [2, 4]}}).lora_r.choices == [2, 4]
