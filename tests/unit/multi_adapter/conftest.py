"""Tiny LoRA scenarios on tiny random bases, and their multi-adapter graphs in a throwaway repository."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("peft", reason="the training extra is not installed")

RANK = 4


@dataclass
class Scenario:
    """One LoRA scenario: its peft model, the merged torch model it must agree with, and its npz arrays."""

    name: str
    peft_model: Any
    merged: Any
    lora: dict[str, np.ndarray]
    head: dict[str, np.ndarray]
    num_labels: int


def make_scenario(
    base_dir: Path,
    name: str,
    num_labels: int,
    seed: int,
    *,
    rank: int = RANK,
    targets=None,
    layers=None,
    train_pooler: bool = False,
) -> Scenario:
    """Build the classifier as training does, then give B and the head random non-zero weights."""
    import torch

    from training.export.heads import head_arrays, head_kind, lora_arrays
    from training.model import build_model, resolve_base_model

    labels = [f"{name}-{i}" for i in range(num_labels)]
    base = resolve_base_model(str(base_dir))
    model = build_model(
        base,
        "lora",
        labels,
        lora_r=rank,
        lora_alpha=2 * rank,
        lora_target_modules=targets,
        lora_train_pooler=train_pooler,
    )
    if layers is not None:  # training has no layers_to_transform setting: rebuild with peft directly
        from peft import LoraConfig, TaskType, get_peft_model

        config = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=rank,
            lora_alpha=2 * rank,
            target_modules=["query", "value"],
            layers_to_transform=layers,
            modules_to_save=["classifier"],
        )
        model = get_peft_model(build_model(base, "full", labels), config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, param in model.named_parameters():
            # lora_B starts at zero (the adapter adds nothing): random B makes each scenario distinct.
            if "lora_B" in pname or "lora_A" in pname or "modules_to_save" in pname:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    model.eval()
    merged = copy.deepcopy(model).merge_and_unload().eval()
    lora = lora_arrays(model)
    assert lora is not None
    kind = "bert_pooler" if train_pooler else head_kind(merged)
    return Scenario(name, model, merged, lora, head_arrays(merged, kind), num_labels)


def _tiny_bert_config(vocab_size: int) -> Any:
    """A 2-layer, 32-wide BERT config with sentence-pair token types."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
    )


def build_tiny_bert(folder: Path, vocab_size: int = 120, seed: int = 1) -> Path:
    """A random 2-layer, 32-wide BERT encoder with a pooler, saved in folder."""
    import torch
    from transformers import BertModel

    torch.manual_seed(seed)
    BertModel(_tiny_bert_config(vocab_size)).save_pretrained(folder, safe_serialization=True)
    return folder


def build_masked_lm_bert(folder: Path, seed: int = 0) -> Path:
    """A random 2-layer, 32-wide BERT saved from BertForMaskedLM, with a WordPiece tokenizer: its checkpoint
    has no pooler weights, as an MLM-adapted (domain) BERT has none."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertForMaskedLM, BertTokenizerFast

    from tests.conftest import _WORDS, toy_sentences

    folder.mkdir(parents=True, exist_ok=True)
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(
        [s for label in _WORDS for s in toy_sentences(label, 150, seed=99)], vocab_size=400, min_frequency=1
    )
    wordpiece.save_model(str(folder))
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), model_max_length=64)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    BertForMaskedLM(_tiny_bert_config(tokenizer.vocab_size)).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer, 32-wide BERT encoder with a pooler (linear head kind); no tokenizer needed."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from model_repository import ModelRepository

    return ModelRepository(tmp_path_factory.mktemp("multi-repo"))


@pytest.fixture(scope="session")
def roberta_graphs(repo: Any, tiny_roberta_dir: Path) -> dict[str, Path]:
    from training.multi_adapter import export_multi_adapter_base

    return export_multi_adapter_base(repo, tiny_roberta_dir, rank=RANK, precisions=("fp32", "int8"))


@pytest.fixture(scope="session")
def roberta_scenarios(tiny_roberta_dir: Path) -> list[Scenario]:
    return [
        make_scenario(tiny_roberta_dir, "reviews", 3, seed=1),
        # query/value only (the default before every linear projection): zero blocks for the others
        make_scenario(tiny_roberta_dir, "spam", 2, seed=2, targets=["query", "value"]),
        make_scenario(tiny_roberta_dir, "intent", 5, seed=3, rank=2),  # zero-padded to the table rank
    ]


@pytest.fixture(scope="session")
def roberta_tokens(tiny_roberta_dir: Path) -> dict[str, np.ndarray]:
    from transformers import AutoTokenizer

    from tests.conftest import toy_sentences

    texts = toy_sentences("positive", 4, seed=5) + toy_sentences("negative", 4, seed=6)
    texts[1] = texts[1] + " and " + texts[2] + " but " + texts[3]  # one long row: ragged padding
    enc = AutoTokenizer.from_pretrained(tiny_roberta_dir)(texts, padding=True, return_tensors="np")
    return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}
