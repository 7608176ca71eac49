"""lora_train_pooler: a BERT LoRA adapter may train the pooler (dense + tanh on the first token) with its
head, as a RoBERTa head trains its own dense layer; such a version never claims the shared base's pooler."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.multi_adapter.conftest import build_tiny_bert
from training.export.exporter import _trains_pooler
from training.model import build_model, resolve_base_model


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert-pooler"), seed=3)


def _trainable(model: object) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}  # type: ignore[attr-defined]


@pytest.mark.parametrize("train_pooler", [False, True])
def test_the_pooler_trains_only_when_asked(tiny_bert: Path, train_pooler: bool) -> None:
    model = build_model(
        resolve_base_model(str(tiny_bert)), "lora", ["a", "b", "c"], lora_train_pooler=train_pooler
    )
    trainable = _trainable(model)
    pooler = {n for n in trainable if ".pooler." in n}
    assert bool(pooler) is train_pooler, sorted(trainable)
    if train_pooler:  # trained in full (a copy beside the frozen original), never through LoRA
        assert all("modules_to_save" in n and "lora_" not in n for n in pooler), sorted(pooler)
    assert any("classifier" in n for n in trainable)
    assert any("lora_A" in n and ".layer." in n for n in trainable)
    assert _trains_pooler(model) is train_pooler


def test_a_full_model_never_counts_as_a_pooler_adapter(tiny_bert: Path) -> None:
    model = build_model(resolve_base_model(str(tiny_bert)), "full", ["a", "b"], lora_train_pooler=True)
    assert not _trains_pooler(model)


def test_a_pooler_adapter_exports_a_bert_pooler_head_on_the_pre_pooler_base(tmp_path: Path) -> None:
    """Exported, its head.npz holds the trained pooler + the classifier (kind bert_pooler), its base is
    the encoder without the pooler, and publish's multi-adapter graph under that key, fed the version's
    lora.npz and head.npz, gives the torch model's logits."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from model_repository import BaseModelRef, ModelRepository, layout
    from training.export import export_into
    from training.export.parity import ort_session
    from training.multi_adapter import AdapterEntry, build_tables, load_spec
    from training.publish import export_shared_graph

    minilm = resolve_base_model("minilm").path  # its tokenizer; the encoder is a tiny random BERT
    folder = build_tiny_bert(tmp_path / "tiny-bert-vocab", vocab_size=30522, seed=5)  # MiniLM's vocabulary
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    base = resolve_base_model(str(folder))
    model = build_model(base, "lora", ["a", "b", "c"], lora_r=4, lora_alpha=8, lora_train_pooler=True)
    generator = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    model.eval()
    texts = ["the card was charged twice", "how do I top up", "my transfer has not arrived yet", "hello"]
    repo = ModelRepository(tmp_path / "repo")
    ref = BaseModelRef(id=base.id, content_hash=base.content_hash, architecture=base.architecture)
    version_dir = tmp_path / "version"
    fields = export_into(
        version_dir, model=model, tokenizer=tokenizer, strategy="lora", base_model=ref,
        base_model_path=folder, precisions=["fp32"], parity_texts=texts, parity_labels=["a", "b", "c", "a"],
        max_length_tokens=32, repository=repo,
    )  # fmt: skip
    assert fields["head"]["kind"] == "bert_pooler"
    key = fields["base_encoder"]["key"]
    assert key.endswith("-pre-pooler")
    assert (version_dir / layout.LORA_FILE).is_file()
    export_shared_graph(repo, folder, 4, ["fp32"], "bert_pooler")
    graph = repo.base_path(key, layout.multi_adapter_folder(8, "fp32")) / layout.MULTI_ADAPTER_FILE
    assert graph.is_file()
    # Served as shared mode serves it: the version's lora.npz + head.npz in a row of the base's table.
    spec = load_spec(repo, key, 8)
    with np.load(version_dir / layout.LORA_FILE) as lora, np.load(version_dir / layout.HEAD_FILE) as head:
        entry = AdapterEntry("x", key, "bert_pooler", dict(lora), dict(head))
    enc = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="np")
    feed = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}
    feed |= build_tables(spec, [entry]) | {"adapter_index": np.zeros(len(texts), dtype=np.int64)}
    session = ort_session(graph, threads=1)
    served = session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})[0]
    with torch.inference_mode():
        tokens = {k: torch.from_numpy(v) for k, v in feed.items() if k in enc}
        reference = model(**tokens).logits.numpy()
    assert np.abs(served - reference).max() < 1e-3
