"""The classifier head as numpy: what head.npz holds and how logits come from features. numpy only.

Training writes head.npz and checks the ONNX base encoder + this head against torch; serving applies
it to the shared base encoder's features. Both call `apply_head`, so the math exists once.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .errors import ManifestError

# kind -> the arrays head.npz must hold (torch layout: out x in)
HEAD_ARRAYS: dict[str, tuple[str, ...]] = {
    "roberta": ("dense_weight", "dense_bias", "out_proj_weight", "out_proj_bias"),
    # A BERT classifier whose pooler (dense + tanh on the first token) was trained with it (LoRA's
    # lora_train_pooler): the same math as roberta, dense = the pooler, out_proj = the classifier.
    "bert_pooler": ("dense_weight", "dense_bias", "out_proj_weight", "out_proj_bias"),
    "linear": ("weight", "bias"),
    "mean_mlp": ("mean", "scale", "dense_weight", "dense_bias", "out_proj_weight", "out_proj_bias"),
}
# Head kind -> what the shared base encoder's `features` output is for it. The base key of a pooling
# other than the historic two carries it as a suffix (identity.base_key), so that a mean-pooling base
# and a first-token or pooler base of the same model never share a graph.
FEATURES_OF_KIND: dict[str, str] = {
    "roberta": "first-token",
    "linear": "pooler",
    "mean_mlp": "mean",
    # BERT's first token before its pooler: keyed `<...>-pre-pooler`, apart from the same model's pooler base.
    "bert_pooler": "pre-pooler",
}
# Kinds whose head is dense -> tanh -> out_proj on the first token.
FIRST_TOKEN_MLP = frozenset({"roberta", "bert_pooler"})
# Floor of the L2 norm in mean_mlp, as in torch.nn.functional.normalize.
_NORM_EPS = 1e-12
# HF model_types whose sequence-classification head is dense -> tanh -> out_proj on the first token.
ROBERTA_TYPES = frozenset({"roberta", "xlm-roberta", "camembert", "data2vec-text", "xlm-roberta-xl"})


def apply_head(kind: str, arrays: Mapping[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    """Logits [rows, labels] from the base encoder's features [rows, hidden]."""
    if kind in FIRST_TOKEN_MLP:
        hidden = np.tanh(features @ arrays["dense_weight"].T + arrays["dense_bias"])
        return hidden @ arrays["out_proj_weight"].T + arrays["out_proj_bias"]
    if kind == "mean_mlp":
        unit = features / np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), _NORM_EPS)
        z = (unit - arrays["mean"]) / arrays["scale"]
        hidden = np.maximum(z @ arrays["dense_weight"].T + arrays["dense_bias"], 0.0)
        return hidden @ arrays["out_proj_weight"].T + arrays["out_proj_bias"]
    return features @ arrays["weight"].T + arrays["bias"]


class NumpyHead:
    """A head loaded from head.npz, checked for the arrays its kind needs, callable on features."""

    def __init__(self, kind: str, arrays: Mapping[str, np.ndarray]) -> None:
        if kind not in HEAD_ARRAYS:
            raise ManifestError(f"unknown head kind {kind!r} (known: {sorted(HEAD_ARRAYS)})")
        self.kind = kind
        self.arrays = {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}
        missing = [k for k in HEAD_ARRAYS[kind] if k not in self.arrays]
        if missing:
            raise ManifestError(f"head.npz of kind {kind!r} lacks arrays {missing}")

    @property
    def num_labels(self) -> int:
        return int(
            self.arrays["out_proj_bias" if "out_proj_bias" in HEAD_ARRAYS[self.kind] else "bias"].shape[0]
        )

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return apply_head(self.kind, self.arrays, features)


__all__ = ["FEATURES_OF_KIND", "FIRST_TOKEN_MLP", "HEAD_ARRAYS", "ROBERTA_TYPES", "NumpyHead", "apply_head"]
