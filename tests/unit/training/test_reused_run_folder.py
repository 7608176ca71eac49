"""A run folder used again (`labelwise train -o DIR` twice): the weights saved there are the last run's
only, and the size reported is theirs."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_weights_saved_over_another_runs_hold_only_the_new_run(lora_run, frozen_run, tmp_path: Path) -> None:
    from training.publish import save_weights

    folder = tmp_path / "weights"
    save_weights(lora_run, folder)
    assert (folder / "adapter").is_dir()
    size = save_weights(frozen_run, folder)
    # before: the LoRA adapter stayed beside the head, and the size counted both
    assert not (folder / "adapter").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "head.safetensors"]
    assert size == (folder / "head.safetensors").stat().st_size


def test_a_run_into_a_used_folder_starts_without_the_earlier_runs_results(
    toy_scenario, pretrained_base: Path, tmp_path: Path
) -> None:
    """An earlier (or interrupted) run's metrics.json, confusion matrix, weights/ and TensorBoard events are
    gone once a new run starts there: they sat beside the new run's train_config.json as if its own."""
    import json

    from .conftest import _train

    out = tmp_path / "run"
    (out / "weights" / "adapter").mkdir(parents=True)
    (out / "weights" / "adapter" / "adapter_model.safetensors").write_bytes(b"old")
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "events.out.tfevents.old").write_bytes(b"old")
    (out / "metrics.json").write_text(json.dumps({"strategy": "lora"}))
    (out / "notes.txt").write_text("the user's")

    _train(toy_scenario, "frozen", pretrained_base, out, learning_rate=1e-2, num_train_epochs=3)
    assert sorted(p.name for p in out.iterdir()) == [
        "confusion_matrix.png",
        "label_distribution.png",
        "metrics.json",
        "notes.txt",
        "tensorboard",
        "train_config.json",
    ]
    assert json.loads((out / "metrics.json").read_text())["strategy"] == "frozen"
    assert [p.name for p in (out / "tensorboard").iterdir()] != []
    assert not (out / "tensorboard" / "events.out.tfevents.old").exists()


def test_a_compare_that_fails_part_way_leaves_no_earlier_comparison(
    toy_scenario, pretrained_base: Path, tmp_path: Path
) -> None:
    """A compare rerun into the same folder that failed after its first strategy left the earlier
    comparison.md (other runs' figures) beside the new frozen/ run folder."""
    from training import StrategyError, compare_strategies

    from .conftest import FAST

    out = tmp_path / "cmp"
    out.mkdir()
    for name in ("comparison.md", "comparison.json", "comparison.png"):
        (out / name).write_text("an earlier comparison")
    with pytest.raises(StrategyError, match="lora_target_modules"):
        compare_strategies(
            toy_scenario,
            strategies=("frozen", "lora"),
            output_dir=out,
            base_model=str(pretrained_base),
            lora_target_modules=["nope"],  # the lora run fails once frozen has trained
            **{**FAST, "num_train_epochs": 2},
        )
    assert (out / "frozen" / "metrics.json").is_file()
    assert not list(out.glob("comparison.*"))
