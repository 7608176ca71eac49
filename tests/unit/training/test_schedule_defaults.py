"""Steps that scale with the data (min_train_steps) and the head's own learning rate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training import build_model, load_scenario, make_train_config, resolve_base_model, train
from training.config import StrategyParams
from training.trainer import head_optimizer, planned_epochs


def test_small_train_sets_get_more_epochs_up_to_the_cap() -> None:
    params = StrategyParams(num_train_epochs=3, batch_size=16, min_train_steps=600, max_train_epochs=8)
    assert planned_epochs(params, 1600) == 6.0  # 100 steps an epoch: 6 epochs reach 600 steps
    assert planned_epochs(params, 16000) == 3.0  # 1000 steps an epoch: the 3 epochs already do
    assert planned_epochs(params, 320) == 8.0  # 20 steps an epoch: 30 epochs capped at 8
    assert planned_epochs(StrategyParams(num_train_epochs=2), 100) == 2.0  # no minimum: as configured


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_the_head_trains_at_its_own_learning_rate(strategy: str, pretrained_base: Path, toy_scenario) -> None:
    base = resolve_base_model(str(pretrained_base))
    model = build_model(base, strategy, ["positive", "negative", "neutral"])
    params = StrategyParams(learning_rate=1e-4, head_learning_rate=3e-3, weight_decay=0.01)
    optimizer = head_optimizer(model, params)
    by_id = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    names = {name: by_id.get(id(p)) for name, p in model.named_parameters() if p.requires_grad}
    head = {n: lr for n, lr in names.items() if "classifier" in n}
    rest = {n: lr for n, lr in names.items() if "classifier" not in n}
    assert head and rest
    assert set(head.values()) == {3e-3} and set(rest.values()) == {1e-4}
    assert len(by_id) == len(names)  # every trainable tensor is in exactly one group
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    biases = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("bias")]
    assert biases and all(decay[id(p)] == 0.0 for p in biases)


def test_a_run_with_a_head_learning_rate_moves_the_head_faster(
    toy_scenario, pretrained_base: Path, tmp_path: Path
) -> None:
    def head_shift(head_lr: float | None) -> float:
        config = make_train_config(
            toy_scenario,
            "full",
            base_model=str(pretrained_base),
            output_dir=tmp_path / f"run-{head_lr}",
            learning_rate=1e-5,
            head_learning_rate=head_lr,
            max_steps=4,
            batch_size=8,
            early_stopping_patience=None,
            warmup_ratio=0.0,
            seed=3,
        )
        initial = build_model(resolve_base_model(str(pretrained_base)), "full", toy_scenario.labels, seed=3)
        before = initial.classifier.out_proj.weight.detach().clone()
        after = train(config).model.classifier.out_proj.weight.detach()
        return float(torch.linalg.norm(after - before))

    assert head_shift(1e-2) > 5 * head_shift(None)


def test_packaged_defaults_scale_steps_with_the_data() -> None:
    for name in ("sentiment", "emotion", "intent"):
        scenario = load_scenario(name)
        for strategy in ("full", "lora"):
            assert scenario.strategies[strategy].min_train_steps, (name, strategy)


def test_a_strategy_may_set_its_patience_and_a_run_override_wins() -> None:
    scenario = load_scenario("emotion")
    own = scenario.model_copy(deep=True)
    own.strategies["lora"] = own.strategies["lora"].model_copy(update={"early_stopping_patience": 3})
    own.strategies["full"] = own.strategies["full"].model_copy(update={"early_stopping_patience": None})
    assert make_train_config(own, "lora", output_dir="/tmp/lw-p").early_stopping_patience == 3
    assert make_train_config(own, "full", output_dir="/tmp/lw-p").early_stopping_patience == 2  # the run's
    assert (
        make_train_config(
            own, "lora", output_dir="/tmp/lw-p", early_stopping_patience=0
        ).early_stopping_patience
        == 0
    )
    assert StrategyParams().early_stopping_patience is None
