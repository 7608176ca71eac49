"""fp16 for every graph kind, published by the real pipeline and run by the engine on the CPU provider.

A GPU replica serves fp16; this machine has none, so the same fp16 graphs run here on the CPU
provider (slowly, hence a tiny model): each kind must answer like its fp32 twin, and the parity the
export measured against fp32 must be in the manifest / base.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_repository import ModelRepository, base_key, layout
from tests.conftest import write_toy_csv

pytest.importorskip("peft", reason="the training extra is not installed")
pytest.importorskip("onnxruntime", reason="the serving extra is not installed")

TEXTS = ["The film was great today.", "ok", "My order was awful again, I think.", "The flight was listed."]
LABELS = ("positive", "negative", "neutral")


@pytest.fixture(scope="module")
def fp16_repo(tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    """A LoRA and a frozen version, each exported in fp32 and fp16 (graphs, base encoder, shared graph)."""
    from training import custom_scenario, make_train_config, train_and_publish

    work = tmp_path_factory.mktemp("fp16-kinds")
    repo = ModelRepository(work / "repo")
    # frozen first: the base encoder is exported with its head, so base.json holds logit parity too.
    for seed, (name, strategy) in enumerate((("frozen_s", "frozen"), ("lora_s", "lora")), start=1):
        data = work / "data" / name
        write_toy_csv(data / "train.csv", 8, seed=seed, labels=LABELS)
        write_toy_csv(data / "validation.csv", 6, seed=seed + 50, labels=LABELS)
        config = make_train_config(
            custom_scenario(name, list(LABELS), data, max_length_tokens=16),
            strategy,
            base_model=str(tiny_roberta_dir),
            output_dir=work / "runs" / name,
            max_steps=3,
            batch_size=8,
            early_stopping_patience=None,
            learning_rate=5e-2,
            seed=seed,
        )
        train_and_publish(config, repo, export_precisions=["fp32", "fp16"])
    return repo


def _probs(repo: ModelRepository, name: str, precision: str, lora_mode: str) -> tuple[str, np.ndarray]:
    from serving.engine import (
        BaseEncoderCache,
        EngineSettings,
        MultiAdapterCache,
        OnnxEngine,
        Row,
        load_scenario,
    )

    settings = EngineSettings(
        ["CPUExecutionProvider"], [precision], 1, lora_mode=lora_mode, lora_table_rank=8
    )
    loaded = load_scenario(repo, name, 1, settings, BaseEncoderCache(), MultiAdapterCache())
    results = OnnxEngine().classify([Row(loaded, t) for t in TEXTS])
    return loaded.precision, np.stack([r.probs for r in results])


@pytest.mark.parametrize(
    ("name", "lora_mode", "kind"),
    [
        ("lora_s", "merged", "graph"),  # the merged LoRA graph (a full version runs the same path)
        ("lora_s", "shared", "lora"),  # the shared multi-adapter graph
        ("frozen_s", "merged", "base"),  # the shared base encoder + numpy head
    ],
)
def test_each_fp16_graph_kind_answers_like_fp32(
    fp16_repo: ModelRepository, name: str, lora_mode: str, kind: str
) -> None:
    from serving.engine import BaseEncoderCache, EngineSettings, load_scenario

    settings = EngineSettings(["CPUExecutionProvider"], ["fp16"], 1, lora_mode=lora_mode)
    assert load_scenario(fp16_repo, name, 1, settings, BaseEncoderCache()).group_key[0] == kind
    got_precision, fp16 = _probs(fp16_repo, name, "fp16", lora_mode)
    _p, fp32 = _probs(fp16_repo, name, "fp32", lora_mode)
    assert got_precision == "fp16"
    assert np.abs(fp16 - fp32).max() < 0.02
    assert (fp16.argmax(-1) == fp32.argmax(-1)).all()


def test_fp16_parity_is_recorded_for_every_graph_kind(fp16_repo: ModelRepository) -> None:
    for name in ("lora_s", "frozen_s"):
        record = fp16_repo.verify(name, 1).export("fp16")
        assert record is not None and record.parity is not None and record.parity.verified
        assert "CPUExecutionProvider" in (record.parity.note or "")
        assert record.parity.max_abs_logit_diff is not None and record.parity.agreement is not None
    key = fp16_repo.verify("frozen_s", 1).base_encoder.key
    base = fp16_repo.verify_base(key, "fp16")["info"]
    assert base["parity"]["verified"] and base["parity"]["checked_on"] == "CPUExecutionProvider"
    assert {"max_abs_feature_diff", "max_abs_logit_diff", "agreement"} <= set(base["parity"])
    # The frozen head reads the mean-pooling base (`<key>-mean`); the multi-adapter graph adapts the
    # model's own first-token/pooler base, which keeps the plain key.
    lora = fp16_repo.verify("lora_s", 1)
    plain = base_key(lora.base_model)
    assert key == f"{plain}-mean"
    multi = fp16_repo.verify_base(plain, layout.multi_adapter_folder(8, "fp16"))["info"]
    assert multi["graph_precision"] == "fp16" and multi["parity"]["agreement"] >= 0.75
    assert multi["parity"]["checked_on"] == "CPUExecutionProvider"
