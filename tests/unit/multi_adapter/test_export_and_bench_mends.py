"""The multi-adapter export refuses what it must not publish, and its microbenchmark feeds real rows."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from .conftest import build_tiny_bert

# Short, of different lengths: rows are padded only to the longest of their batch.
TEXTS = [f"the app was {'really ' * (i % 7)}brilliant today" for i in range(40)]  # batches of 32 and 8


def _bert_with_tokenizer(folder: Path, padded_to: int | None = None) -> Path:
    """A tiny BERT with a pooler and a WordPiece tokenizer.json; padded_to: saved with fixed padding on,
    as MiniLM's packaged tokenizer.json is (128)."""
    from tokenizers import BertWordPieceTokenizer, Tokenizer
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(TEXTS, vocab_size=200, min_frequency=1)
    wordpiece.save_model(str(folder))
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), model_max_length=64)
    tokenizer.save_pretrained(folder)
    build_tiny_bert(folder, vocab_size=tokenizer.vocab_size)
    if padded_to is not None:
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tok.enable_padding(length=padded_to, pad_id=tokenizer.pad_token_id, pad_token="[PAD]")
        tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def bench_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bert_with_tokenizer(tmp_path_factory.mktemp("bench-bert"), padded_to=128)


@pytest.fixture
def forty_texts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench's sentences: 40, fewer than a run asks for, so its last batch holds 8 rows."""
    from training.multi_adapter import bench

    monkeypatch.setattr(bench, "_texts", lambda n: TEXTS[:n])


def test_bench_rows_keep_their_own_length_under_a_padding_tokenizer(
    bench_base: Path, forty_texts: None
) -> None:
    from tokenizers import Tokenizer

    from training.multi_adapter.bench import _batches

    plain = Tokenizer.from_file(str(bench_base / "tokenizer.json"))
    plain.no_padding()
    lengths = [len(plain.encode(t).ids) for t in TEXTS]
    batches = _batches(bench_base, 2)
    assert [len(b["input_ids"]) for b in batches] == [32, 8]
    for start, batch in zip((0, 32), batches, strict=True):
        real = lengths[start : start + len(batch["input_ids"])]
        assert batch["input_ids"].shape[1] == max(real) < 128  # padded to the batch's longest row only
        assert batch["attention_mask"].sum(axis=1).tolist() == real  # [PAD] is never marked as a token


@pytest.fixture(scope="module")
def bench_graphs(bench_base: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    from training.multi_adapter.bench import _prepare

    return _prepare(tmp_path_factory.mktemp("bench-graphs"), bench_base)


def test_bench_runs_a_short_last_batch_and_scenario_counts_without_one(
    bench_base: Path, bench_graphs: tuple[Path, Path, dict], forty_texts: None
) -> None:
    from training.multi_adapter.bench import interleaved, interleaved_lines, run_one

    shared, merged, spec_json = bench_graphs

    def spec() -> dict[str, Any]:
        return {**json.loads(json.dumps(spec_json)), "_minilm": str(bench_base)}

    for mode, graph in (("shared", shared), ("merged", merged)):
        row = run_one(mode, 3, graph, spec(), batches_n=1, threads=1)
        assert row["seq_per_s"] > 0
    ab = interleaved(shared, merged, spec(), [2, 4], threads=1)
    assert sorted(ab) == ["merged-2", "merged-4", "shared-2", "shared-4"]
    # `--scenarios 2,4 --interleaved`: no N=1 to compare with (figures of a real run: a tiny graph's CPU
    # time is below the clock's tick)
    lines = interleaved_lines({"shared-2": 2.0, "shared-4": 2.5, "merged-2": 4.0, "merged-4": 8.0}, [2, 4])
    assert lines[1] == "  N= 4: shared    2.5 (throughput x0.80 of shared N=2), merged    8.0"


def _outlier_int8_base(folder: Path) -> Path:
    """A tiny BERT whose last hidden state carries one huge channel the pooler ignores: fp32 is unmoved,
    while int8's per-tensor activation scale rounds every other channel into the pooler to zero."""
    import torch
    from transformers import BertModel

    build_tiny_bert(folder)
    model = BertModel.from_pretrained(folder)
    with torch.no_grad():
        norm = model.encoder.layer[-1].output.LayerNorm
        norm.weight[0], norm.bias[0] = 1e4, 0.0
        model.pooler.dense.weight[:, 0] = 0.0
        model.pooler.dense.weight *= 50  # tanh saturates: each row's features, and label, are its own
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def test_an_int8_graph_that_disagrees_with_torch_is_not_published(tmp_path: Path) -> None:
    from model_repository import ModelRepository, layout
    from training.multi_adapter import MultiAdapterError, export_multi_adapter_base, resolve_base

    base = _outlier_int8_base(tmp_path / "base")
    repository = ModelRepository(tmp_path / "repo")
    kwargs: dict[str, Any] = {"rank": 4, "targets": ["query", "value"], "say": lambda _line: None}
    good = export_multi_adapter_base(repository, base, precisions=["fp32"], **kwargs)["fp32"]
    published = good.read_bytes()
    with pytest.raises(
        MultiAdapterError,
        match=r"int8: argmax agreement 0\.\d+ < 0\.75 .*\(max \|Δlogit\| .*int8 not published",
    ):
        export_multi_adapter_base(repository, base, precisions=["fp32", "int8"], **kwargs)
    key = resolve_base(base)[2]
    assert repository.base_folders(key) == [layout.multi_adapter_folder(4, "fp32")]  # no int8, no leftovers
    assert good.read_bytes() == published
    assert repository.verify_base(key, layout.multi_adapter_folder(4, "fp32"))


def test_an_architecture_without_default_targets_only_logs_at_publish(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """export_shared_graph logs and the version keeps its merged graph; it does not fail the publish."""
    import torch
    from transformers import Data2VecTextConfig, Data2VecTextModel

    from model_repository import ModelRepository
    from training.multi_adapter import UnsupportedBaseError, export_multi_adapter_base
    from training.publish import export_shared_graph

    config = Data2VecTextConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    Data2VecTextModel(config).save_pretrained(tmp_path / "base", safe_serialization=True)
    repository = ModelRepository(tmp_path / "repo")
    with pytest.raises(UnsupportedBaseError, match="no default LoRA target modules for architecture"):
        export_multi_adapter_base(repository, tmp_path / "base", precisions=["fp32"])
    with caplog.at_level(logging.WARNING, logger="training.publish"):
        export_shared_graph(repository, tmp_path / "base", 8, ["fp32"], "roberta")
    assert "no multi-adapter graph for" in caplog.text
    assert not list((tmp_path / "repo").rglob("multi-lora-*"))


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--scenarios", "1,x"], "--scenarios 1,x"),
        (["--scenarios", "0"], "--scenarios 0"),
        (["--scenarios", ""], "--scenarios"),
        (["--modes", "sharde"], "--modes sharde"),
        (["--batches", "0"], "--batches 0"),
        (["--threads", "-1"], "--threads -1"),
    ],
)
def test_bench_refuses_a_bad_option_before_it_exports_anything(
    argv: list[str], named: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 naming the option, before the graphs are exported (minutes on MiniLM); a non-number failed
    after the export with a traceback, --scenarios 0 and --batches 0 in a child's ZeroDivisionError or
    IndexError, and a misspelt mode was timed as merged under the misspelt name."""
    from training.multi_adapter import bench

    def exported(*_args: Any) -> None:
        raise AssertionError("the bench exported its graphs before checking its options")

    monkeypatch.setattr(bench, "_prepare", exported)
    with pytest.raises(SystemExit) as stopped:
        bench.main(argv)
    assert stopped.value.code == 2
    assert f"error: {named}" in capsys.readouterr().err
