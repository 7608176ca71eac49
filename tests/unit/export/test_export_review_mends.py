"""Export edges found in review: an fp16-only version no CPU replica loads, a publisher that loses the race
for a shared base in an object store, NaN logits passing the parity gate, and a stale multi-adapter claim
failing a LoRA publish after training."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from model_repository import ModelRepository, layout
from tests.unit.export.conftest import LABELS, MAX_LENGTH_TOKENS
from tests.unit.export.test_export import publish

pytest.importorskip("optimum.exporters.onnx", reason="the training extra is not installed")
pytest.importorskip("onnxruntime")


@pytest.fixture
def memory_url() -> Iterator[str]:
    """A bucket of its own in fsspec's process-wide memory store; the repository URL under it."""
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    name = f"export-mends-{uuid.uuid4().hex[:12]}"
    fs.pipe_file(f"/{name}/.keep", b"")
    try:
        yield f"memory://{name}/repo"
    finally:
        fs.rm(f"/{name}", recursive=True)


# ---- 1. fp16 alone is a version no CPU replica loads ------------------------------------------------
def test_fp16_alone_gets_fp32_too_and_a_log_line_says_why(caplog: pytest.LogCaptureFixture) -> None:
    from training.export import parse_precisions

    with caplog.at_level(logging.INFO, logger="training.export.precisions"):
        assert parse_precisions("fp16") == ["fp32", "fp16"]
    assert "fp16 is a GPU graph: exporting fp32 too" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="training.export.precisions"):
        assert parse_precisions("int8,fp16") == ["fp16", "int8"]  # a CPU graph is there: nothing added
    assert "GPU graph" not in caplog.text


def test_train_with_export_fp16_exports_fp32_too() -> None:
    """`labelwise train --export fp16` and training.publish_run decide precisions as a re-export does."""
    from labelwise.training_runs import export_precisions
    from training.publish import requested_precisions

    assert export_precisions("fp16") == ["fp32", "fp16"]
    assert requested_precisions("fp16") == ["fp32", "fp16"]
    assert requested_precisions(["fp16"]) == ["fp32", "fp16"]


def test_reexport_fp16_of_a_torch_only_version_is_loaded_and_promoted_for_cpu_replicas(
    tmp_path: Path, tiny_models: dict[str, Any], tiny_tokenizer: Any, tiny_base_ref: Any
) -> None:
    from labelwise.catalog import promote
    from tests.conftest import write_toy_csv
    from tests.unit.serving.conftest import engine_settings, load_version
    from training.export.reexport import reexport_version

    repo = ModelRepository(tmp_path / "repo")
    with repo.new_version(  # `--export none`: torch weights only, no graph to inherit
        "full",
        strategy="full",
        base_model=tiny_base_ref,
        labels=LABELS,
        max_length_tokens=MAX_LENGTH_TOKENS,
        training_config={"data": {"validation_path": "does-not-exist.csv"}},
    ) as draft:
        tiny_tokenizer.save_pretrained(draft.path / layout.TOKENIZER_DIR)
        tiny_models["full"].save_pretrained(draft.path / layout.WEIGHTS_DIR, safe_serialization=True)
    child = reexport_version(repo, "full", 1, "fp16", write_toy_csv(tmp_path / "v.csv", 10, seed=6))
    assert [e.precision for e in child.exports] == ["fp32", "fp16"]
    assert promote(repo, "full", child.version, "production") is None
    cpu_replica = engine_settings("merged", ("int8", "fp32"))
    loaded = load_version(repo, "full", repo.resolve("full", "production"), cpu_replica)
    assert loaded.precision == "fp32"


# ---- 2. the publisher that loses the race for a shared base (object store) ---------------------------
def test_a_publisher_losing_the_base_race_reads_the_winners_base(
    tmp_path: Path,
    memory_url: str,
    tiny_models: dict[str, Any],
    tiny_tokenizer: Any,
    tiny_base_ref: Any,
    tiny_roberta_dir: Path,
    toy_rows: tuple[list[str], list[str]],
) -> None:
    """B finds the base missing and exports it; A publishes it meanwhile (another machine, its own cache):
    B keeps A's base, which it must bring into its own cache for the head check, not crash on a path
    that does not exist there."""
    from model_repository import ObjectStoreRepository
    from tests.unit.serving.conftest import engine_settings, load_version

    a = ObjectStoreRepository(memory_url, cache_dir=tmp_path / "cache-a")
    b = ObjectStoreRepository(memory_url, cache_dir=tmp_path / "cache-b")
    frozen = tiny_models["frozen"]
    real_new_base = b.new_base
    raced: list[Any] = []

    @contextlib.contextmanager
    def a_publishes_first(key: str, precision: str, **info: Any) -> Iterator[Any]:
        if not raced:  # between B's has_base (missing) and B's draft of the base
            raced.append(publish(a, "alpha", "frozen", frozen, tiny_tokenizer, tiny_base_ref,
                                  tiny_roberta_dir, toy_rows, ["fp32"]))  # fmt: skip
        with real_new_base(key, precision, **info) as draft:
            yield draft

    b.new_base = a_publishes_first  # type: ignore[method-assign]
    beta = publish(
        b, "beta", "frozen", frozen, tiny_tokenizer, tiny_base_ref, tiny_roberta_dir, toy_rows, ["fp32"]
    )
    assert raced and beta.base_encoder.key == raced[0].base_encoder.key
    assert (b.cache.base_path(beta.base_encoder.key, "fp32") / layout.ENCODER_FILE).is_file()
    assert load_version(b, "beta", beta.version, engine_settings("merged")).base_graph is not None


def test_a_base_graph_onnxruntime_cannot_open_is_an_export_error_naming_it(tmp_path: Path) -> None:
    from training.export import ExportError
    from training.export.base_encoder import _base_parity
    from training.export.exporter import _check_head_on_base

    missing = tmp_path / "cache" / "_bases" / "tiny-abc" / "fp32" / layout.ENCODER_FILE
    rows = SimpleNamespace(threads=1, test=None)
    with pytest.raises(ExportError, match=r"shared base encoder tiny-abc fp32 .* does not load in onnx"):
        _check_head_on_base(
            {"fp32": str(missing)},
            "mean_mlp",
            {},
            rows,
            lambda _l: None,
            "tiny-abc",  # type: ignore[arg-type]
        )
    garbage = tmp_path / "encoder.onnx"
    garbage.write_bytes(b"not a graph")
    with pytest.raises(ExportError, match=r"base encoder fp32 graph .* does not load in onnxruntime"):
        _base_parity(garbage, "fp32", np.zeros((1, 4), np.float32), [], None, MAX_LENGTH_TOKENS, 1)


# ---- 3. NaN logits and the parity gates --------------------------------------------------------------
def test_nan_logits_fail_the_comparison_naming_the_graph_and_rows() -> None:
    from training.export import ParityError
    from training.export.parity import compare, max_abs_diff

    reference = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.2]], dtype=np.float32)
    candidate = reference.copy()
    candidate[2] = np.nan  # argmax 0 on a NaN row: it agreed with torch, and NaN > tolerance is False
    with pytest.raises(ParityError, match=r"^fp32 graph: NaN or inf on 1 of 3 validation rows"):
        compare(reference, candidate, np.array([0, 1, 0]), "fp32 graph")
    candidate[2] = [np.inf, 0.0]
    with pytest.raises(ParityError, match=r"base encoder int8 features: NaN or inf on 1 of 3"):
        max_abs_diff(reference, candidate, "base encoder int8 features")
    assert compare(reference, reference + 1e-4, None).max_abs_diff == pytest.approx(1e-4, rel=1e-2)


def _nan_where_token(graph: Path, token_id: int) -> None:
    """Make a graph answer NaN logits on the rows holding token_id, finite elsewhere (a broken graph that
    the load check's sentences, which lack that token, do not catch): logits + sqrt(-has_token)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(graph))
    out = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{out}_raw" if o == out else o for o in node.output]
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.asarray([token_id], np.int64), "nan_token"),
            numpy_helper.from_array(np.asarray([1], np.int64), "nan_axes"),
        ]
    )
    model.graph.node.extend(
        [
            helper.make_node("Equal", ["input_ids", "nan_token"], ["nan_hit"]),
            helper.make_node("Cast", ["nan_hit"], ["nan_hit_f"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMax", ["nan_hit_f", "nan_axes"], ["nan_row"], keepdims=1),
            helper.make_node("Neg", ["nan_row"], ["nan_neg"]),
            helper.make_node("Sqrt", ["nan_neg"], ["nan_add"]),
            helper.make_node("Add", [f"{out}_raw", "nan_add"], [out]),
        ]
    )
    onnx.save(model, str(graph))


def test_an_int8_graph_answering_nan_on_some_rows_publishes_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_models: dict[str, Any],
    tiny_tokenizer: Any,
    tiny_base_ref: Any,
    tiny_roberta_dir: Path,
    toy_rows: tuple[list[str], list[str]],
) -> None:
    """int8 has no |Δlogit| bound (only an accuracy warning): a graph answering NaN on some validation rows
    was published as verified, max_abs_logit_diff null in the manifest and agreement read off argmax 0."""
    from training.export import ParityError, graphs
    from training.export.parity import LOAD_CHECK_TEXTS
    from training.export.precisions import RECIPES

    (token_id,) = tiny_tokenizer(" noon", add_special_tokens=False)["input_ids"]
    assert not any(token_id in tiny_tokenizer(t)["input_ids"] for t in LOAD_CHECK_TEXTS)
    hit = sum(token_id in tiny_tokenizer(t)["input_ids"] for t in toy_rows[0])
    assert 0 < hit < len(toy_rows[0])

    def quantize_then_break(source: Path, config: Any, out: Path) -> Path:
        graph = graphs.quantize_int8(source, out)
        _nan_where_token(graph, token_id)
        return graph

    monkeypatch.setitem(RECIPES, "int8", dataclasses.replace(RECIPES["int8"], make=quantize_then_break))
    repo = ModelRepository(tmp_path / "repo")
    n = len(toy_rows[0])
    with pytest.raises(ParityError, match=rf"int8 graph: NaN or inf on {hit} of {n} validation rows"):
        publish(repo, "x", "full", tiny_models["full"], tiny_tokenizer, tiny_base_ref, tiny_roberta_dir,
                 toy_rows, ["fp32", "int8"])  # fmt: skip
    assert repo.list_scenarios() == []


# ---- 4. a stale multi-adapter claim only logs ----------------------------------------------------------
def test_a_stale_multi_adapter_claim_only_logs(
    tmp_path: Path,
    memory_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tiny_roberta_dir: Path,
) -> None:
    """A writer died holding the claim on the base's multi-adapter graph: the LoRA version is still served
    merged, so its publish (after training) goes on, with a warning naming the claim."""
    from model_repository import ObjectStoreRepository
    from training.multi_adapter import resolve_base
    from training.publish import export_shared_graph

    monkeypatch.setenv("LABELWISE_BASE_CLAIM_WAIT_S", "0.5")
    repo = ObjectStoreRepository(memory_url, cache_dir=tmp_path / "cache")
    key = resolve_base(tiny_roberta_dir)[2]
    folder = layout.multi_adapter_folder(8, "fp32")
    assert repo.store.create_bytes(f"{layout.BASES_DIR}/{key}/{layout.CLAIMS_DIR}/{folder}", b"dead writer")
    with caplog.at_level(logging.WARNING, logger="training.publish"):
        export_shared_graph(repo, str(tiny_roberta_dir), 4, ["fp32"], "roberta")
    assert f"no multi-adapter graph for {tiny_roberta_dir}: RepositoryError" in caplog.text
    assert "another writer claimed it" in caplog.text
    assert "lora_mode: merged serves the version" in caplog.text
    assert not repo.has_base(key, folder)
