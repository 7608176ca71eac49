"""The real thing, bounded: MiniLM fine-tuned on a slice of the spam data beats the majority class."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
def test_minilm_on_spam_beats_the_majority_class(
    minilm_dir: Path, shared_data_dir: Path, tmp_path: Path
) -> None:
    from training import make_train_config, train

    if not (shared_data_dir / "spam" / "train.csv").is_file():
        pytest.skip("spam data is absent")
    config = make_train_config(
        "spam",
        "full",
        base_model="minilm",
        data_dir=shared_data_dir,
        max_train_samples=600,
        max_eval_samples=300,
        num_train_epochs=1,
        max_length_tokens=64,
        output_dir=tmp_path / "run",
    )
    run = train(config)
    labels = run.data.validation.label_ids
    majority = max(labels.count(0), labels.count(1)) / len(labels)  # ham: about 0.87
    assert run.metrics["class_weighting"]  # ham:spam is about 6.5:1, above the auto threshold
    assert run.metrics["accuracy"] > majority + 0.05, (run.metrics["accuracy"], majority)
    assert run.metrics["per_class"]["spam"]["recall"] > 0.6
