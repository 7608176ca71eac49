"""Each strategy trains what it should, and what it publishes reloads to the same model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model_repository import ModelRepository
from training import (
    build_model,
    load_published_model,
    predict_logits,
    publish_run,
    resolve_base_model,
    save_weights,
)


def _loss_falls(run) -> tuple[float, float]:
    losses = run.train_losses()
    assert len(losses) >= 6, losses
    return float(np.mean(losses[:3])), float(np.mean(losses[-3:]))


@pytest.mark.parametrize("name", ["full_run", "frozen_run", "lora_run"])
def test_loss_falls_and_validation_beats_chance(name: str, request: pytest.FixtureRequest) -> None:
    run = request.getfixturevalue(name)
    first, last = _loss_falls(run)
    assert last < 0.8 * first, (first, last)
    assert run.metrics["accuracy"] > 0.6  # 3 balanced classes: chance is 0.33
    assert set(run.metrics["per_class"]) == {"positive", "negative", "neutral"}
    assert run.train_time_s > 0


def test_frozen_changes_only_head_weights(frozen_run, pretrained_base: Path) -> None:
    base = resolve_base_model(str(pretrained_base))
    fresh = build_model(base, "frozen", frozen_run.labels, seed=frozen_run.config.seed)
    initial, trained = fresh.state_dict(), frozen_run.model.state_dict()
    encoder = [k for k in initial if k.startswith("encoder.")]
    head = [k for k in initial if k.startswith("classifier.")]  # weights + standardisation buffers
    assert encoder and head and len(encoder) + len(head) == len(initial)
    assert not [k for k in encoder if "pooler" in k]  # the mean replaces the pooler
    assert all(torch.equal(initial[k], trained[k]) for k in encoder)
    assert all(not torch.equal(initial[k], trained[k]) for k in head)
    assert frozen_run.trainable_params == sum(p.numel() for p in fresh.classifier.parameters())


def _masked_mean_by_hand(encoder, tokenizer, texts: list[str]) -> torch.Tensor:
    """Each text alone (no padding at all): the plain mean of its token states."""
    rows = []
    with torch.inference_mode():
        for text in texts:
            enc = tokenizer(text, return_tensors="pt", truncation=True, max_length=32)
            rows.append(encoder(**enc).last_hidden_state[0].mean(dim=0))
    return torch.stack(rows)


def test_frozen_reads_the_masked_mean_of_the_last_hidden_state(frozen_run) -> None:
    """Not the pooler, not the first token: the logits are the head on the mean of the real tokens."""
    model, tokenizer = frozen_run.model, frozen_run.tokenizer
    texts = ["ok", *frozen_run.data.validation.texts[:7], "a much longer sentence " * 5]
    expected_features = _masked_mean_by_hand(model.encoder, tokenizer, texts)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    assert int(batch["attention_mask"].sum()) < batch["attention_mask"].numel()  # the batch pads
    with torch.inference_mode():
        features = model.features(**batch)
        logits = model(**batch).logits
        first_token = model.encoder(**batch).last_hidden_state[:, 0]
    torch.testing.assert_close(features, expected_features, atol=1e-5, rtol=1e-4)
    assert (features - first_token).abs().max() > 1e-2
    head = model.classifier
    unit = torch.nn.functional.normalize(expected_features, dim=-1)
    z = (unit - head.mean) / head.scale
    by_hand = torch.relu(z @ head.dense.weight.T + head.dense.bias) @ head.out_proj.weight.T
    torch.testing.assert_close(logits, by_hand + head.out_proj.bias, atol=1e-5, rtol=1e-4)


def test_frozen_trains_the_head_on_embeddings_computed_once(frozen_run) -> None:
    from training.frozen import MeanPoolingClassifier

    assert isinstance(frozen_run.model, MeanPoolingClassifier)
    evaluations = [e for e in frozen_run.log_history if "eval_macro_f1" in e]
    epochs, best_epoch = frozen_run.metrics["head_epochs"], frozen_run.metrics["head_best_epoch"]
    assert len(evaluations) == epochs and [e["epoch"] for e in evaluations] == list(range(1, epochs + 1))
    # Early stopping counts epochs: 10 per unit of patience (the default 2), or all 30 epochs ran.
    assert epochs == 30 or epochs - best_epoch == 20
    best = max(e["eval_macro_f1"] for e in evaluations)
    assert frozen_run.metrics["macro_f1"] == pytest.approx(best, abs=1e-9)  # the best head is kept
    # ... and among the epochs of that macro-F1, the one of lowest validation loss
    tied = [e for e in evaluations if e["eval_macro_f1"] == best]
    assert best_epoch == min(tied, key=lambda e: (e["eval_loss"], e["epoch"]))["epoch"]
    assert frozen_run.metrics["eval_loss"] == pytest.approx(min(e["eval_loss"] for e in tied), rel=1e-5)
    assert {"decision_threshold", "eval_loss", "class_weighting", "confusion_matrix", "embed_time_s"} <= set(
        frozen_run.metrics
    )
    run_dir = Path(frozen_run.config.output_dir)
    assert (run_dir / "metrics.json").is_file() and (run_dir / "confusion_matrix.png").is_file()


def test_frozen_refuses_adversarial_training(toy_scenario, pretrained_base: Path, tmp_path: Path) -> None:
    from training import StrategyError, make_train_config, train

    config = make_train_config(
        toy_scenario,
        "frozen",
        base_model=str(pretrained_base),
        output_dir=tmp_path,
        adversarial="fgm",
        adversarial_epsilon=1.0,
    )
    with pytest.raises(StrategyError, match="adversarial"):
        train(config)


def test_lora_leaves_base_weights_unchanged(lora_run, pretrained_base: Path) -> None:
    from transformers import RobertaModel

    original = RobertaModel.from_pretrained(str(pretrained_base), add_pooling_layer=False).state_dict()
    inner = lora_run.model.get_base_model().state_dict()
    compared = 0
    for name, value in original.items():
        key = f"roberta.{name}"
        key = (
            key
            if key in inner
            else key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        )
        assert torch.equal(value, inner[key]), name
        compared += 1
    assert compared == len(original)
    lora_names = [n for n, p in lora_run.model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in lora_names) and any("modules_to_save" in n for n in lora_names)
    assert lora_run.trainable_params == sum(p.numel() for p in lora_run.model.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def published(full_run, frozen_run, lora_run, tmp_path_factory: pytest.TempPathFactory):
    repo = ModelRepository(tmp_path_factory.mktemp("repo"))
    return repo, {
        run.config.strategy: publish_run(run, repo, export_precisions=[])
        for run in (full_run, frozen_run, lora_run)
    }


@pytest.mark.parametrize("strategy", ["full", "frozen", "lora"])
def test_published_version_verifies_and_reloads_to_identical_logits(
    strategy: str, published, request: pytest.FixtureRequest
) -> None:
    repo, manifests = published
    manifest = manifests[strategy]
    run = request.getfixturevalue(f"{strategy}_run")
    assert repo.verify("toy", manifest.version) == manifest
    assert manifest.strategy == strategy
    assert manifest.labels == ["positive", "negative", "neutral"]
    assert manifest.base_model.content_hash == run.base.content_hash
    assert manifest.trainable_params == run.trainable_params and manifest.total_params == run.total_params
    assert manifest.metrics["macro_f1"] == run.metrics["macro_f1"]
    assert manifest.training_config["strategy"] == strategy
    assert "tokenizer/tokenizer.json" in manifest.files
    weights = [f for f in manifest.files if f.startswith("weights/")]
    assert not [f for f in weights if f.endswith((".bin", ".pt", ".pth"))]
    expected = {
        "full": "weights/model.safetensors",
        "frozen": "weights/head.safetensors",
        "lora": "weights/adapter/adapter_model.safetensors",
    }[strategy]
    assert expected in weights

    model, tokenizer, _ = load_published_model(repo, "toy", manifest.version)
    texts = run.data.validation.texts[:16]
    before = predict_logits(run.model, run.tokenizer, texts, 32)
    after = predict_logits(model, tokenizer, texts, 32)
    np.testing.assert_allclose(after, before, atol=1e-5)


def test_artifact_sizes_follow_the_strategy(full_run, frozen_run, lora_run, tmp_path: Path) -> None:
    sizes = {
        r.config.strategy: save_weights(r, tmp_path / r.config.strategy)
        for r in (full_run, frozen_run, lora_run)
    }
    assert sizes["frozen"] < sizes["lora"] < sizes["full"]


def test_a_failing_publish_leaves_no_version(frozen_run, tmp_path: Path) -> None:
    from training import TrainingError, export_available

    repo = ModelRepository(tmp_path / "repo")
    if export_available():
        from training.export import ExportError

        expected: tuple[type[Exception], ...] = (ExportError, ValueError)
    else:
        expected = (TrainingError,)
    with pytest.raises(expected):
        publish_run(frozen_run, repo, export_precisions=["fp64"])
    assert repo.list_scenarios() == []
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "repo").rglob("*"))


def test_evaluate_published_matches_training_metrics(
    published, lora_run, toy_data_dir: Path, tmp_path: Path
) -> None:
    from training import evaluate_published

    repo, manifests = published
    metrics = evaluate_published(
        repo, "toy", toy_data_dir / "validation.csv", ref=manifests["lora"].version, output_dir=tmp_path
    )
    assert metrics["n_samples"] == len(lora_run.data.validation)
    assert metrics["accuracy"] == pytest.approx(lora_run.metrics["accuracy"])
    assert metrics["macro_f1"] == pytest.approx(lora_run.metrics["macro_f1"])
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0


def test_comparison_table_and_chart(full_run, frozen_run, lora_run, tmp_path: Path) -> None:
    from training import ComparisonRow, comparison_markdown
    from training.plots import plot_comparison

    rows = [
        ComparisonRow(
            r.config.strategy,
            r.metrics["accuracy"],
            r.metrics["macro_f1"],
            r.train_time_s,
            r.trainable_params,
            r.total_params,
            save_weights(r, tmp_path / r.config.strategy),
        )
        for r in (full_run, frozen_run, lora_run)
    ]
    table = comparison_markdown(rows, "toy")
    assert table.count("\n| ") == 4  # header + one row per strategy
    assert f"| frozen | {frozen_run.metrics['accuracy']:.4f} |" in table
    png = plot_comparison([r.as_dict() for r in rows], tmp_path / "comparison.png", "toy")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_single_epoch_run_is_scored_once_without_checkpoints(
    toy_scenario, pretrained_base: Path, tmp_path
) -> None:
    from training import make_train_config, train

    config = make_train_config(
        toy_scenario,
        "lora",  # the Trainer's single pass (frozen trains its head without the Trainer)
        base_model=str(pretrained_base),
        output_dir=tmp_path / "run",
        num_train_epochs=1,
        learning_rate=1e-2,
        batch_size=8,
    )
    run = train(config)
    assert not [e for e in run.log_history if "eval_loss" in e]  # no in-loop evaluation
    assert run.metrics["n_samples"] == len(run.data.validation) and run.metrics["accuracy"] > 0.4
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {
        "metrics.json",
        "confusion_matrix.png",
        "label_distribution.png",
        "tensorboard",
    }


def test_the_head_early_stops_on_the_macro_f1_the_run_reports() -> None:
    """The per-epoch macro-F1 (numpy) is classification_metrics' (macro over the classes present)."""
    from training import classification_metrics
    from training.frozen import macro_f1

    rng = np.random.default_rng(0)
    gold = rng.choice([0, 1, 3], size=200)  # class 2 absent from the reference
    predicted = rng.integers(0, 4, size=200)
    expected = classification_metrics(gold, predicted, ["a", "b", "c", "d"])["macro_f1"]
    assert macro_f1(gold, predicted, 4) == pytest.approx(expected, abs=1e-12)
