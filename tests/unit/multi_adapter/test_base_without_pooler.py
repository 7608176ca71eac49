"""A BERT whose checkpoint has no pooler weights (saved from BertForMaskedLM, as MLM-adapted bases are):
LoRA trains the pooler with its head, and no multi-adapter graph puts a random pooler under a linear head."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.multi_adapter.conftest import build_masked_lm_bert
from training.export.exporter import _trains_pooler
from training.model import build_model, resolve_base_model
from training.multi_adapter import UnsupportedBaseError, build_module


@pytest.fixture(scope="module")
def masked_lm_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_masked_lm_bert(tmp_path_factory.mktemp("masked-lm-bert"))


def test_a_linear_graph_on_a_base_without_pooler_weights_is_refused(masked_lm_bert: Path) -> None:
    # Loading the base draws its pooler at random: a head trained on another pooler would be served on it.
    with pytest.raises(UnsupportedBaseError, match="no pooler weights") as refused:
        build_module(masked_lm_bert, "key", 8, ["query", "value"])
    assert "bert_pooler" in str(refused.value)  # what such a base's versions are now: retrain
    # ...and how to export for a version that already is one (the advice said "retrain" to those too)
    assert 'head_kind="bert_pooler"' in str(refused.value)
    with pytest.raises(UnsupportedBaseError, match="no pooler weights"):
        build_module(masked_lm_bert, "key", 8, ["query", "value"], "linear")


def test_a_graph_whose_adapters_bring_their_pooler_builds_on_it(masked_lm_bert: Path) -> None:
    _module, spec = build_module(masked_lm_bert, "key-pre-pooler", 8, ["query", "value"], "bert_pooler")
    assert spec.head_kind == "bert_pooler"


def test_lora_on_it_trains_the_pooler_it_is_served_with(masked_lm_bert: Path) -> None:
    model = build_model(resolve_base_model(str(masked_lm_bert)), "lora", ["a", "b", "c"])
    pooler = {n for n, p in model.named_parameters() if p.requires_grad and ".pooler." in n}
    assert pooler and all("modules_to_save" in n for n in pooler), sorted(pooler)
    assert _trains_pooler(model)  # so the export gives it head kind bert_pooler


def test_a_base_with_pooler_weights_keeps_its_pooler_frozen(tiny_bert_dir: Path) -> None:
    model = build_model(resolve_base_model(str(tiny_bert_dir)), "lora", ["a", "b"])
    assert not _trains_pooler(model)
    build_module(tiny_bert_dir, "key", 8, ["query", "value"])  # its linear graph builds as before
