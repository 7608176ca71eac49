"""A run folder used again (`labelwise train -o DIR` twice): the weights saved there are the last run's
only, and the size reported is theirs."""

from __future__ import annotations

from pathlib import Path


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
