"""lora_mode shared: a multi-adapter graph no scenario is on is not kept open (a base encoder session)."""

from __future__ import annotations

import gc
import shutil
import weakref
from pathlib import Path

import numpy as np
import pytest

from model_repository import ModelRepository

from .conftest import engine_settings, load_version, publish_tiny

TEXT = "the app was brilliant"


@pytest.fixture(scope="module")
def repo(tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    """lora_two v1 (LoRA: its base's multi-adapter graph is exported) and v2 (full), keep_listed v1 (full)."""
    pytest.importorskip("onnxruntime", reason="the serving extra is not installed")
    work = tmp_path_factory.mktemp("shared-lora-mends")
    repository = ModelRepository(work / "repo")
    labels = ("negative", "positive")
    assert publish_tiny(repository, work, tiny_roberta_dir, "lora_two", labels, 1) == 1
    assert publish_tiny(repository, work, tiny_roberta_dir, "lora_two", labels, 2, strategy="full") == 2
    publish_tiny(repository, work, tiny_roberta_dir, "keep_listed", labels, 3, strategy="full")
    return repository


def _copy(repo: ModelRepository, tmp_path: Path) -> ModelRepository:
    shutil.copytree(repo.root, tmp_path / "repo")
    return ModelRepository(tmp_path / "repo")


def _answers_as_merged(repo: ModelRepository, bound) -> None:
    """A row bound to a shared version still gets its own adapter's answer."""
    from serving.engine import OnnxEngine, Row

    engine = OnnxEngine()
    got = engine.classify([Row(bound, TEXT)])[0]
    merged = load_version(repo, bound.name, bound.version, engine_settings("merged"))
    np.testing.assert_allclose(got.probs, engine.classify([Row(merged, TEXT)])[0].probs, atol=1e-5)


@pytest.mark.parametrize("how", ["promoted to a full version", "removed from the repository"])
def test_a_graph_whose_last_scenario_leaves_is_released_once_no_row_holds_it(
    repo: ModelRepository, tmp_path: Path, how: str
) -> None:
    from serving.engine import ScenarioRegistry

    copy = _copy(repo, tmp_path)
    copy.set_alias("lora_two", "production", 1)
    copy.set_alias("keep_listed", "production", 1)  # serve-all: the repository never lists nothing
    promoted = how.startswith("promoted")
    registry = ScenarioRegistry(
        copy, {"lora_two": "production"} if promoted else None, "production", engine_settings("shared")
    )
    registry.poll_once()
    bound = registry.get("lora_two")  # a request bound to v1 before it leaves the table
    graph = weakref.ref(bound.shared)
    if promoted:
        copy.set_alias("lora_two", "production", 2)
    else:
        shutil.rmtree(copy.scenario_path("lora_two"))
    registry.poll_once()
    if promoted:
        assert registry.get("lora_two").shared is None and registry.get("lora_two").version == 2
    else:
        assert "lora_two" not in registry.served()
    assert graph() is not None and graph().hosted == {}  # the bound row still holds it ...
    _answers_as_merged(repo, bound)  # ... and is still answered, with its own adapter
    del bound
    gc.collect()
    assert graph() is None  # nothing else holds the session: the replica's cache dropped it


def test_a_version_the_graph_refuses_opens_no_session(
    tiny_roberta_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The adapter is checked against the graph's base.json before any session is opened."""
    import onnxruntime

    from serving.engine import MultiAdapterCache
    from serving.errors import ModelLoadError
    from training.multi_adapter import export_multi_adapter_base

    repository = ModelRepository(tmp_path / "repo")
    export_multi_adapter_base(
        repository, tiny_roberta_dir, rank=8, targets=["query", "value"], precisions=["fp32"]
    )
    publish_tiny(repository, tmp_path, tiny_roberta_dir, "lora_two", ("negative", "positive"), 1)
    opened: list[str] = []

    class CountedSession(onnxruntime.InferenceSession):
        def __init__(self, path, *args, **kwargs) -> None:
            opened.append(str(path))
            super().__init__(path, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", CountedSession)
    cache = MultiAdapterCache()
    with pytest.raises(ModelLoadError, match=r"lora_two v1: LoRA targets .*the graph adapts"):
        load_version(repository, "lora_two", 1, engine_settings("shared"), cache)
    assert opened == []


def test_a_released_graph_takes_no_new_row_and_the_cache_opens_it_again(
    repo: ModelRepository,
) -> None:
    from serving.engine import MultiAdapterCache
    from serving.errors import ModelLoadError

    cache = MultiAdapterCache()
    loaded = load_version(repo, "lora_two", 1, engine_settings("shared"), cache)
    old = loaded.shared
    cache.release(old, "keep_listed")  # not on it: the graph still hosts lora_two and stays
    assert (
        not old.released and load_version(repo, "lora_two", 1, engine_settings("shared"), cache).shared is old
    )
    cache.release(old, "lora_two")
    assert old.released and old.table is None
    with pytest.raises(ModelLoadError, match="was released"):
        old.install("lora_two", 1, loaded.adapter)
    again = load_version(repo, "lora_two", 1, engine_settings("shared"), cache)
    assert again.shared is not old and again.shared.hosted == {"lora_two": 1}
    _answers_as_merged(repo, loaded)  # a row bound to the released graph still runs on it
