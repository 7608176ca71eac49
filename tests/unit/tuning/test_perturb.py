"""The perturbation test is deterministic, edits what it says, and scores a published version."""

from __future__ import annotations

import numpy as np
import pytest

from model_repository import ModelRepository
from training import evaluate_published, predict_logits, publish_run
from training.data import load_labeled
from training.tuning import perturb_texts, robustness_of_published

TEXTS = ["The film was great today.", "My order was awful again and again.", "Fine"]


def test_same_seed_same_noise_and_another_seed_differs() -> None:
    texts = TEXTS * 20
    assert perturb_texts(texts, seed=3) == perturb_texts(texts, seed=3)
    assert perturb_texts(texts, seed=3) != perturb_texts(texts, seed=4)
    assert perturb_texts(texts, seed=3) != texts


def test_rates_zero_is_identity_and_drops_keep_one_word() -> None:
    assert perturb_texts(TEXTS, typo_rate=0.0, drop_rate=0.0) == TEXTS
    dropped = perturb_texts(TEXTS * 10, typo_rate=0.0, drop_rate=0.9)
    assert all(t.split() for t in dropped)
    assert sum(len(t.split()) for t in dropped) < sum(len(t.split()) for t in TEXTS * 10)
    with pytest.raises(ValueError, match="drop_rate"):
        perturb_texts(TEXTS, drop_rate=1.0)


def test_robustness_of_a_published_version(fgm_run, toy_data_dir, tmp_path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    version = publish_run(fgm_run, repo, export_precisions=None).version
    data = toy_data_dir / "validation.csv"
    report = robustness_of_published(repo, "toy", data, ref=version, seed=0, typo_rate=0.5, drop_rate=0.2)
    clean = evaluate_published(repo, "toy", data, ref=version, output_dir=tmp_path / "eval")
    assert report.n_rows == clean["n_samples"] == 60
    assert report.clean_accuracy == pytest.approx(clean["accuracy"])
    assert report.adversarial == "fgm" and report.adversarial_epsilon == 1.0
    # The perturbed score is the model's accuracy on exactly the seeded noisy copies of the rows.
    rows, _ = load_labeled(data, fgm_run.config.scenario, fgm_run.labels)
    noisy = perturb_texts(list(rows.texts), seed=0, typo_rate=0.5, drop_rate=0.2)
    assert noisy != list(rows.texts)
    predicted = predict_logits(fgm_run.model, fgm_run.tokenizer, noisy, 24).argmax(-1)
    assert report.perturbed_accuracy == pytest.approx(float(np.mean(predicted == np.asarray(rows.label_ids))))
