"""A LoRA version loads without the plain base encoder folders its manifest names (neither lora_mode opens
them: merged runs its own graph, shared the multi-adapter one); a frozen version still verifies its base."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from model_repository import ModelRepository, layout
from serving.errors import ModelLoadError

from .conftest import engine_settings, load_version, publish_tiny

pytest.importorskip("onnxruntime")

LABELS = ("negative", "positive")


@pytest.fixture(scope="module")
def repo(tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    """lora v1 and frozen v1, whose plain fp32 base encoders were then moved away (docs/artifacts.md: how a
    base is rebuilt), the LoRA base's multi-adapter graph kept."""
    work = tmp_path_factory.mktemp("no-plain-base")
    repository = ModelRepository(work / "repo")
    publish_tiny(repository, work, tiny_roberta_dir, "lora", LABELS, 1)
    publish_tiny(
        repository, work, tiny_roberta_dir, "frozen", LABELS, 2, strategy="frozen", learning_rate=1e-2
    )
    for name in ("lora", "frozen"):
        base = repository.load_manifest(name, 1).base_encoder
        assert base is not None and base.graph_folders() == ["fp32"]
        shutil.rmtree(repository.base_path(base.key, "fp32"))
    return repository


@pytest.mark.parametrize("mode", ["merged", "shared"])
def test_a_lora_version_loads_without_the_plain_base(repo: ModelRepository, mode: str) -> None:
    loaded = load_version(repo, "lora", 1, engine_settings(mode))
    assert loaded.precision == "fp32"
    if mode == "shared":
        assert loaded.shared is not None and loaded.shared.folder == layout.multi_adapter_folder(8, "fp32")


def test_a_frozen_version_still_verifies_its_base(repo: ModelRepository) -> None:
    with pytest.raises(ModelLoadError, match=r"frozen v1 failed verification: base encoder .* has no fp32"):
        load_version(repo, "frozen", 1, engine_settings("merged"))
