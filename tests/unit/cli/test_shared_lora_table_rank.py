"""`labelwise evaluate --lora-mode shared` scores an adapter on the multi-adapter graph that fits its rank:
serving's default table (rank 8) when the adapter fits it, else the graph publish exported for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_repository import ModelRepository, layout
from tests.conftest import write_toy_csv

pytest.importorskip("torch", reason="the training extra is not installed")
pytest.importorskip("onnxruntime", reason="the serving extra is not installed")
pytest.importorskip("optimum", reason="the export extra is not installed")

LABELS = ("positive", "negative", "neutral")


@pytest.fixture(scope="module")
def repo(tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    """lora_r4 v1 (publish exports the base's rank-8 graph) and lora_r16 v1 (its rank-16 graph)."""
    from training import custom_scenario, make_train_config, train_and_publish

    work = tmp_path_factory.mktemp("table-rank")
    repository = ModelRepository(work / "repo")
    for name, rank in (("lora_r4", 4), ("lora_r16", 16)):
        data = work / "data" / name
        write_toy_csv(data / "train.csv", 12, seed=rank, labels=LABELS)
        write_toy_csv(data / "validation.csv", 4, seed=rank + 100, labels=LABELS)
        config = make_train_config(
            custom_scenario(name, list(LABELS), data, max_length_tokens=16, test_fraction=0.25),
            "lora",
            base_model=str(tiny_roberta_dir),
            output_dir=work / "runs" / name,
            max_steps=3,
            batch_size=8,
            early_stopping_patience=None,
            learning_rate=5e-2,  # adapters far from zero: a wrong table would show
            lora_r=rank,
            lora_alpha=2 * rank,
        )
        train_and_publish(config, repository, export_precisions=["fp32"])
    return repository


def test_each_adapter_is_scored_on_the_smallest_graph_that_holds_its_rank(
    repo: ModelRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labelwise.evaluation import evaluate_version
    from training.evaluate import repository_digest

    key = repo.load_manifest("lora_r16", 1).base_encoder.key
    for rank in (8, 16):
        assert repo.has_base(key, layout.multi_adapter_folder(rank, "fp32"))
    monkeypatch.setenv("LABELWISE_RUNS_DIR", str(tmp_path / "runs"))
    for name, table in (("lora_r16", 16), ("lora_r4", 8)):
        merged = evaluate_version(repo, name, split="test", precision="fp32")
        shared = evaluate_version(repo, name, split="test", precision="fp32", lora_mode="shared")
        # the same adapter, as its merged graph answers
        assert shared["accuracy"] == merged["accuracy"] and shared["macro_f1"] == pytest.approx(
            merged["macro_f1"], abs=1e-9
        )
        assert shared["lora_table_rank"] == table and shared["engine_group"] == "lora", shared
        digest = repository_digest(repo.root)
        assert Path(merged["output_dir"]).name == f"evaluate-v1-test-fp32-r{digest}"
        assert Path(shared["output_dir"]).name == f"evaluate-v1-test-fp32-shared-r{digest}"
