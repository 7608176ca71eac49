"""CPU-only graph rewrite at session creation: SkipLayerNormalization back into Add + LayerNormalization.

Published graphs are optimised offline (training/export: ORT's transformer optimizer, then int8), which
fuses each residual add and layer norm into one com.microsoft SkipLayerNormalization node. On ONNX
Runtime 1.32's CPU provider that fused kernel is the slow way to do it: 12 of them on a [1, 30, 384]
input (MiniLM's six layers) took 764 us against 165 us for the same math as Add + Add +
LayerNormalization, and in the whole int8 MiniLM graph they were 18-20 % of a pass (ORT's profiler;
docs/serving.md, "Layer norms on CPU"). So a session on the CPU provider is built from the graph with
each such node rewritten as

    sum = input + skip (+ bias);  output = LayerNormalization(sum, gamma, beta, epsilon, axis=-1)

The file on disk is not changed: the artifact, its checksum and what GPU replicas (whose fused kernel
is fast) load stay as published. ORT 1.32 does not fuse the rewritten nodes back (its optimised graph,
dumped, holds 13 LayerNormalization and no SkipLayerNormalization; tests/unit/serving/test_graph_rewrite.py).
A plain Add + LayerNormalization it does fuse, so CPU sessions are also built without ORT's
SkipLayerNormFusion (cpu_disabled_optimizers).

The math is the same; only the order of the float additions differs. fp32 logits moved by < 1e-7.
Under int8 a dynamically quantised MatMul re-rounds its slightly different input: on the 17 published
results versions with a validation file (runs/results/repository, up to 1,000 rows each) 35 of 13,564
top labels changed (0.26 %), while only shuffling which rows share a pass, as serving's batches do,
changed 64 of 4,500 (1.4 %) of the same graphs' answers (docs/artifacts.md, "int8 depends on the pass").
`LABELWISE_ORT_CPU_REWRITE=0` turns the rewrite off. A graph with no such node, a node with more than
one output in use, a file over 1 GiB or external data keep the path as it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger("labelwise.serving")

ENV = "LABELWISE_ORT_CPU_REWRITE"
_MAX_BYTES = 1 << 30  # protobuf serialises up to 2 GiB; big graphs load from their path as they are


def release_freed_heap() -> None:
    """Hand the heap that parsing and serialising a graph freed back to the OS (glibc's malloc_trim), so
    that the protobuf copies made for the rewrite do not stay in the replica's resident set. No-op where
    there is no glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rewrite_enabled() -> bool:
    return os.environ.get(ENV, "1") != "0"


def cpu_disabled_optimizers() -> list[str]:
    """ORT optimizers a CPU session is built without: its SkipLayerNormFusion, which turns residual
    Add + LayerNormalization pairs into the slow fused node. The rewrite's own Add + Add +
    LayerNormalization is not matched by it, but a plain Add + LayerNormalization is: a graph published
    unfused (a raw export, or a rewritten node with no bias) came back with every layer norm fused.
    Measured on such a published int8 MiniLM graph (8 rows x 30 tokens, one thread): 98-101 us a token
    with the fusion against 79-81 without it. Empty when the rewrite is off (`LABELWISE_ORT_CPU_REWRITE=0`
    keeps ORT's optimisation as it is)."""
    return ["SkipLayerNormFusion"] if rewrite_enabled() else []


def unfuse_skip_layer_norm(model: object) -> int:
    """Rewrite every single-output SkipLayerNormalization node of `model` (an onnx.ModelProto) in place;
    returns how many were rewritten."""
    from onnx import helper

    if not any(o.domain in ("", "ai.onnx") and o.version >= 17 for o in model.opset_import):  # type: ignore[attr-defined]
        return 0  # LayerNormalization is a standard op from opset 17: an older graph keeps its fused nodes
    graph = model.graph  # type: ignore[attr-defined]
    nodes = []
    rewritten = 0
    for node in graph.node:
        outputs_used = [o for o in node.output if o]
        if (
            node.domain != "com.microsoft"
            or node.op_type != "SkipLayerNormalization"
            or len(outputs_used) != 1
            or node.output[0] != outputs_used[0]
            or len(node.input) not in (3, 4, 5)
        ):
            nodes.append(node)
            continue
        epsilon = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "epsilon"), 1e-12)
        x, skip, gamma = node.input[:3]
        beta = node.input[3] if len(node.input) > 3 else ""
        bias = node.input[4] if len(node.input) > 4 else ""
        stem = f"{node.name or node.output[0]}/unfused"
        total = f"{stem}/sum"
        nodes.append(helper.make_node("Add", [x, skip], [total], name=f"{stem}/add"))
        if bias:
            nodes.append(
                helper.make_node("Add", [total, bias], [f"{stem}/sum_bias"], name=f"{stem}/add_bias")
            )
            total = f"{stem}/sum_bias"
        norm_inputs = [total, gamma] + ([beta] if beta else [])
        nodes.append(
            helper.make_node(
                "LayerNormalization",
                norm_inputs,
                [node.output[0]],
                name=f"{stem}/ln",
                axis=-1,
                epsilon=epsilon,
            )
        )
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
    return rewritten


def rewritten_graph(path: Path) -> tuple[bytes | None, int]:
    """The graph's bytes with its SkipLayerNormalization nodes rewritten, and how many; (None, 0) when
    there is nothing to rewrite, or the rewrite is off or cannot apply."""
    nothing: tuple[bytes | None, int] = (None, 0)
    if not rewrite_enabled():
        return nothing
    try:
        if path.stat().st_size > _MAX_BYTES:
            return nothing
        import onnx
    except (OSError, ImportError):
        return nothing
    try:
        model = onnx.load(str(path), load_external_data=False)
        if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
            return nothing
        count = unfuse_skip_layer_norm(model)
    except Exception as exc:  # a graph this cannot read is ORT's to load (or refuse) as it is
        logger.warning("%s: graph left as published (%s: %s)", path.name, type(exc).__name__, exc)
        return nothing
    return (model.SerializeToString(), count) if count else nothing


@contextlib.contextmanager
def cpu_session_path(path: Path) -> Iterator[tuple[str, int]]:
    """The file to build a CPU session from, and how many nodes were rewritten: a temporary copy of the
    graph with its SkipLayerNormalization nodes rewritten (removed on exit), or the graph itself.

    A file, not bytes: ONNX Runtime keeps a session built from bytes holding a copy of them (+23 MB per
    int8 MiniLM session, measured), one built from a path does not."""
    data, count = rewritten_graph(path)
    if data is None:
        yield str(path), 0
        return
    name = None
    try:
        handle, name = tempfile.mkstemp(prefix=f"labelwise-{path.stem}-", suffix=".onnx")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
    except OSError as exc:
        if name is not None:  # a cut copy would hold the room the next open needs
            with contextlib.suppress(OSError):
                os.unlink(name)
        logger.warning("%s: no room for the rewritten graph (%s); loading it as published", path.name, exc)
        yield str(path), 0
        return
    del data
    logger.info(
        "%s/%s: %d SkipLayerNormalization nodes as Add + LayerNormalization (CPU)",
        path.parent.name,
        path.name,
        count,
    )
    try:
        yield name, count
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)
        release_freed_heap()


__all__ = [
    "ENV",
    "cpu_disabled_optimizers",
    "cpu_session_path",
    "release_freed_heap",
    "rewrite_enabled",
    "rewritten_graph",
    "unfuse_skip_layer_norm",
]
