"""Rows of different LoRA scenarios in one batch of the multi-adapter graph each get their own answer."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .conftest import RANK, Scenario, make_scenario

FP32_TOLERANCE = 1e-3


def _session(path: Path) -> Any:
    from training.export.parity import ort_session

    return ort_session(path, threads=1)


def _entries(scenarios: list[Scenario], base_key: str) -> list[Any]:
    from training.multi_adapter import AdapterEntry

    return [
        AdapterEntry(s.name, base_key, "roberta" if "dense_weight" in s.head else "linear", s.lora, s.head)
        for s in scenarios
    ]


def _merged_logits(scenario: Scenario, tokens: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    feed = {k: torch.from_numpy(v) for k, v in tokens.items()}
    with torch.inference_mode():
        return scenario.merged(**feed).logits.numpy()


def _run(
    session: Any, tokens: dict[str, np.ndarray], index: np.ndarray, tables: dict[str, np.ndarray]
) -> np.ndarray:
    feed = {**tokens, **tables, "adapter_index": index.astype(np.int64)}
    return session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})[0]


def _spec(repo: Any, base_dir: Path) -> Any:
    from training.multi_adapter import load_spec, resolve_base

    return load_spec(repo, resolve_base(base_dir)[2], RANK)


def test_mixed_batch_rows_match_each_scenarios_merged_model(
    repo: Any,
    tiny_roberta_dir: Path,
    roberta_graphs: dict[str, Path],
    roberta_scenarios: list[Scenario],
    roberta_tokens,
) -> None:
    from training.multi_adapter import build_tables

    spec = _spec(repo, tiny_roberta_dir)
    tables = build_tables(spec, _entries(roberta_scenarios, spec.base_key))
    index = np.asarray([0, 1, 2, 2, 1, 0, 1, 2])  # three scenarios interleaved in one batch
    logits = _run(_session(roberta_graphs["fp32"]), roberta_tokens, index, tables)
    assert logits.shape == (8, 5)
    for i, scenario in enumerate(roberta_scenarios):
        rows = index == i
        own = _merged_logits(scenario, roberta_tokens)[rows]
        got = logits[rows]
        assert np.abs(got[:, : scenario.num_labels] - own).max() <= FP32_TOLERANCE, scenario.name
        assert np.all(np.isneginf(got[:, scenario.num_labels :])), (
            f"{scenario.name}: padding columns not masked"
        )
    # The check is not vacuous: the scenarios disagree with each other on the same rows.
    a, b = (_merged_logits(s, roberta_tokens)[:, :2] for s in roberta_scenarios[:2])
    assert np.abs(a - b).max() > 0.1


def test_bert_base_with_token_types_and_pooler_head(repo: Any, tiny_bert_dir: Path) -> None:
    from training.multi_adapter import build_tables, export_multi_adapter_base

    graphs = export_multi_adapter_base(repo, tiny_bert_dir, rank=RANK, precisions=("fp32",))
    spec = _spec(repo, tiny_bert_dir)
    assert spec.head_kind == "linear" and "token_type_ids" in spec.token_inputs
    scenarios = [
        make_scenario(tiny_bert_dir, "topic", 4, seed=4),
        make_scenario(tiny_bert_dir, "lang", 2, seed=5),
    ]
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 120, (6, 11))
    mask = np.ones_like(ids)
    mask[0, 4:] = 0
    types = np.zeros_like(ids)
    types[:, 6:] = 1  # sentence pairs: the second segment must reach the graph
    tokens = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    index = np.asarray([1, 0, 0, 1, 1, 0])
    logits = _run(
        _session(graphs["fp32"]), tokens, index, build_tables(spec, _entries(scenarios, spec.base_key))
    )
    for i, scenario in enumerate(scenarios):
        own = _merged_logits(scenario, tokens)[index == i]
        assert np.abs(logits[index == i, : scenario.num_labels] - own).max() <= FP32_TOLERANCE, scenario.name


def test_bert_adapters_that_trained_their_pooler_share_one_graph(repo: Any, tiny_bert_dir: Path) -> None:
    """lora_train_pooler: each adapter's pooler is its head's dense layer, on the first token of a base
    without the pooler, under the base key the adapters' manifests name (`-pre-pooler`)."""
    from model_repository import AdapterMismatchError
    from training.multi_adapter import (
        AdapterEntry,
        build_tables,
        export_multi_adapter_base,
        load_spec,
        resolve_base,
    )

    graphs = export_multi_adapter_base(
        repo, tiny_bert_dir, rank=RANK, precisions=("fp32",), head_kind="bert_pooler"
    )
    key = resolve_base(tiny_bert_dir, "bert_pooler")[2]
    assert key.endswith("-pre-pooler") and key != resolve_base(tiny_bert_dir)[2]
    spec = load_spec(repo, key, RANK)
    assert spec.head_kind == "bert_pooler" and "token_type_ids" in spec.token_inputs
    scenarios = [
        make_scenario(tiny_bert_dir, "topic", 4, seed=6, train_pooler=True),
        make_scenario(tiny_bert_dir, "lang", 3, seed=7, train_pooler=True),
    ]
    base_pooler = scenarios[0].peft_model.base_model.model.bert.pooler.original_module.dense.weight
    for s in scenarios:  # the pooler each adapter trained, not the base's
        assert not np.allclose(s.head["dense_weight"], base_pooler.detach().numpy())
    rng = np.random.default_rng(1)
    ids = rng.integers(5, 120, (6, 9))
    mask = np.ones_like(ids)
    mask[2, 5:] = 0
    tokens = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    index = np.asarray([0, 1, 1, 0, 1, 0])
    entries = [AdapterEntry(s.name, key, "bert_pooler", s.lora, s.head) for s in scenarios]
    logits = _run(_session(graphs["fp32"]), tokens, index, build_tables(spec, entries))
    for i, scenario in enumerate(scenarios):
        own = _merged_logits(scenario, tokens)[index == i]
        assert np.abs(logits[index == i, : scenario.num_labels] - own).max() <= FP32_TOLERANCE, scenario.name
    # An adapter on the base's own pooler (kind linear) is refused by this graph, by name.
    plain = make_scenario(tiny_bert_dir, "plain", 2, seed=8)
    with pytest.raises(AdapterMismatchError, match="head kind 'linear'"):
        build_tables(spec, [AdapterEntry("plain", key, "linear", plain.lora, plain.head)])


def test_int8_graph_runs_and_mostly_agrees(
    repo: Any,
    tiny_roberta_dir: Path,
    roberta_graphs: dict[str, Path],
    roberta_scenarios: list[Scenario],
    roberta_tokens,
) -> None:
    from training.multi_adapter import build_tables

    spec = _spec(repo, tiny_roberta_dir)
    tables = build_tables(spec, _entries(roberta_scenarios, spec.base_key))
    index = np.asarray([0, 1, 2, 2, 1, 0, 1, 2])
    fp32 = _run(_session(roberta_graphs["fp32"]), roberta_tokens, index, tables)
    int8 = _run(_session(roberta_graphs["int8"]), roberta_tokens, index, tables)
    assert np.array_equal(np.isfinite(fp32), np.isfinite(int8))
    assert (fp32.argmax(-1) == int8.argmax(-1)).mean() >= 0.75
    finite = np.isfinite(fp32)
    assert np.abs(fp32[finite] - int8[finite]).max() < 0.5


def test_promote_replaces_one_row_without_touching_the_others(
    repo: Any,
    tiny_roberta_dir: Path,
    roberta_graphs: dict[str, Path],
    roberta_scenarios: list[Scenario],
    roberta_tokens,
) -> None:
    """A promote is a new table row fed to the same session: no re-export, other scenarios unchanged."""
    from training.multi_adapter import build_tables

    spec = _spec(repo, tiny_roberta_dir)
    session = _session(roberta_graphs["fp32"])
    reviews, spam, _ = roberta_scenarios
    spam_v2 = make_scenario(tiny_roberta_dir, "spam", 2, seed=22)
    index = np.asarray([0, 1, 0, 1, 0, 1, 0, 1])
    before = _run(
        session, roberta_tokens, index, build_tables(spec, _entries([reviews, spam], spec.base_key))
    )
    after = _run(
        session, roberta_tokens, index, build_tables(spec, _entries([reviews, spam_v2], spec.base_key))
    )
    np.testing.assert_allclose(after[index == 0], before[index == 0], atol=1e-6)
    own = _merged_logits(spam_v2, roberta_tokens)[index == 1]
    assert np.abs(after[index == 1, :2] - own).max() <= FP32_TOLERANCE
    assert np.abs(after[index == 1, :2] - before[index == 1, :2]).max() > 0.1


def test_reexport_reuses_the_published_graph(
    repo: Any, tiny_roberta_dir: Path, roberta_graphs: dict[str, Path]
) -> None:
    from training.multi_adapter import export_multi_adapter_base

    said: list[str] = []
    again = export_multi_adapter_base(
        repo, tiny_roberta_dir, rank=RANK, precisions=("fp32", "int8"), say=said.append
    )
    assert again == roberta_graphs
    assert len(said) == 2 and all("reused" in line for line in said)
    assert roberta_graphs["fp32"].parent.name == "multi-lora-r4-fp32"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("rank", "exceeds the graph's table rank 4"),
        (
            "targets",
            r"adapts \['attention.self.query', 'attention.self.value'\] \(not \['attention.output.dense'",
        ),
        ("base", "trained on base"),
        ("layers", "adapted in layers"),
        ("head", "head output weight"),
    ],
)
def test_mismatched_adapter_is_refused_by_name(
    repo: Any,
    tiny_roberta_dir: Path,
    roberta_graphs: dict[str, Path],
    roberta_scenarios: list[Scenario],
    change: str,
    message: str,
) -> None:
    from training.multi_adapter import AdapterEntry, AdapterMismatchError, build_tables

    spec = _spec(repo, tiny_roberta_dir)
    good = roberta_scenarios[0]
    lora, head, base = dict(good.lora), dict(good.head), spec.base_key
    assert sorted(spec.projections) == [
        "attention.output.dense",
        "attention.self.key",
        "attention.self.query",
        "attention.self.value",
        "intermediate.dense",
        "output.dense",
    ]
    if change == "rank":
        lora = make_scenario(tiny_roberta_dir, "wide", 3, seed=9, rank=8).lora
    elif change == "targets":  # a graph exported on query/value only: every-projection adapters don't fit
        qv = {k: v for k, v in spec.projections.items() if k.endswith(("query", "value"))}
        spec = replace(spec, projections=qv)
        good = make_scenario(tiny_roberta_dir, "qv", 3, seed=9, targets=["query", "value"])
    elif change == "base":
        base = "some-other-base-0123456789ab"
    elif change == "layers":
        lora = {k: (v + 5 if k.endswith(".layers") else v) for k, v in lora.items()}  # layers 5, 6 of 2
    else:
        head["out_proj_weight"] = head["out_proj_weight"][:, :-1]
    bad = AdapterEntry("bad v1", base, "roberta", lora, head)
    with pytest.raises(AdapterMismatchError, match=message) as err:
        build_tables(spec, [_entries([good], spec.base_key)[0], bad])
    assert "bad v1" in str(err.value)
    # The others keep going: the table without the refused adapter still builds.
    assert build_tables(spec, _entries([good], spec.base_key))["head.num_labels"].tolist() == [3]


def test_adapter_on_a_subset_of_layers_matches_its_merged_model(
    repo: Any, tiny_roberta_dir: Path, roberta_graphs: dict[str, Path], roberta_tokens
) -> None:
    """peft's layers_to_transform: the layers without LoRA get a zero block in the table."""
    from training.multi_adapter import build_tables

    spec = _spec(repo, tiny_roberta_dir)
    top_only = make_scenario(tiny_roberta_dir, "top", 3, seed=12, layers=[1])
    assert top_only.lora["attention.self.query.layers"].tolist() == [1]
    tables = build_tables(spec, _entries([top_only], spec.base_key))
    logits = _run(_session(roberta_graphs["fp32"]), roberta_tokens, np.zeros(8, dtype=np.int64), tables)
    assert np.abs(logits - _merged_logits(top_only, roberta_tokens)).max() <= FP32_TOLERANCE


@pytest.mark.slow
def test_minilm_mixed_rows_match_merged_models(tmp_path: Path, minilm_dir: Path) -> None:
    """The real pretrained base: two rank-8 adapters interleaved, each row vs its merged torch model."""
    from transformers import AutoTokenizer

    from model_repository import ModelRepository
    from training.multi_adapter import build_tables, export_multi_adapter_base, load_spec, resolve_base

    repo = ModelRepository(tmp_path)
    graphs = export_multi_adapter_base(repo, minilm_dir, rank=8, precisions=("fp32",))
    spec = load_spec(repo, resolve_base(minilm_dir)[2], 8)
    scenarios = [
        make_scenario(minilm_dir, "a", 6, seed=1, rank=8),
        make_scenario(minilm_dir, "b", 3, seed=2, rank=8),
    ]
    texts = [
        "i feel great today",
        "the flight to denver was delayed again and nobody told us why",
        "ok",
        "meh",
    ]
    enc = AutoTokenizer.from_pretrained(minilm_dir)(texts * 2, padding=True, return_tensors="np")
    tokens = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}
    index = np.asarray([0, 1] * 4)
    logits = _run(
        _session(graphs["fp32"]), tokens, index, build_tables(spec, _entries(scenarios, spec.base_key))
    )
    for i, scenario in enumerate(scenarios):
        own = _merged_logits(scenario, tokens)[index == i]
        assert np.abs(logits[index == i, : scenario.num_labels] - own).max() <= FP32_TOLERANCE


def test_a_graph_on_fewer_projections_is_not_reused_for_the_default_targets(
    tmp_path: Path, tiny_roberta_dir: Path
) -> None:
    """A repository whose graph was exported on query/value only: exporting for every projection says
    what to do instead of reusing a graph the new adapters cannot join."""
    from model_repository import ModelRepository
    from training.multi_adapter import MultiAdapterError, export_multi_adapter_base

    repo = ModelRepository(tmp_path)
    export_multi_adapter_base(
        repo, tiny_roberta_dir, rank=RANK, targets=["query", "value"], precisions=("fp32",)
    )
    with pytest.raises(
        MultiAdapterError, match=r"adapts \['query', 'value'\], not every one of .*remove _bases/"
    ):
        export_multi_adapter_base(repo, tiny_roberta_dir, rank=RANK, precisions=("fp32",))


def test_a_precision_added_to_a_graph_adapts_what_its_other_precisions_adapt(
    tmp_path: Path, tiny_roberta_dir: Path
) -> None:
    """A graph reused for fewer targets than it adapts: the precision exported beside it adapts the same
    projections. The int8 graph was traced on the targets asked for (query/value) beside an fp32 graph on
    every projection, and a CPU replica, which reads int8 first, refused the adapters fp32 had served."""
    from model_repository import ModelRepository
    from training.multi_adapter import export_multi_adapter_base, load_spec, resolve_base

    repo = ModelRepository(tmp_path)
    export_multi_adapter_base(repo, tiny_roberta_dir, rank=RANK, precisions=("fp32",))
    said: list[str] = []
    export_multi_adapter_base(
        repo,
        tiny_roberta_dir,
        rank=RANK,
        targets=["query", "value"],
        precisions=("fp32", "int8"),
        say=said.append,
    )
    key = resolve_base(tiny_roberta_dir)[2]
    fp32, int8 = (sorted(load_spec(repo, key, RANK, p).projections) for p in ("fp32", "int8"))
    assert len(fp32) == 6 and int8 == fp32
    assert any("targets ['attention.self.query', 'attention.self.key'" in line for line in said)


@pytest.mark.parametrize(
    ("targets", "stackable"),
    [(["query", "value"], True), (["query", "value", "word_embeddings"], False)],
)
def test_an_adapter_the_table_cannot_carry_gets_no_stack(
    targets: list[str], stackable: bool, tiny_roberta_dir: Path
) -> None:
    """lora.npz stacks layer projections only: an adapter with LoRA elsewhere (the embedding table) gets
    none, so lora_mode shared refuses it by name rather than serving it without that part (shared and
    merged logits differed by 2.4 with word-embedding LoRA dropped)."""
    from training.export.heads import lora_arrays
    from training.model import build_model, resolve_base_model

    base = resolve_base_model(str(tiny_roberta_dir))
    model = build_model(base, "lora", ["a", "b"], lora_r=2, lora_target_modules=targets)
    assert (lora_arrays(model) is not None) == stackable
