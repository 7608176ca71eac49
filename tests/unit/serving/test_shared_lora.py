"""lora_mode shared: LoRA versions published by the real pipeline, served through the multi-adapter graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_repository import ModelRepository
from tests.conftest import write_toy_csv

from .conftest import engine_settings, load_version, publish_tiny

TEXTS = [
    "The film was great today.",
    "ok",
    "My order was awful again and the team was horrible as usual, I think.",
    "The flight was listed by noon.",
    "the app was brilliant",
]
# name -> (labels, LoRA target modules; None = the architecture's default, which the graph adapts)
SCENARIOS = {
    "lora_two": (("negative", "positive"), None),
    "lora_three": (("positive", "negative", "neutral"), None),
    "lora_qv": (("positive", "negative"), ["query", "value"]),  # fewer: zero blocks for the others
}


def _publish(repo: ModelRepository, work: Path, tiny: Path, name: str, seed: int) -> int:
    labels, targets = SCENARIOS[name]
    return publish_tiny(repo, work, tiny, name, labels, seed, lora_target_modules=targets)


@pytest.fixture(scope="module")
def repo(tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    """lora_two v1 + v2, lora_three v1, lora_qv v1 (query/value only), each with its merged graph too."""
    pytest.importorskip("onnxruntime", reason="the serving extra is not installed")
    work = tmp_path_factory.mktemp("shared-lora")
    repository = ModelRepository(work / "repo")
    for seed, name in enumerate(SCENARIOS, start=1):
        _publish(repository, work, tiny_roberta_dir, name, seed)
    assert _publish(repository, work, tiny_roberta_dir, "lora_two", 11) == 2
    return repository


def _settings(mode: str):
    return engine_settings(mode)


def _load(repo: ModelRepository, name: str, version: int, mode: str, adapters=None):
    return load_version(repo, name, version, engine_settings(mode), adapters)


def _merged_logits(loaded, texts: list[str]) -> np.ndarray:
    ids, mask = loaded.tokenizer.pad(loaded.tokenizer.encode_ids(texts)[0])
    return loaded.graph.run(ids, mask)


def test_rows_of_two_scenarios_share_one_pass_and_each_matches_its_own_merged_graph(
    repo: ModelRepository,
) -> None:
    from serving.engine import MultiAdapterCache, OnnxEngine, Row

    cache = MultiAdapterCache()
    shared = {n: _load(repo, n, 1, "shared", cache) for n in ("lora_two", "lora_three")}
    merged = {n: _load(repo, n, 1, "merged") for n in shared}
    assert shared["lora_two"].shared is shared["lora_three"].shared  # one graph, one table
    assert shared["lora_two"].graph is None  # no merged session is opened in shared mode
    engine = OnnxEngine()
    rows = [Row(shared[("lora_two", "lora_three")[i % 2]], t) for i, t in enumerate(TEXTS * 2)]
    outcome = engine.run(rows)
    results, passes = outcome.results, outcome.passes
    assert [(p.group, p.rows, p.scenarios) for p in passes] == [("lora", 10, 2)]
    for row, result in zip(rows, results, strict=True):
        expected = engine.classify([Row(merged[row.scenario.name], row.text)])[0]
        assert result.probs.shape == (len(row.scenario.labels),)
        np.testing.assert_allclose(result.probs, expected.probs, atol=1e-5)

    # Logits, row by row, in one mixed run: each equals its merged graph, and the other adapter differs.
    graph = shared["lora_two"].shared
    ids, mask = shared["lora_two"].tokenizer.pad(shared["lora_two"].tokenizer.encode_ids(TEXTS)[0])
    own = [(("lora_two", 1), shared["lora_two"].adapter), (("lora_three", 1), shared["lora_three"].adapter)]
    logits = graph.run(ids, mask, [own[i % 2] for i in range(len(TEXTS))])
    expect = {n: _merged_logits(merged[n], TEXTS) for n in merged}
    for i in range(len(TEXTS)):
        name = ("lora_two", "lora_three")[i % 2]
        width = len(merged[name].labels)
        np.testing.assert_allclose(logits[i, :width], expect[name][i], atol=1e-4)
        assert np.all(np.isneginf(logits[i, width:]))
    swapped = graph.run(ids, mask, [own[(i + 1) % 2] for i in range(len(TEXTS))])
    assert np.abs(swapped[:, :2] - logits[:, :2]).max() > 1e-3  # the check above is not vacuous


def test_an_adapter_on_fewer_projections_shares_the_default_graph(repo: ModelRepository) -> None:
    """query/value only (the default before every linear projection): same graph, same pass, own answer."""
    from serving.engine import MultiAdapterCache, OnnxEngine, Row

    cache = MultiAdapterCache()
    shared = {n: _load(repo, n, 1, "shared", cache) for n in ("lora_two", "lora_qv")}
    assert shared["lora_two"].shared is shared["lora_qv"].shared
    assert sorted(k.rsplit(".", 1)[0] for k in shared["lora_qv"].adapter.lora if k.endswith(".A")) == [
        "attention.self.query",
        "attention.self.value",
    ]
    engine = OnnxEngine()
    rows = [Row(shared[("lora_two", "lora_qv")[i % 2]], t) for i, t in enumerate(TEXTS * 2)]
    outcome = engine.run(rows)
    assert [(p.group, p.rows, p.scenarios) for p in outcome.passes] == [("lora", 10, 2)]
    for row, result in zip(rows, outcome.results, strict=True):
        expected = engine.classify([Row(_load(repo, row.scenario.name, 1, "merged"), row.text)])[0]
        np.testing.assert_allclose(result.probs, expected.probs, atol=1e-5)


def test_a_graph_on_fewer_projections_refuses_a_default_adapter_and_keeps_serving(
    tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    """A repository whose graph predates the every-projection default: publishing a new LoRA version
    keeps that graph (and says so), shared serving refuses the new adapter by name and keeps serving
    the ones it has, and merged serving still serves the new one."""
    from serving.engine import MultiAdapterCache, OnnxEngine, Row
    from serving.errors import ModelLoadError
    from training.multi_adapter import export_multi_adapter_base

    repository = ModelRepository(tmp_path / "repo")
    export_multi_adapter_base(
        repository, tiny_roberta_dir, rank=8, targets=["query", "value"], precisions=["fp32"]
    )
    _publish(repository, tmp_path, tiny_roberta_dir, "lora_qv", 1)
    _publish(repository, tmp_path, tiny_roberta_dir, "lora_two", 2)
    cache = MultiAdapterCache()
    qv = _load(repository, "lora_qv", 1, "shared", cache)
    before = qv.shared.table
    with pytest.raises(ModelLoadError, match=r"lora_two v1: LoRA targets .*the graph adapts .*\(not \["):
        _load(repository, "lora_two", 1, "shared", cache)
    assert qv.shared.table is before and qv.shared.hosted == {"lora_qv": 1}
    assert OnnxEngine().classify([Row(qv, "the app was brilliant")])[0].probs.shape == (2,)
    assert _load(repository, "lora_two", 1, "merged").graph is not None


def test_promote_swaps_one_table_row_and_rows_bound_to_the_old_version_still_get_their_own_adapter(
    repo: ModelRepository,
) -> None:
    from serving.engine import MultiAdapterCache, OnnxEngine, Row

    cache = MultiAdapterCache()
    v1 = _load(repo, "lora_two", 1, "shared", cache)
    three = _load(repo, "lora_three", 1, "shared", cache)
    old_table = v1.shared.table
    v2 = _load(repo, "lora_two", 2, "shared", cache)  # promote: a new table, swapped by reference
    new_table = v2.shared.table
    assert new_table is not old_table and dict(new_table.row_of) == {("lora_three", 1): 0, ("lora_two", 2): 1}
    assert dict(old_table.row_of) == {("lora_three", 1): 0, ("lora_two", 1): 1}  # never mutated
    for name, table in new_table.tables.items():  # lora_three's row is unchanged
        np.testing.assert_array_equal(table[0], old_table.tables[name][0])

    engine = OnnxEngine()
    # A request bound to v1 just before the swap runs in the same pass as v2 and lora_three rows.
    rows = [Row(v1, TEXTS[0]), Row(v2, TEXTS[0]), Row(three, TEXTS[0])]
    got = engine.classify(rows)
    for row, result in zip(rows, got, strict=True):
        merged = _load(repo, row.scenario.name, row.scenario.version, "merged")
        expected = engine.classify([Row(merged, row.text)])[0]
        np.testing.assert_allclose(result.probs, expected.probs, atol=1e-5)
    assert np.abs(got[0].probs - got[1].probs).max() > 1e-4  # v1 and v2 really differ


def test_a_multi_adapter_graph_exported_again_is_opened_again(tiny_roberta_dir: Path, tmp_path: Path) -> None:
    """A version the graph refused is served once the graph is exported again as the refusal says: the
    replica's cache opens the new graph (keyed by its checksum, not its folder), and the version's
    fingerprint moves, so a registry that refused it tries again."""
    import shutil

    from model_repository import layout
    from serving.engine import MultiAdapterCache
    from serving.errors import ModelLoadError
    from training.multi_adapter import export_multi_adapter_base

    repository = ModelRepository(tmp_path / "repo")
    export_multi_adapter_base(
        repository, tiny_roberta_dir, rank=8, targets=["query", "value"], precisions=["fp32"]
    )
    _publish(repository, tmp_path, tiny_roberta_dir, "lora_two", 2)
    cache = MultiAdapterCache()
    with pytest.raises(ModelLoadError, match="the graph adapts"):
        _load(repository, "lora_two", 1, "shared", cache)
    before = repository.fingerprint("lora_two", 1, "production")
    key = repository.load_manifest("lora_two", 1).base_encoder.key
    shutil.rmtree(repository.base_path(key, layout.multi_adapter_folder(8, "fp32")))
    export_multi_adapter_base(repository, tiny_roberta_dir, rank=8, precisions=["fp32"])  # every projection
    assert repository.fingerprint("lora_two", 1, "production") != before
    assert _load(repository, "lora_two", 1, "shared", cache).shared.hosted == {"lora_two": 1}


def test_shared_mode_serves_only_a_precision_the_version_was_published_in(repo: ModelRepository) -> None:
    """A version exported fp32 only is not served from the shared int8 graph, even first in the order."""
    from serving.engine import BaseEncoderCache, EngineSettings, load_scenario
    from training.multi_adapter import export_multi_adapter_base

    manifest = repo.load_manifest("lora_three", 1)
    assert [e.precision for e in manifest.exports] == ["fp32"]
    base = repo.load_manifest("lora_three", 1).base_model.id
    export_multi_adapter_base(repo, base, rank=8, precisions=["int8"])
    settings = EngineSettings(
        ["CPUExecutionProvider"], ["int8", "fp32"], 1, lora_mode="shared", lora_table_rank=8
    )
    loaded = load_scenario(repo, "lora_three", 1, settings, BaseEncoderCache())
    assert loaded.precision == "fp32" and loaded.shared.folder == "multi-lora-r8-fp32"


def _copy(repo: ModelRepository, tmp_path: Path) -> ModelRepository:
    import shutil

    shutil.copytree(repo.root, tmp_path / "repo")
    return ModelRepository(tmp_path / "repo")


def test_serve_all_forgets_a_removed_scenario_and_its_table_row(
    repo: ModelRepository, tmp_path: Path
) -> None:
    """docs/serving.md, hot reload: in serve-all mode a removed scenario is forgotten, serving or not."""
    import shutil

    from serving.engine import ScenarioRegistry

    copy = _copy(repo, tmp_path)
    for name in ("lora_two", "lora_three"):
        copy.set_alias(name, "production", 1)
    registry = ScenarioRegistry(copy, None, "production", _settings("shared"))
    registry.poll_once()
    shared = registry.get("lora_two").shared
    assert {"lora_two", "lora_three"} <= registry.served()
    assert set(shared.hosted) >= {"lora_two", "lora_three"}
    shutil.rmtree(copy.scenario_path("lora_three"))
    registry.poll_once()
    assert "lora_three" not in registry.served()
    assert "lora_three" not in shared.hosted
    assert "lora_three" not in {s.name for s in registry.states()}


def test_a_scenario_that_leaves_the_shared_table_leaves_no_row(
    repo: ModelRepository, tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    """lora_two promoted to a full version: it serves from its own graph, and lora_three's passes no
    longer carry lora_two's adapter and head in their tables."""
    from serving.engine import ScenarioRegistry
    from training import custom_scenario, make_train_config, train_and_publish

    copy = _copy(repo, tmp_path)
    for name in ("lora_two", "lora_three"):
        copy.set_alias(name, "production", 1)
    labels = SCENARIOS["lora_two"][0]
    data = tmp_path / "data"
    write_toy_csv(data / "train.csv", 8, seed=7, labels=labels)
    write_toy_csv(data / "validation.csv", 4, seed=107, labels=labels)
    config = make_train_config(
        custom_scenario("lora_two", list(labels), data, max_length_tokens=16),
        "full",
        base_model=str(tiny_roberta_dir),
        output_dir=tmp_path / "run",
        max_steps=2,
        batch_size=8,
        early_stopping_patience=None,
    )
    full = train_and_publish(config, copy, export_precisions=["fp32"]).version
    aliases = {"lora_two": "production", "lora_three": "production"}
    registry = ScenarioRegistry(copy, aliases, "production", _settings("shared"))
    registry.poll_once()
    shared = registry.get("lora_three").shared
    assert shared.hosted == {"lora_two": 1, "lora_three": 1}
    copy.set_alias("lora_two", "production", full)
    registry.poll_once()
    assert registry.get("lora_two").shared is None
    assert shared.hosted == {"lora_three": 1} and shared.table.rows == 1


@pytest.mark.parametrize("mode", ["merged", "shared"])
def test_a_rollback_made_while_the_promoted_version_loads_holds(
    repo: ModelRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """A load takes seconds to minutes (verify, download, warm-up). The alias rolled back to the serving
    version meanwhile: the version it no longer names is not swapped in (it was, and served until the
    next poll, which then loaded the old version again), and in shared mode the table holds the serving
    version's row again."""
    import shutil

    import serving.engine.registry as registry_module
    from serving.engine import ScenarioRegistry

    local = ModelRepository(shutil.copytree(repo.root, tmp_path / "repo"))
    local.set_alias("lora_two", "production", 1)
    local.set_alias("lora_three", "production", 1)  # its row shares the table in shared mode
    scenarios = {"lora_two": "production", "lora_three": "production"}
    registry = ScenarioRegistry(local, scenarios, "production", engine_settings(mode))
    registry.poll_once()
    serving_v1 = registry.get("lora_two")
    assert serving_v1.version == 1
    load = registry_module.load_scenario

    def load_then_roll_back(repository, name, version, *args, **kwargs):  # type: ignore[no-untyped-def]
        loaded = load(repository, name, version, *args, **kwargs)
        if (name, version) == ("lora_two", 2):
            local.set_alias("lora_two", "production", 1)  # the rollback, while v2 loads
        return loaded

    monkeypatch.setattr(registry_module, "load_scenario", load_then_roll_back)
    local.set_alias("lora_two", "production", 2)
    assert registry.poll_once() == []
    assert registry.get("lora_two") is serving_v1  # kept, not loaded again
    if mode == "shared":
        assert serving_v1.shared.hosted == {"lora_three": 1, "lora_two": 1}
        assert ("lora_two", 1) in serving_v1.shared.table.row_of
    assert registry.poll_once() == []  # nothing left to load: the alias names what serves
    assert registry.get("lora_two") is serving_v1

    monkeypatch.setattr(registry_module, "load_scenario", load)
    local.set_alias("lora_two", "production", 2)  # a promote that stands is swapped in as before
    events = registry.poll_once()
    assert [(e.name, e.version, e.previous) for e in events] == [("lora_two", 2, 1)]
    assert registry.get("lora_two").version == 2


def _v1_published_again(
    repo: ModelRepository, tiny_roberta_dir: Path, tmp_path: Path, lora_mode: str
) -> tuple[ModelRepository, Any, Any]:
    """A copy of `repo` whose lora_two v1 is loaded, then trained again from scratch and published under the
    same number between two polls: (the copy, the old v1 as loaded, the new v1 as loaded)."""
    import shutil

    from serving.engine import ScenarioRegistry

    copy = _copy(repo, tmp_path)
    copy.set_alias("lora_two", "production", 1)
    registry = ScenarioRegistry(copy, {"lora_two": "production"}, "production", _settings(lora_mode))
    registry.poll_once()
    old = registry.get("lora_two")
    shutil.rmtree(copy.scenario_path("lora_two"))
    assert _publish(copy, tmp_path / "work", tiny_roberta_dir, "lora_two", 11) == 1
    copy.set_alias("lora_two", "production", 1)
    assert [(e.version, e.previous, e.refused) for e in registry.poll_once()] == [(1, 1, False)]
    new = registry.get("lora_two")
    assert new is not old
    return copy, old, new


def test_a_version_published_again_under_its_number_never_answers_a_row_bound_to_the_old_one(
    repo: ModelRepository, tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    """Table rows are keyed by (scenario, version): the new v1 takes the old v1's row when it loads. A
    request bound to the old v1 just before the swap still gets the old adapter, not the new one."""
    from serving.engine import OnnxEngine, Row

    copy, old, new = _v1_published_again(repo, tiny_roberta_dir, tmp_path, "shared")
    assert new.shared is old.shared and new.shared.hosted == {"lora_two": 1}

    engine = OnnxEngine()
    outcome = engine.run([Row(old, TEXTS[0]), Row(new, TEXTS[0])])  # one pass, one key, two adapters
    assert [(p.group, p.rows, p.scenarios) for p in outcome.passes] == [("lora", 2, 2)]
    got = outcome.results
    for source, result in zip((repo, copy), got, strict=True):
        merged = _load(source, "lora_two", 1, "merged")
        expected = engine.classify([Row(merged, TEXTS[0])])[0]
        np.testing.assert_allclose(result.probs, expected.probs, atol=1e-5)
    assert np.abs(got[0].probs - got[1].probs).max() > 1e-4  # the two v1s really differ


def test_merged_a_version_published_again_under_its_number_never_answers_a_row_bound_to_the_old_one(
    repo: ModelRepository, tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    """lora_mode merged: each v1 is its own graph. Rows bound to the old v1 and the new one in one batch run
    two passes, each on its own graph (they once shared a pass key (scenario, version) and both ran the
    graph of whichever row came first)."""
    from serving.engine import OnnxEngine, Row

    _, old, new = _v1_published_again(repo, tiny_roberta_dir, tmp_path, "merged")
    assert new.graph is not old.graph

    engine = OnnxEngine()
    for first, second in ((old, new), (new, old)):
        outcome = engine.run([Row(first, TEXTS[0]), Row(second, TEXTS[0])])
        assert sorted((p.group, p.rows) for p in outcome.passes) == [("graph", 1), ("graph", 1)]
        for loaded, result in zip((first, second), outcome.results, strict=True):
            alone = engine.classify([Row(loaded, TEXTS[0])])[0]
            np.testing.assert_allclose(result.probs, alone.probs, atol=1e-6)
    assert (
        np.abs(
            engine.classify([Row(old, TEXTS[0])])[0].probs - engine.classify([Row(new, TEXTS[0])])[0].probs
        ).max()
        > 1e-4
    )
