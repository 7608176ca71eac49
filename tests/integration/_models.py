"""Tiny published versions for the integration tests: a full graph and frozen heads on a shared base.

A stand-in for training.export until its Python API lands; it follows docs/artifacts.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_repository import BaseEncoderRef, BaseModelRef, ExportRecord, HeadSpec, ModelRepository

MAX_LENGTH_TOKENS = 24
BASE_KEY = "tiny-roberta-000000000000"


@dataclass
class Reference:
    """The torch model a served version must agree with."""

    model: object
    tokenizer: object
    labels: list[str]

    def probs(self, texts: list[str]) -> np.ndarray:
        import torch

        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=MAX_LENGTH_TOKENS, return_tensors="pt"
        )
        with torch.no_grad():
            logits = self.model(**enc).logits
        return torch.softmax(logits, -1).numpy()


def _classifier(tiny_dir: Path, labels: list[str], seed: int):
    import torch
    from transformers import RobertaForSequenceClassification

    torch.manual_seed(seed)
    model = RobertaForSequenceClassification.from_pretrained(tiny_dir, num_labels=len(labels))
    with torch.no_grad():  # a visible head so that classes differ between seeds
        for p in model.classifier.parameters():
            p.mul_(20.0)
    return model.eval()


def _export(module, path: Path, output: str) -> None:
    import torch

    ids = torch.tensor([[0, 5, 6, 7, 2], [0, 8, 2, 1, 1]])
    mask = (ids != 1).long()
    torch.onnx.export(
        module,
        (ids, mask),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=[output],
        dynamic_axes={n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask")}
        | {output: {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


class _Logits:
    def __new__(cls, model):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask):
                return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

        return Wrapper().eval()


class _Features:
    def __new__(cls, encoder):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.encoder = encoder

            def forward(self, input_ids, attention_mask):
                return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[
                    :, 0
                ]

        return Wrapper().eval()


def _tokenizer(tiny_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


def _common(tiny_dir: Path, labels: list[str], strategy: str) -> dict:
    return {
        "strategy": strategy,
        "base_model": BaseModelRef(id=str(tiny_dir), content_hash="0" * 64, architecture="roberta"),
        "labels": labels,
        "max_length_tokens": MAX_LENGTH_TOKENS,
        "metrics": {"accuracy": 0.0},
    }


def publish_full(
    repo: ModelRepository, scenario: str, tiny_dir: Path, labels: list[str], seed: int
) -> Reference:
    model = _classifier(tiny_dir, labels, seed)
    tokenizer = _tokenizer(tiny_dir)
    with repo.new_version(scenario, **_common(tiny_dir, labels, "full")) as draft:
        tokenizer.save_pretrained(draft.path / "tokenizer")
        (draft.path / "onnx").mkdir()
        path = draft.path / "onnx" / "model.fp32.onnx"
        _export(_Logits(model), path, "logits")
        draft.fields["exports"] = [
            ExportRecord(
                precision="fp32",
                path="onnx/model.fp32.onnx",
                size_bytes=path.stat().st_size,
                inputs=["input_ids", "attention_mask"],
            )
        ]
    return Reference(model, tokenizer, labels)


def publish_frozen(
    repo: ModelRepository, scenario: str, tiny_dir: Path, labels: list[str], seed: int
) -> Reference:
    model = _classifier(tiny_dir, labels, seed)
    tokenizer = _tokenizer(tiny_dir)
    if not repo.has_base(BASE_KEY, "fp32"):
        with repo.new_base(BASE_KEY, "fp32", base_model=str(tiny_dir)) as base:
            _export(_Features(model.roberta), base.path / "encoder.onnx", "features")
    head = model.classifier
    fields = _common(tiny_dir, labels, "frozen") | {
        "base_encoder": BaseEncoderRef(key=BASE_KEY, precisions=["fp32"]),
        "head": HeadSpec(kind="roberta", path="head.npz"),
    }
    with repo.new_version(scenario, **fields) as draft:
        tokenizer.save_pretrained(draft.path / "tokenizer")
        np.savez(
            draft.path / "head.npz",
            dense_weight=head.dense.weight.detach().numpy(),
            dense_bias=head.dense.bias.detach().numpy(),
            out_proj_weight=head.out_proj.weight.detach().numpy(),
            out_proj_bias=head.out_proj.bias.detach().numpy(),
        )
    return Reference(model, tokenizer, labels)
