"""The frozen int8 guard: a head that loses validation accuracy on the shared int8 base reads the fp32
base."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import publish_toy

pytest.importorskip("torch", reason="the training extra is not installed")
pytest.importorskip("onnxruntime", reason="the serving extra is not installed")

LABELS = ("positive", "negative", "neutral")
TEXTS = ["ok", "The film was great today.", "My order was awful again, and nobody said sorry.", "Fine."]


def test_the_frozen_int8_guard_acts_on_validation_accuracy_alone() -> None:
    from training.export.exporter import FROZEN_INT8_MAX_DROP, _frozen_int8_guard
    from training.export.parity import Comparison

    def cmp(delta: float | None, agreement: float = 1.0) -> Comparison:
        return Comparison(n_samples=500, max_abs_diff=0.1, agreement=agreement, accuracy_delta=delta)

    # within the drop: kept on the int8 base, however many labels the base changes
    assert (
        _frozen_int8_guard({"fp32": cmp(0.0), "int8": cmp(-FROZEN_INT8_MAX_DROP, agreement=0.97)}, 500)
        is None
    )
    # over it: the fp32 base, with the figures that decided
    guard = _frozen_int8_guard({"fp32": cmp(0.002), "int8": cmp(-0.006, agreement=0.99)}, 500)
    assert guard is not None and guard["base_folder"] == "fp32"
    assert guard["int8_base_accuracy_drop"] == pytest.approx(0.008)
    assert guard["int8_base_labels_changed"] == 5 and "0.80 points" in guard["choice"]
    # nothing to judge on: no labels, or a precision not exported
    assert _frozen_int8_guard({"fp32": cmp(None), "int8": cmp(None)}, 500) is None
    assert _frozen_int8_guard({"fp32": cmp(0.0)}, 500) is None


def test_a_frozen_head_the_int8_base_fails_serves_int8_from_the_fp32_base(
    tiny_roberta_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving.engine import BaseEncoderCache, EngineSettings, OnnxEngine, Row, load_scenario
    from training.export import exporter

    # Any loss at all counts here (a tiny random encoder gives no reliable drop to catch): the bar is the
    # one setting changed; training, export, the int8 base and the engine are the real ones.
    monkeypatch.setattr(exporter, "FROZEN_INT8_MAX_DROP", -1.0)
    repo, manifest = publish_toy(
        tmp_path, tiny_roberta_dir, "fragile", "frozen", LABELS, ["fp32", "int8"], max_steps=3
    )

    assert manifest.base_encoder is not None and manifest.base_encoder.folder("int8") == "fp32"
    guard = manifest.metrics["int8_head_guard"]
    assert guard["base_folder"] == "fp32" and guard["choice"].startswith("int8 reads the fp32 base")
    assert repo.verify("fragile", manifest.version).base_encoder == manifest.base_encoder

    # An int8 deployment opens the fp32 base for this version and answers exactly what fp32 answers.
    def served(precision: str) -> tuple[np.ndarray, str]:
        settings = EngineSettings(["CPUExecutionProvider"], [precision], intra_op_threads=1)
        loaded = load_scenario(repo, "fragile", manifest.version, settings, BaseEncoderCache())
        outcome = OnnxEngine().run([Row(loaded, t) for t in TEXTS])
        return np.stack([r.logits for r in outcome.results]), loaded.base_folder

    int8_logits, int8_folder = served("int8")
    fp32_logits, fp32_folder = served("fp32")
    assert (int8_folder, fp32_folder) == ("fp32", "fp32")
    assert np.array_equal(int8_logits, fp32_logits)
    # `labelwise evaluate --precision int8` scores that path and says which base it read
    from labelwise.evaluation import engine_logits

    scored, how = engine_logits(repo, manifest, TEXTS, "int8")
    assert how["base_folder"] == "fp32" and np.allclose(scored, fp32_logits, atol=1e-5)
