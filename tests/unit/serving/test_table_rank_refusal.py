"""An adapter of LoRA rank above serving's lora_table_rank: the refusal names its rank, the multi-adapter
graphs its base has and the lora_table_rank that serves it; that setting then serves it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_repository import (
    AdapterEntry,
    AdapterMismatchError,
    GraphSpec,
    ModelRepository,
    check_adapter,
    layout,
)
from serving.errors import ModelLoadError

from .conftest import engine_logits, engine_settings, load_version, publish_tiny

pytest.importorskip("onnxruntime")

LABELS = ("negative", "positive")
TEXTS = ["the film was great today", "my order was awful again", "ok"]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("table-rank")


@pytest.fixture(scope="module")
def repo(tiny_roberta_dir: Path, work: Path) -> ModelRepository:
    """wide v1: a LoRA of rank 16 (publish exports the base's rank-16 multi-adapter graph, none of rank 8)."""
    repository = ModelRepository(work / "repo")
    publish_tiny(repository, work, tiny_roberta_dir, "wide", LABELS, 3, lora_r=16, lora_alpha=32)
    return repository


def test_the_refusals_name_the_rank_the_graphs_and_the_setting(
    repo: ModelRepository, tiny_roberta_dir: Path, work: Path
) -> None:
    """In order, on one repository: first no graph of the table rank at all, then one too small."""
    _no_graph_of_the_table_rank(repo)
    _a_graph_of_the_table_rank_too_small(repo, tiny_roberta_dir, work)


def _no_graph_of_the_table_rank(repo: ModelRepository) -> None:
    with pytest.raises(ModelLoadError) as refused:
        load_version(repo, "wide", 1, engine_settings("shared"))
    message = str(refused.value)
    assert "no multi-adapter graph of rank 8 (lora_table_rank)" in message
    assert "LoRA rank 16" in message
    assert "the base's multi-adapter graphs: multi-lora-r16-fp32" in message
    assert "set lora_table_rank: 16" in message
    served = load_version(repo, "wide", 1, engine_settings("shared", table_rank=16))
    assert served.shared is not None and served.shared.folder == layout.multi_adapter_folder(16, "fp32")
    merged = load_version(repo, "wide", 1, engine_settings("merged"))
    assert np.abs(engine_logits(served, TEXTS) - engine_logits(merged, TEXTS)).max() < 1e-4


def _a_graph_of_the_table_rank_too_small(repo: ModelRepository, tiny_roberta_dir: Path, work: Path) -> None:
    publish_tiny(repo, work, tiny_roberta_dir, "narrow", LABELS, 4)  # rank 8: the base's rank-8 graph
    key = repo.load_manifest("wide", 1).base_encoder.key  # type: ignore[union-attr]
    assert repo.has_base(key, layout.multi_adapter_folder(8, "fp32"))
    with pytest.raises(ModelLoadError) as refused:
        load_version(repo, "wide", 1, engine_settings("shared"))
    message = str(refused.value)
    assert (
        "LoRA rank 16, which exceeds the graph's table rank 8 (multi-lora-r8-fp32: lora_table_rank)"
        in message
    )
    assert "multi-lora-r8-fp32, multi-lora-r16-fp32" in message
    assert "set lora_table_rank: 16" in message
    # The graph's own check says the same to a caller feeding it directly.
    spec = GraphSpec.from_json(repo.verify_base(key, layout.multi_adapter_folder(8, "fp32"))["info"]["spec"])
    folder = repo.version_path("wide", 1)
    with np.load(folder / layout.LORA_FILE) as lora, np.load(folder / layout.HEAD_FILE) as head:
        entry = AdapterEntry("wide v1", key, "roberta", dict(lora), dict(head))
    with pytest.raises(AdapterMismatchError, match=r"exceeds the graph's table rank 8.*lora_table_rank"):
        check_adapter(spec, entry)


def test_a_version_refused_for_a_thousand_polls_still_waits_its_hour(repo: ModelRepository) -> None:
    """The wait doubles per refusal up to an hour: at the 1,025th, 2**1024 overflowed a float, the wait was
    never set, and the refused version was loaded again at every poll with OverflowError as its error."""
    import time

    from serving.engine import ScenarioRegistry
    from serving.engine.registry import MAX_REFUSAL_RETRY_S

    registry = ScenarioRegistry(repo, {"wide": "1"}, "production", engine_settings("shared"))
    (event,) = registry.poll_once()
    state = registry._states["wide"]
    assert event.refused and state.refusals == 1
    state.refusals, state.refused_until = 1024, 0.0  # as after ~42 days of hourly retries
    (event,) = registry.poll_once()
    assert event.refused and state.refusals == 1025
    assert state.refused_until - time.monotonic() > MAX_REFUSAL_RETRY_S - 60
    assert "lora_table_rank" in (state.last_error or ""), state.last_error
    assert registry.poll_once() == []  # waiting: not loaded again at the next poll


def test_a_graph_in_a_precision_outside_the_order_is_named_not_exported_again(repo: ModelRepository) -> None:
    """int8 asked for, the version's shared graph only in fp32: the refusal said to export the graph that
    was already there (`labelwise evaluate --lora-mode shared --precision int8` showed it)."""
    with pytest.raises(ModelLoadError) as refused:
        load_version(repo, "wide", 1, engine_settings("shared", precisions=("int8",), table_rank=16))
    message = str(refused.value)
    assert "multi-lora-r16-int8 (not exported in int8)" in message
    assert "serve it in fp32 from multi-lora-r16-fp32" in message and "--precision fp32" in message
    assert "export its base's" not in message


def test_the_refusal_names_the_graph_the_replicas_precision_order_serves_from(
    tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    """On a CPU replica (int8 first) the fix named the rank-16 fp32 graph (sorted by name), while the rank
    it advised then served the int8 one."""
    repository = ModelRepository(tmp_path / "repo")
    publish_tiny(repository, tmp_path, tiny_roberta_dir, "wide", LABELS, 5, lora_r=16, lora_alpha=32,
                 precisions=("fp32", "int8"))  # fmt: skip
    order = ("int8", "fp32")
    with pytest.raises(ModelLoadError) as refused:
        load_version(repository, "wide", 1, engine_settings("shared", precisions=order))
    assert "set lora_table_rank: 16" in str(refused.value)
    assert "to serve it from multi-lora-r16-int8" in str(refused.value), str(refused.value)
    served = load_version(repository, "wide", 1, engine_settings("shared", precisions=order, table_rank=16))
    assert served.shared is not None and served.shared.folder == layout.multi_adapter_folder(16, "int8")


@pytest.mark.parametrize("size", [1, 3])
def test_a_scaling_array_that_is_not_one_value_a_layer_is_refused_by_name(
    repo: ModelRepository, size: int
) -> None:
    """A one-value array was broadcast to every layer; a longer one raised numpy's broadcast error."""
    key = repo.load_manifest("wide", 1).base_encoder.key  # type: ignore[union-attr]
    spec = GraphSpec.from_json(repo.verify_base(key, layout.multi_adapter_folder(16, "fp32"))["info"]["spec"])
    folder = repo.version_path("wide", 1)
    with np.load(folder / layout.LORA_FILE) as lora, np.load(folder / layout.HEAD_FILE) as head:
        arrays = dict(lora)
        entry_head = dict(head)
    proj = next(k.removesuffix(".scaling") for k in arrays if k.endswith(".scaling"))
    arrays[f"{proj}.scaling"] = np.full(size, 2.0, dtype=np.float32)
    entry = AdapterEntry("wide v1", key, "roberta", arrays, entry_head)
    with pytest.raises(AdapterMismatchError, match=rf"{proj}\.scaling holds {size} value\(s\) for 2 layers"):
        check_adapter(spec, entry)


def test_a_missing_graph_of_the_table_rank_is_offered_as_a_call_that_works(
    tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    """A rank-8 version on a replica whose table rank is 16 (another base needs 16): the refusal said only
    "set lora_table_rank: 8", which breaks the other base's scenarios. It now also offers exporting this
    base's rank-16 graph, as a call that runs as written (the base the version names, its head kind)."""
    repository = ModelRepository(tmp_path / "repo")
    publish_tiny(repository, tmp_path, tiny_roberta_dir, "narrow", LABELS, 4)  # the base's rank-8 graph
    with pytest.raises(ModelLoadError) as refused:
        load_version(repository, "narrow", 1, engine_settings("shared", table_rank=16))
    message = str(refused.value)
    assert "set lora_table_rank: 8" in message
    call = message.split("or keep lora_table_rank 16 and export ", 1)[1].split(";")[0]
    assert call.startswith("training.multi_adapter.export_multi_adapter_base(") and "rank=16" in call, message
    import training.multi_adapter  # noqa: F401  (the call names the module by its path)

    eval(call.replace("<repository>", repr(str(repository.root))), {"training": __import__("training"),
         "ModelRepository": ModelRepository})  # fmt: skip
    served = load_version(repository, "narrow", 1, engine_settings("shared", table_rank=16))
    assert served.shared is not None and served.shared.folder == layout.multi_adapter_folder(16, "fp32")
