"""`labelwise doctor` with lora_mode shared names the multi-adapter graph a LoRA version is really served
from (the loader's own choice), or why the load refuses it; not the version's own exports."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from model_repository import ModelRepository, layout

from .conftest import engine_settings, load_version, publish_tiny

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def repo(tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    """reviews v1, LoRA exported fp32 and int8, whose base lost its int8 multi-adapter graph (a repository
    whose int8 was added by `labelwise export` before that exported the shared graph too)."""
    work = tmp_path_factory.mktemp("doctor-shared")
    repository = ModelRepository(work / "repo")
    publish_tiny(
        repository,
        work,
        tiny_roberta_dir,
        "reviews",
        ("negative", "positive"),
        1,
        precisions=("fp32", "int8"),
    )
    repository.set_alias("reviews", "production", 1)
    key = repository.load_manifest("reviews", 1).base_encoder.key  # type: ignore[union-attr]
    shutil.rmtree(repository.base_path(key, layout.multi_adapter_folder(8, "int8")))
    return repository


def _diagnose(repo: ModelRepository, **fields: object) -> str:
    from labelwise.cli.doctor import diagnose

    report = diagnose({"repository": str(repo.root), "precision": "int8", **fields})
    return report["scenarios"]["reviews"]


def test_doctor_names_the_graph_shared_mode_reads(repo: ModelRepository) -> None:
    loaded = load_version(repo, "reviews", 1, engine_settings("shared", ("int8", "fp32")))
    assert loaded.shared is not None and loaded.precision == "fp32"
    said = _diagnose(repo, lora_mode="shared")
    assert said.startswith(f"v1 lora (shared): fp32 from {loaded.base_key}/{loaded.shared.folder} ")
    assert "adds it, with its base's multi-adapter graph, as a new version" in said
    assert _diagnose(repo).startswith("v1 lora: int8 ")  # merged: the version's own int8 graph


def test_doctor_says_why_a_table_rank_without_a_graph_is_refused(repo: ModelRepository) -> None:
    said = _diagnose(repo, lora_mode="shared", lora_table_rank=16)
    assert said.startswith("v1 lora (shared): refused at load: ")
    assert "no multi-adapter graph of rank 16 (lora_table_rank)" in said
    assert "multi-lora-r8-fp32" in said and "lora_table_rank: 8" in said


def test_doctor_says_a_graph_on_other_targets_refuses_the_adapter(
    tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    """A base whose graph adapts query/value only (exported before the every-projection default): the
    replica refuses an adapter on every projection, and doctor says so, naming the targets; it said the
    version was served from that graph."""
    from serving.errors import ModelLoadError
    from training.multi_adapter import export_multi_adapter_base

    repository = ModelRepository(tmp_path / "repo")
    export_multi_adapter_base(
        repository, tiny_roberta_dir, rank=8, targets=["query", "value"], precisions=["fp32"]
    )
    publish_tiny(repository, tmp_path, tiny_roberta_dir, "reviews", ("negative", "positive"), 2)
    repository.set_alias("reviews", "production", 1)
    with pytest.raises(ModelLoadError, match="LoRA targets") as refused:
        load_version(repository, "reviews", 1, engine_settings("shared"))
    said = _diagnose(repository, lora_mode="shared", precision="fp32")
    assert said == f"v1 lora (shared): refused at load: {refused.value}"


def test_doctor_says_a_shared_graph_that_fails_its_checksum_is_refused(
    tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    """A multi-adapter graph whose bytes no longer match its base.json (a copy cut short, a disk error):
    the replica's verify_base refuses the version, and doctor says so; it read base.json alone and said the
    version was served from that graph."""
    from serving.errors import ModelLoadError

    repository = ModelRepository(tmp_path / "repo")
    publish_tiny(repository, tmp_path, tiny_roberta_dir, "reviews", ("negative", "positive"), 3)
    repository.set_alias("reviews", "production", 1)
    key = repository.load_manifest("reviews", 1).base_encoder.key  # type: ignore[union-attr]
    graph = repository.base_path(key, layout.multi_adapter_folder(8, "fp32")) / layout.MULTI_ADAPTER_FILE
    graph.write_bytes(graph.read_bytes()[:-1])
    with pytest.raises(ModelLoadError, match="failed verification") as refused:
        load_version(repository, "reviews", 1, engine_settings("shared"))
    said = _diagnose(repository, lora_mode="shared", precision="fp32")
    assert said.startswith("v1 lora (shared): refused at load: "), said
    # what the replica says is wrong with the graph (verify_base), after its "failed verification: "
    assert str(refused.value).split("failed verification: ", 1)[1] in said
    assert layout.MULTI_ADAPTER_FILE in said


def test_doctor_does_not_offer_an_export_for_an_int8_its_guard_kept_apart(
    repo: ModelRepository, tmp_path: Path
) -> None:
    """A version whose int8 guard kept nodes fp32 is served from the shared fp32 graph (the shared int8
    graph quantises every MatMul): doctor says why, not to export int8 again, which runs the same guard on
    the same rows; it advised `labelwise export -p int8`, a new version served from fp32 all the same."""
    import json

    from training.multi_adapter import export_multi_adapter_base

    copy = tmp_path / "repo"
    shutil.copytree(repo.root, copy)
    repository = ModelRepository(copy)
    key = repository.load_manifest("reviews", 1).base_encoder.key  # type: ignore[union-attr]
    export_multi_adapter_base(
        repository, repository.load_manifest("reviews", 1).base_model.id, rank=8, precisions=["int8"]
    )
    assert repository.has_base(key, layout.multi_adapter_folder(8, "int8"))
    path = repository.version_path("reviews", 1) / "manifest.json"
    manifest = json.loads(path.read_text())
    for record in manifest["exports"]:
        if record["precision"] == "int8":  # as _guard_int8 records a fallback it published
            record["parity"]["quantization"] = (
                "feed-forward kept fp32 (every MatMul int8: accuracy -2.0 points vs fp32, agreement 0.90)"
            )
    path.write_text(json.dumps(manifest))
    loaded = load_version(repository, "reviews", 1, engine_settings("shared", ("int8", "fp32")))
    assert loaded.precision == "fp32"
    said = _diagnose(repository, lora_mode="shared")
    assert said.startswith(f"v1 lora (shared): fp32 from {key}/multi-lora-r8-fp32 "), said
    assert "labelwise export" not in said, said
    assert "not int8: its int8 guard kept nodes fp32" in said and "lora_mode merged" in said, said
