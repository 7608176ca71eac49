"""FGM/PGD: the perturbed loss is larger, it trains every strategy, and inference never sees it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training import build_model, make_train_config, predict_logits, resolve_base_model
from training.adversarial import adversarial_loss
from training.errors import ScenarioConfigError


def _batch(tokenizer, texts: list[str], labels: list[int]) -> dict[str, torch.Tensor]:
    enc = tokenizer(texts, padding=True, truncation=True, max_length=24, return_tensors="pt")
    return {**enc, "labels": torch.tensor(labels)}


@pytest.mark.parametrize("strategy", ["full", "frozen", "lora"])
@pytest.mark.parametrize("method", ["fgm", "pgd"])
def test_perturbed_loss_exceeds_clean_loss(strategy: str, method: str, tiny_roberta_dir: Path) -> None:
    from transformers import AutoTokenizer

    base = resolve_base_model(str(tiny_roberta_dir))
    model = build_model(base, strategy, ["a", "b", "c"], seed=0)
    model.eval()  # no dropout: the clean and the perturbed pass differ by the perturbation only
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_roberta_dir))
    batch = _batch(tokenizer, ["The film was great today.", "My order was awful again."], [0, 1])

    def loss_fn() -> torch.Tensor:
        return model(**batch).loss

    with torch.no_grad():
        clean = float(loss_fn())
    mixed = adversarial_loss(loss_fn, model, method, epsilon=2.0, pgd_steps=3)
    perturbed = 2 * float(mixed.detach()) - clean
    assert perturbed > clean + 1e-4, (clean, perturbed)
    mixed.backward()  # one backward trains on both passes: the trainable weights get gradients
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)
    if strategy != "full":
        assert model.get_input_embeddings().weight.grad is None  # frozen embeddings stay untouched
    assert not model.get_input_embeddings()._forward_hooks  # the hook lives for one loss only


def test_fgm_changes_the_loss_path(fgm_run, plain_run) -> None:
    plain, fgm = plain_run.train_losses(), fgm_run.train_losses()
    assert len(plain) == len(fgm) >= 3
    assert plain[0] != fgm[0]  # same seed, same first batch: the loss differs by the adversarial half
    assert not np.allclose(plain, fgm)
    assert fgm_run.config.adversarial == "fgm"


def test_fgm_leaves_inference_unchanged(fgm_run) -> None:
    """The trained weights in a fresh model give the same logits and the same validation metrics."""
    from transformers import AutoModelForSequenceClassification

    model = fgm_run.model
    assert all(not m._forward_hooks for m in model.modules())
    fresh = AutoModelForSequenceClassification.from_config(model.config)
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    texts = fgm_run.data.validation.texts
    ours = predict_logits(model, fgm_run.tokenizer, texts, 24)
    theirs = predict_logits(fresh, fgm_run.tokenizer, texts, 24)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    accuracy = float(np.mean(theirs.argmax(-1) == np.asarray(fgm_run.data.validation.label_ids)))
    assert accuracy == pytest.approx(fgm_run.metrics["accuracy"])


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"adversarial": "fgm"}, "needs adversarial_epsilon"),
        ({"adversarial": "pgd", "adversarial_epsilon": 0.0}, "greater than 0"),
        ({"adversarial": "fgm", "adversarial_epsilon": -1.0}, "greater than 0"),
        ({"adversarial": "pgd", "adversarial_epsilon": 1.0, "pgd_steps": 0}, "pgd_steps"),
        ({"adversarial": "fgsm", "adversarial_epsilon": 1.0}, "adversarial"),
    ],
)
def test_bad_adversarial_settings_fail_before_training(tune_scenario, settings: dict, needle: str) -> None:
    with pytest.raises(ScenarioConfigError, match=needle):
        make_train_config(tune_scenario, "lora", output_dir="unused", **settings)
