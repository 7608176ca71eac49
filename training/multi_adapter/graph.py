"""The multi-adapter base graph: one encoder pass for a batch whose rows use different LoRA adapters.

Each LoRA-targeted projection computes ``x @ W.T + bias + (x @ A[i].T) @ B[i].T`` where ``i`` is the
row's ``adapter_index`` and A/B (scaling folded into B) are graph *inputs*, as are the heads. So a
new or promoted scenario is a new row in the tables serving feeds, never a re-export of the graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model_repository import (
    ADAPTER_INDEX_INPUT,
    FIRST_TOKEN_MLP,
    HEAD_ARRAYS,
    NUM_LABELS_INPUT,
    ROBERTA_TYPES,
    GraphSpec,
)

from ..errors import UnsupportedBaseError

LOGITS_OUTPUT = "logits"


def head_kind_for(config: Any) -> str:
    """'roberta' or 'linear', from the HF config; other architectures have no shared numpy head."""
    model_type = getattr(config, "model_type", None)
    if model_type in ROBERTA_TYPES:
        return "roberta"
    if model_type in {"bert", "electra"} or hasattr(config, "type_vocab_size"):
        return "linear"
    raise UnsupportedBaseError(
        f"architecture {model_type!r} has no multi-adapter head kind (roberta, linear)"
    )


def token_inputs_for(config: Any, head_kind: str) -> tuple[str, ...]:
    # RoBERTa has one token type; feeding token_type_ids would only add an input serving must fake.
    if head_kind in ("linear", "bert_pooler") and int(getattr(config, "type_vocab_size", 0) or 0) > 1:
        return ("input_ids", "attention_mask", "token_type_ids")
    return ("input_ids", "attention_mask")


def _layers(encoder: Any) -> Any:
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if layers is None:
        raise UnsupportedBaseError(f"{type(encoder).__name__} has no encoder.layer list to adapt")
    return layers


def find_projections(encoder: Any, targets: list[str]) -> dict[str, tuple[int, int]]:
    """Projection paths inside a layer whose last name is a LoRA target -> (in, out) features."""
    import torch

    found = {
        name: (module.in_features, module.out_features)
        for name, module in _layers(encoder)[0].named_modules()
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets
    }
    if sorted({n.rsplit(".", 1)[-1] for n in found}) != sorted(set(targets)):
        raise UnsupportedBaseError(
            f"LoRA targets {targets} are not all linear layers of {type(encoder).__name__} "
            f"(found {sorted(found)})"
        )
    return found


class _Rows:
    """Per-forward gathered adapter rows, shared by every adapted projection; the tracer records the flow."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[Any, Any]] = {}


def _gathered_lora_linear(base: Any, rows: _Rows, proj: str, layer: int) -> Any:
    import torch

    class GatheredLoRALinear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = base

        def forward(self, x: Any) -> Any:
            a_all, b_all = rows.rows[proj]  # [batch, layers, r, in], [batch, layers, out, r]
            a, b = a_all[:, layer], b_all[:, layer]
            low = torch.matmul(x, a.transpose(1, 2))  # [batch, seq, r]
            return self.base(x) + torch.matmul(low, b.transpose(1, 2))

    return GatheredLoRALinear()


def _set_submodule(root: Any, path: str, module: Any) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def _refuse_random_weights(base_model_path: str | Path, missing: list[str]) -> None:
    """Weights the base's checkpoint lacks are drawn at random on each load: never the ones the adapters'
    heads were trained on, so the graph would answer differently from the merged graph and from torch."""
    if any("pooler" in k.split(".") for k in missing):
        raise UnsupportedBaseError(
            f"{base_model_path}: its checkpoint has no pooler weights (saved from a masked-LM model), so a "
            "linear head on the pooler would get a random one here, not the one it was trained with; "
            "a LoRA version trained on this base now trains the pooler with its head (head kind "
            "bert_pooler, served from the base's `-pre-pooler` graph): for such a version export with "
            'head_kind="bert_pooler"; retrain a version older than that'
        )
    if missing:
        raise UnsupportedBaseError(
            f"{base_model_path}: weights {missing} are not in its checkpoint and would be drawn at random, "
            "not the ones the adapters were trained with; use a complete checkpoint of the base"
        )


def build_module(
    base_model_path: str | Path, base_key: str, rank: int, targets: list[str], head_kind: str | None = None
) -> tuple[Any, GraphSpec]:
    """The torch module the graph is traced from, and the spec every fed adapter must match."""
    import torch
    from transformers import AutoConfig, AutoModel
    from transformers import logging as hf_logging

    config = AutoConfig.from_pretrained(base_model_path)
    kind = head_kind_for(config)
    if head_kind == "bert_pooler" and kind == "linear":
        kind = head_kind  # each adapter's own pooler is its head's dense layer: the base's is not used
    elif head_kind not in (None, kind):
        raise UnsupportedBaseError(
            f"architecture {config.model_type!r} has no {head_kind!r} multi-adapter head"
        )
    kwargs: dict[str, Any] = {"attn_implementation": "eager"}
    if kind in FIRST_TOKEN_MLP:
        kwargs["add_pooling_layer"] = False
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "pooler weights not used" is expected for roberta heads
    try:
        encoder, loading = AutoModel.from_pretrained(
            base_model_path, config=config, output_loading_info=True, **kwargs
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    encoder.eval()
    if kind == "linear" and getattr(encoder, "pooler", None) is None:
        raise UnsupportedBaseError(
            f"{base_model_path}: a linear head needs the encoder's pooler, it has none"
        )
    _refuse_random_weights(base_model_path, list(loading["missing_keys"]))
    projections = find_projections(encoder, targets)
    rows = _Rows()
    layers = _layers(encoder)
    for index, layer in enumerate(layers):
        for proj in projections:
            _set_submodule(layer, proj, _gathered_lora_linear(layer.get_submodule(proj), rows, proj, index))
    spec = GraphSpec(
        base_key=base_key,
        architecture=str(config.model_type),
        head_kind=kind,
        num_layers=len(layers),
        hidden_size=int(config.hidden_size),
        rank=int(rank),
        projections=projections,
        token_inputs=token_inputs_for(config, kind),
    )
    names = spec.input_names()

    class MultiAdapterClassifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, *inputs: Any) -> Any:
            named = dict(zip(names, inputs, strict=True))
            idx = named[ADAPTER_INDEX_INPUT]
            for proj in projections:
                rows.rows[proj] = (named[f"lora.{proj}.A"][idx], named[f"lora.{proj}.B"][idx])
            out = self.encoder(**{k: named[k] for k in spec.token_inputs}, return_dict=True)
            features = out.pooler_output if kind == "linear" else out.last_hidden_state[:, 0]
            if kind in FIRST_TOKEN_MLP:
                dense = torch.bmm(named["head.dense_weight"][idx], features.unsqueeze(-1)).squeeze(-1)
                features = torch.tanh(dense + named["head.dense_bias"][idx])
                weight, bias = named["head.out_proj_weight"][idx], named["head.out_proj_bias"][idx]
            else:
                weight, bias = named["head.weight"][idx], named["head.bias"][idx]
            logits = torch.bmm(weight, features.unsqueeze(-1)).squeeze(-1) + bias
            # Columns past a row's own label count are padding from wider scenarios: -inf, never a label.
            positions = torch.ones_like(logits).cumsum(-1) - 1
            keep = positions < named[NUM_LABELS_INPUT][idx].unsqueeze(-1).to(logits.dtype)
            return torch.where(keep, logits, torch.full_like(logits, float("-inf")))

    return MultiAdapterClassifier().eval(), spec


def random_tables(
    spec: GraphSpec, n_adapters: int, num_labels: list[int], seed: int = 0
) -> dict[str, np.ndarray]:
    """Non-zero random tables (for export checks and benchmarks), shaped as build_tables makes them."""
    rng = np.random.default_rng(seed)
    width, h, r = max(num_labels), spec.hidden_size, spec.rank
    out: dict[str, np.ndarray] = {}
    for proj, (d_in, d_out) in spec.projections.items():
        out[f"lora.{proj}.A"] = rng.normal(0, 0.05, (n_adapters, spec.num_layers, r, d_in)).astype(np.float32)
        out[f"lora.{proj}.B"] = rng.normal(0, 0.05, (n_adapters, spec.num_layers, d_out, r)).astype(
            np.float32
        )
    shapes = {
        "dense_weight": (h, h),
        "dense_bias": (h,),
        "out_proj_weight": (width, h),
        "out_proj_bias": (width,),
        "weight": (width, h),
        "bias": (width,),
    }
    for name in HEAD_ARRAYS[spec.head_kind]:
        out[f"head.{name}"] = rng.normal(0, 0.1, (n_adapters, *shapes[name])).astype(np.float32)
    out[NUM_LABELS_INPUT] = np.asarray(num_labels, dtype=np.int64)
    return out


def dummy_tokens(
    spec: GraphSpec, batch: int, seq: int, vocab_size: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Token ids with ragged padding, so a check exercises the attention mask."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab_size, (batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    for row in range(batch):
        mask[row, max(2, seq - row * 3) :] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in spec.token_inputs:
        out["token_type_ids"] = np.zeros((batch, seq), dtype=np.int64)
    return out


def run_torch(module: Any, spec: GraphSpec, feed: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return module(*(torch.from_numpy(np.asarray(feed[n])) for n in spec.input_names())).float().numpy()


def export_onnx(module: Any, spec: GraphSpec, path: Path, vocab_size: int, opset: int = 17) -> Path:
    """Trace the module to ONNX with every token, table and label axis dynamic."""
    import contextlib
    import io
    import warnings

    import torch

    # Distinct sizes per axis, so the tracer cannot confuse batch, adapters and labels.
    feed = {**dummy_tokens(spec, 3, 9, vocab_size), **random_tables(spec, 2, [4, 2])}
    feed[ADAPTER_INDEX_INPUT] = np.asarray([1, 0, 1], dtype=np.int64)
    names = spec.input_names()
    axes: dict[str, dict[int, str]] = {n: {0: "batch_size", 1: "sequence_length"} for n in spec.token_inputs}
    axes[ADAPTER_INDEX_INPUT] = {0: "batch_size"}
    for name in names:
        if name.startswith(("lora.", "head.")):
            axes[name] = {0: "n_adapters"}
    for name in ("head.out_proj_weight", "head.out_proj_bias", "head.weight", "head.bias"):
        if name in names:
            axes[name][1] = "max_labels"
    axes[LOGITS_OUTPUT] = {0: "batch_size", 1: "max_labels"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(torch.from_numpy(feed[n]) for n in names),
            str(path),
            input_names=names,
            output_names=[LOGITS_OUTPUT],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,  # the TorchScript exporter, as training.export uses (no onnxscript needed)
        )
    return path
