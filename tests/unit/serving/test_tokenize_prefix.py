"""A long text is tokenized from a word-aligned prefix (serving.engine.tokenize._word_prefix): the ids and
the truncation flag must be exactly those of tokenizing the whole text, for any text and tokenizer."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from serving.engine.tokenize import PREFIX_CHARS_PER_TOKEN, TextTokenizer, _word_prefix

PIECES = [
    "the",
    "film",
    "was",
    "great",
    "awful",
    "refund",
    "naïve",
    "café",
    "Ünïcödé",
    "日本語の文",
    "😀",
    "e\u0301",
    "don't",
    "well-known",
    "...",
    "!!",
    "(x)",
    "1234567",
    "http://a.b/c?d=e",
    "a" * 150,
    "supercalifragilisticexpialidocious" * 3,
    "\u00a0",
    "\u3000",
    "\x1c",
    "\x00",
    "\u200b",
]
SEPARATORS = [" ", " ", " ", "  ", "\n", "\t", " \n ", "\r\n", ""]


def _texts(seed: int, n: int, max_length: int) -> list[str]:
    rng = random.Random(seed)
    limit = max_length * PREFIX_CHARS_PER_TOKEN
    out = []
    for _ in range(n):
        parts: list[str] = []
        target = rng.randint(limit - 40, limit * 3)  # around the prefix limit, and well past it
        while sum(len(p) for p in parts) < target:
            parts += [rng.choice(PIECES), rng.choice(SEPARATORS)]
        out.append("".join(parts)[:target])
    return out


def _tokenizer_dirs(tiny_roberta_dir: Path) -> list[Path]:
    from tests.conftest import minilm_path

    found = [tiny_roberta_dir]
    if minilm_path() is not None:
        found.append(minilm_path())  # WordPiece with BERT's normalizer, beside RoBERTa's byte-level BPE
    return found


@pytest.mark.parametrize("max_length", [8, 32])
def test_prefix_tokenizing_gives_the_whole_texts_ids(tiny_roberta_dir: Path, max_length: int) -> None:
    for folder in _tokenizer_dirs(tiny_roberta_dir):
        tokenizer = TextTokenizer(folder, max_length)
        whole = Tokenizer.from_file(str(folder / "tokenizer.json"))
        whole.no_padding()
        whole.enable_truncation(max_length=max_length)
        texts = _texts(seed=max_length, n=400, max_length=max_length)
        prefixed = sum(_word_prefix(t, max_length * PREFIX_CHARS_PER_TOKEN) is not t for t in texts)
        assert prefixed > 200, prefixed  # most texts really take the prefix path
        expected = [whole.encode(t) for t in texts]
        ids, cut = tokenizer.encode_ids(texts, normalized=True)  # the batch call
        assert ids == [e.ids for e in expected], folder
        assert cut == [bool(e.overflowing) for e in expected], folder
        for text, e in zip(texts[:60], expected[:60], strict=True):  # the one-text call
            assert tokenizer.encode_ids([text], normalized=True) == ([e.ids], [bool(e.overflowing)])


def test_the_prefix_ends_a_word_before_a_space() -> None:
    assert _word_prefix("short text", 64) == "short text"
    assert _word_prefix("one two three four", 10) == "one two"  # the space after "two" is kept out
    assert _word_prefix("one two   three", 9) == "one two"  # back to the start of a run of spaces
    long_word = "x" * 50
    assert _word_prefix(long_word, 10) is long_word  # no space: the whole text
    assert _word_prefix("ab\x1c cd ef", 5) == "ab\x1c cd ef"  # a control character at the edge: whole
    assert _word_prefix("ab\n cd ef", 4) == "ab\n cd ef"  # other whitespace at the edge: whole


@pytest.mark.parametrize("invisible", ["\u200b", "\ufeff\u200b", "\u00ad", "\x00\x07"])
def test_a_text_its_tokenizer_drops_whole_is_found_before_the_model_reads_it(
    tmp_path: Path, invisible: str
) -> None:
    """A WordPiece tokenizer's BERT normalizer drops zero-width, soft-hyphen and control characters: a
    text of only those is neither blank nor cleaned away, yet the model would read only [CLS] [SEP] and
    answer a label. The service refuses it (the last value of _tokenize names it), as a blank text."""
    from tokenizers import models, normalizers, pre_tokenizers, processors

    from serving.service import _tokenize

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "fine": 4}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.save(str(tmp_path / "tokenizer.json"))
    tokenizer = TextTokenizer(tmp_path, 16)
    found = _tokenize(tokenizer, ["fine", invisible, f"{invisible}fine"])
    assert found[0][2] == [2, 4, 3] and found[2] is None  # around a word they are dropped, not refused
    assert found[-1] == 1, found  # the index of the text the model would read nothing of
