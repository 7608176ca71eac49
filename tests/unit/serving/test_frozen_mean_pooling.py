"""Frozen versions serve through the shared base graph + numpy head, with the logits torch computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_repository import ModelRepository, layout

TEXTS = [
    "ok",
    "The film was great today.",
    "My order was awful again, and nobody apologised for it at all this week.",
    "The app was listed by noon.",
]


def _served_logits(rows: list) -> tuple[np.ndarray, list]:
    from serving.engine import OnnxEngine

    outcome = OnnxEngine().run(rows)
    assert not [r for r in outcome.results if isinstance(r, Exception)], outcome.results
    return np.stack([r.logits for r in outcome.results]), outcome.passes


@pytest.mark.parametrize("name", ["frozen_three", "frozen_two"])
def test_frozen_version_serves_the_mean_pooled_torch_logits(
    name: str, published_repo: ModelRepository, loaded_scenarios: dict
) -> None:
    from serving.engine import Row
    from training import load_published_model, predict_logits

    loaded = loaded_scenarios[name]
    manifest = loaded.manifest
    assert manifest.head is not None and manifest.head.kind == "mean_mlp"
    assert loaded.head is not None and loaded.graph is None  # no graph of its own: base + head
    assert manifest.base_encoder is not None and loaded.base_key == manifest.base_encoder.key
    assert loaded.base_key.endswith("-mean")
    model, tokenizer, _ = load_published_model(published_repo, name, 1)
    expected = predict_logits(model, tokenizer, TEXTS, manifest.max_length_tokens)
    served, passes = _served_logits([Row(loaded, text) for text in TEXTS])
    assert [p.group for p in passes] == ["base"]
    assert np.abs(served - expected).max() <= 1e-3  # the export's fp32 parity tolerance
    assert (served.argmax(-1) == expected.argmax(-1)).all()


def test_a_frozen_version_with_an_older_head_kind_still_serves_beside_mean_pooling(
    loaded_scenarios: dict, tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    """A version published before mean pooling (RoBERTa head on the first token, plain base key) keeps
    serving, through its own base graph: the two kinds of base never share a file or a pass."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from model_repository import BaseModelRef, weights_hash
    from serving.engine import BaseEncoderCache, EngineSettings, Row, load_scenario
    from training.export import export_into

    labels = ["positive", "negative", "neutral"]
    torch.manual_seed(3)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_roberta_dir,
        num_labels=3,
        id2label=dict(enumerate(labels)),
        label2id={v: i for i, v in enumerate(labels)},
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_roberta_dir)
    ref = BaseModelRef(
        id=str(tiny_roberta_dir), content_hash=weights_hash(tiny_roberta_dir), architecture="roberta"
    )
    repo = ModelRepository(tmp_path / "repo")
    with repo.new_version(
        "legacy", strategy="frozen", base_model=ref, labels=labels, max_length_tokens=16
    ) as draft:
        tokenizer.save_pretrained(draft.path / layout.TOKENIZER_DIR)
        draft.fields.update(
            export_into(
                draft.path,
                model=model,
                tokenizer=tokenizer,
                strategy="frozen",
                base_model=ref,
                base_model_path=tiny_roberta_dir,
                precisions=["fp32"],
                parity_texts=TEXTS * 4,
                max_length_tokens=16,
                repository=repo,
                say=lambda _m: None,
            )
        )
    settings = EngineSettings(["CPUExecutionProvider"], ["fp32"], intra_op_threads=1)
    legacy = load_scenario(repo, "legacy", 1, settings, BaseEncoderCache())
    mean = loaded_scenarios["frozen_three"]
    assert legacy.manifest.head.kind == "roberta" and legacy.head is not None
    assert legacy.base_key is not None and f"{legacy.base_key}-mean" == mean.base_key
    enc = tokenizer(TEXTS, padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.inference_mode():
        expected = model(**enc).logits.numpy()
    rows = [Row(legacy, t) for t in TEXTS] + [Row(mean, t) for t in TEXTS]
    served, passes = _served_logits(rows)
    assert sorted(p.group for p in passes) == ["base", "base"]  # one pass per kind of base
    assert np.abs(served[: len(TEXTS)] - expected).max() <= 1e-3
