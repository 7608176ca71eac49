"""Torch heads as numpy arrays, the encoder that feeds them, and LoRA matrices as numpy.

The math that applies a head.npz lives in model_repository.heads (serving applies it too).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from model_repository import ROBERTA_TYPES

from ..model import ENCODER_LAYER


def _encoder_of(model: Any) -> Any:
    return getattr(model, model.base_model_prefix, None)


def head_kind(model: Any) -> str | None:
    """'mean_mlp', 'roberta', 'linear' or None (no numpy head: served through its own graph). A BERT
    classifier that trained its pooler is 'bert_pooler': the caller knows (exporter._trains_pooler)."""
    import torch

    from ..frozen import HEAD_KIND, MeanPoolingClassifier

    if isinstance(model, MeanPoolingClassifier):
        return HEAD_KIND
    classifier = getattr(model, "classifier", None)
    model_type = getattr(model.config, "model_type", None)
    if (
        model_type in ROBERTA_TYPES
        and isinstance(getattr(classifier, "dense", None), torch.nn.Linear)
        and isinstance(getattr(classifier, "out_proj", None), torch.nn.Linear)
    ):
        return "roberta"
    encoder = _encoder_of(model)
    if isinstance(classifier, torch.nn.Linear) and getattr(encoder, "pooler", None) is not None:
        return "linear"
    return None


def head_arrays(model: Any, kind: str) -> dict[str, np.ndarray]:
    """The head's weights in torch layout (out x in), float32, under the names docs/artifacts.md gives."""
    c = model.classifier

    def arr(t: Any) -> np.ndarray:
        return t.detach().float().cpu().numpy().astype(np.float32)

    if kind == "bert_pooler":  # the trained pooler is the dense layer, the classifier the out_proj
        pooler = _encoder_of(model).pooler.dense
        return {
            "dense_weight": arr(pooler.weight),
            "dense_bias": arr(pooler.bias),
            "out_proj_weight": arr(c.weight),
            "out_proj_bias": arr(c.bias),
        }
    if kind in ("roberta", "mean_mlp"):
        standardise = {"mean": arr(c.mean), "scale": arr(c.scale)} if kind == "mean_mlp" else {}
        return {
            **standardise,
            "dense_weight": arr(c.dense.weight),
            "dense_bias": arr(c.dense.bias),
            "out_proj_weight": arr(c.out_proj.weight),
            "out_proj_bias": arr(c.out_proj.bias),
        }
    return {"weight": arr(c.weight), "bias": arr(c.bias)}


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


class FeatureEncoder:
    """Factory for a torch module: token ids -> exactly what the head consumes (`features`)."""

    @staticmethod
    def build(encoder: Any, kind: str, input_names: list[str]) -> Any:
        import torch

        class _Features(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.encoder = encoder

            def forward(self, *inputs: Any) -> Any:
                named = dict(zip(input_names, inputs, strict=True))
                out = self.encoder(**named, return_dict=True)
                if kind == "mean_mlp":
                    from ..frozen import mean_pool

                    return mean_pool(out.last_hidden_state, named["attention_mask"])
                return out.pooler_output if kind == "linear" else out.last_hidden_state[:, 0]

        return _Features().eval()


def lora_arrays(peft_model: Any) -> dict[str, np.ndarray] | None:
    """Stack each targeted projection's LoRA A [r, in], B [out, r] and scaling across layers.

    Keys: `<proj>.A` [n, r, in], `<proj>.B` [n, out, r], `<proj>.scaling` [n], `<proj>.layers` [n]
    where <proj> is the module path inside a layer (e.g. `attention.self.query`). None when the
    model holds no plain LoRA layer, or one the multi-adapter graph cannot carry (DoRA, LoRA on an
    embedding table or on a module outside the encoder's layers other than the classifier): no lora.npz,
    and `lora_mode: shared` refuses the version by name instead of serving it without part of its adapter.
    """
    from peft.tuners.lora import LoraLayer

    adapter = getattr(peft_model, "active_adapter", "default")
    adapter = adapter[0] if isinstance(adapter, list | tuple) else adapter
    stacks: dict[str, list[tuple[int, np.ndarray, np.ndarray, float]]] = {}
    for name, module in peft_model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        if adapter in getattr(module, "lora_embedding_A", {}):
            return None  # LoRA on an embedding table: the multi-adapter graph adapts layer projections only
        if adapter not in getattr(module, "lora_A", {}):
            continue
        if getattr(module, "use_dora", {}).get(adapter, False):
            return None
        match = re.search(ENCODER_LAYER.pattern + r"(.+)$", name)
        if match is None:
            if "classifier" in name:
                continue  # LoRA on the classifier: it lives in head.npz once merged
            return None  # e.g. the pooler's dense: not in the table, so shared mode would serve without it
        layer, proj = int(match.group(1)), match.group(2)
        a = module.lora_A[adapter].weight.detach().float().cpu().numpy()
        b = module.lora_B[adapter].weight.detach().float().cpu().numpy()
        stacks.setdefault(proj, []).append((layer, a, b, float(module.scaling[adapter])))
    if not stacks:
        return None
    out: dict[str, np.ndarray] = {}
    for proj, rows in stacks.items():
        rows.sort(key=lambda r: r[0])
        out[f"{proj}.layers"] = np.asarray([r[0] for r in rows], dtype=np.int64)
        out[f"{proj}.A"] = np.stack([r[1] for r in rows]).astype(np.float32)
        out[f"{proj}.B"] = np.stack([r[2] for r in rows]).astype(np.float32)
        out[f"{proj}.scaling"] = np.asarray([r[3] for r in rows], dtype=np.float32)
    return out
