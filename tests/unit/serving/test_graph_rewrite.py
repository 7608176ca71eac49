"""CPU sessions run SkipLayerNormalization as Add + LayerNormalization (serving/engine/graph_rewrite.py):
same outputs, no fused node left after ORT's own optimisation, the file on disk untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from serving.engine import OnnxGraph  # noqa: E402
from serving.engine.graph_rewrite import ENV, cpu_session_path, rewritten_graph, unfuse_skip_layer_norm  # noqa: E402
from serving.engine.runner import session_setup  # noqa: E402

HIDDEN = 8
CPU = ["CPUExecutionProvider"]


def _residual_graph(path: Path, opset: int = 17, with_bias: bool = True) -> Path:
    """x -> 3 x SkipLayerNormalization(x, skip) chained, with random gamma/beta/bias."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(1, 0.1, HIDDEN).astype(np.float32), "gamma"),
        numpy_helper.from_array(rng.normal(0, 0.1, HIDDEN).astype(np.float32), "beta"),
        numpy_helper.from_array(rng.normal(0, 0.5, HIDDEN).astype(np.float32), "bias"),
    ]
    nodes, current = [], "x"
    for i in range(3):
        inputs = [current, "skip", "gamma", "beta"] + (["bias"] if with_bias else [])
        nodes.append(
            helper.make_node(
                "SkipLayerNormalization",
                inputs,
                [f"y{i}"],
                name=f"sln{i}",
                domain="com.microsoft",
                epsilon=1e-5,
            )
        )
        current = f"y{i}"
    shape = ["batch", "tokens", HIDDEN]
    graph = helper.make_graph(
        nodes,
        "residual",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("x", "skip")],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, shape)],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {n: rng.normal(0, 2, (3, 5, HIDDEN)).astype(np.float32) for n in ("x", "skip")}


def _ops(model_or_path: object) -> list[str]:
    model = onnx.load(model_or_path) if isinstance(model_or_path, str | Path) else model_or_path
    return [n.op_type for n in model.graph.node]  # type: ignore[attr-defined]


@pytest.mark.parametrize("with_bias", [True, False])
def test_the_rewritten_graph_computes_what_the_fused_one_does(tmp_path: Path, with_bias: bool) -> None:
    path = _residual_graph(tmp_path / "g.onnx", with_bias=with_bias)
    source, count = rewritten_graph(path)
    assert count == 3 and source is not None
    assert "SkipLayerNormalization" not in _ops(onnx.load_from_string(source))
    fused = ort.InferenceSession(str(path), providers=CPU).run(None, _feeds())[0]
    unfused = ort.InferenceSession(source, providers=CPU).run(None, _feeds())[0]
    np.testing.assert_allclose(unfused, fused, rtol=1e-5, atol=1e-5)


def test_ort_does_not_fuse_the_rewritten_nodes_back(tmp_path: Path) -> None:
    source, _ = rewritten_graph(_residual_graph(tmp_path / "g.onnx"))
    assert source is not None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(source, sess_options=options, providers=CPU)
    ops = _ops(tmp_path / "optimized.onnx")
    assert "SkipLayerNormalization" not in ops and ops.count("LayerNormalization") == 3


def test_onnx_graph_on_cpu_loads_the_rewrite_and_leaves_the_file_alone(tmp_path: Path) -> None:
    path = _residual_graph(tmp_path / "g.onnx")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    graph = OnnxGraph(path, CPU, 1)
    assert graph.unfused_layer_norms == 3
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert "SkipLayerNormalization" in _ops(path)


def test_the_rewrite_can_be_turned_off_and_skips_what_it_cannot_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _residual_graph(tmp_path / "g.onnx")
    with cpu_session_path(path) as (name, count):
        assert count == 3 and name != str(path) and Path(name).is_file()
    assert not Path(name).exists()  # the rewritten copy is gone once the session is built
    monkeypatch.setenv(ENV, "0")
    with cpu_session_path(path) as loaded:
        assert loaded == (str(path), 0)
    monkeypatch.delenv(ENV)
    # before opset 17 there is no standard LayerNormalization: the fused nodes stay
    old = onnx.load(_residual_graph(tmp_path / "old.onnx", opset=16))
    assert unfuse_skip_layer_norm(old) == 0 and _ops(old).count("SkipLayerNormalization") == 3
    # a file that is not a graph is ORT's to refuse, as before
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a graph")
    assert rewritten_graph(junk) == (None, 0)


def _plain_residual_graph(path: Path) -> Path:
    """x -> 3 x LayerNormalization(x + skip): residual blocks as a raw (unoptimised) export writes them."""
    model = onnx.load(_residual_graph(path, with_bias=False))
    nodes = []
    for node in model.graph.node:
        current, skip, gamma, beta = node.input
        nodes += [
            helper.make_node("Add", [current, skip], [f"{node.name}_sum"], name=f"{node.name}_add"),
            helper.make_node(
                "LayerNormalization", [f"{node.name}_sum", gamma, beta], list(node.output), epsilon=1e-5
            ),
        ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, path)
    return path


def _session_ops(path: Path, tmp_path: Path) -> list[str]:
    """The ops of the graph a serving CPU session runs, after ORT's own optimisation."""
    options, extra = session_setup(ort, CPU, 1)
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), sess_options=options, providers=CPU, **extra)
    return _ops(tmp_path / "optimized.onnx")


def test_cpu_sessions_do_not_let_ort_fuse_plain_layer_norms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A graph published with Add + LayerNormalization (nothing to rewrite) keeps them: ORT's own
    SkipLayerNormFusion would turn them into the slow fused node. With the rewrite off it does."""
    path = _plain_residual_graph(tmp_path / "plain.onnx")
    assert rewritten_graph(path) == (None, 0) and "SkipLayerNormalization" not in _ops(path)
    ops = _session_ops(path, tmp_path)
    assert "SkipLayerNormalization" not in ops and ops.count("LayerNormalization") == 3
    plain = ort.InferenceSession(str(path), providers=CPU).run(None, _feeds())[0]
    served = OnnxGraph(path, CPU, 1).session.run(None, _feeds())[0]
    np.testing.assert_allclose(served, plain, rtol=1e-5, atol=1e-5)
    monkeypatch.setenv(ENV, "0")
    assert _session_ops(path, tmp_path).count("SkipLayerNormalization") == 3


def test_a_published_full_version_serves_the_same_logits_with_the_rewrite(
    published_repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real export (ORT's transformer optimizer fuses the residual adds and layer norms)."""
    path = published_repo.version_path("full_three", 1) / "onnx" / "model.fp32.onnx"
    ids = np.array([[0, 11, 12, 13, 2], [0, 21, 22, 2, 1]], dtype=np.int64)
    mask = (ids != 1).astype(np.int64)
    rewritten = OnnxGraph(path, CPU, 1)
    monkeypatch.setenv(ENV, "0")
    as_published = OnnxGraph(path, CPU, 1)
    assert as_published.unfused_layer_norms == 0
    assert rewritten.unfused_layer_norms == _ops(path).count("SkipLayerNormalization") > 0
    np.testing.assert_allclose(rewritten.run(ids, mask), as_published.run(ids, mask), rtol=1e-4, atol=1e-5)


def test_one_cpu_session_runs_passes_from_several_threads_without_an_arena(published_repo) -> None:
    """The pass workers share a scenario's session; on CPU it has no memory arena (runner.py says why),
    and passes of different shapes run at once from 3 threads give each pass its serial logits."""
    from concurrent.futures import ThreadPoolExecutor

    graph = OnnxGraph(published_repo.version_path("full_three", 1) / "onnx" / "model.fp32.onnx", CPU, 1)
    assert graph.session.get_session_options().enable_cpu_mem_arena is False
    rng = np.random.default_rng(1)
    passes = []
    for rows, width in [(1, 4), (3, 9), (8, 17), (2, 33), (5, 6)] * 4:
        ids = rng.integers(3, 200, (rows, width))
        ids[:, 0], ids[:, -1] = 0, 2
        passes.append((ids, np.ones_like(ids)))
    serial = [graph.run(ids, mask) for ids, mask in passes]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(lambda p: graph.run(*p), passes))
    for one, other in zip(serial, together, strict=True):
        np.testing.assert_allclose(other, one, rtol=1e-5, atol=1e-6)
