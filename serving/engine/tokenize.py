"""Tokenize a batch once, with dynamic padding, from a version's tokenizer folder."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np

from model_repository.text import TextNormalization, normalize_text

_PAD_CANDIDATES = ("<pad>", "[PAD]", "<PAD>", "[pad]")
# A text longer than this many characters per allowed token is tokenized from a prefix first (below).
# English runs ~4-5 characters a token; 16 leaves room for long words and still caps the work of a
# 20,000-character text at 64 tokens to ~1,000 characters.
PREFIX_CHARS_PER_TOKEN = 16


def _pad_token(folder: Path) -> str | None:
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        if path.is_file():
            pad = json.loads(path.read_text(encoding="utf-8")).get("pad_token")
            if isinstance(pad, dict):
                pad = pad.get("content")
            if isinstance(pad, str):
                return pad
    return None


class TextTokenizer:
    """A fast tokenizer with truncation at the manifest's max length and no padding of its own.

    `normalization` is the version's recorded text normalisation (None: raw text, as versions published
    before it was recorded were served): the text is cleaned exactly as training and evaluation did.
    """

    def __init__(
        self, folder: Path, max_length_tokens: int, normalization: TextNormalization | None = None
    ) -> None:
        from tokenizers import Tokenizer

        self.max_length_tokens = max_length_tokens
        self.normalization = None if normalization is None or normalization.is_identity else normalization
        self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_length_tokens)
        # Offsets are never read here: the batch call that skips them (tokenizers >= 0.21) gives the same
        # ids and truncation, 15 % faster (2,203 texts, MiniLM's tokenizer: 44.5 against 52.4 µs a text).
        self._encode_batch = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        pad = _pad_token(folder)
        candidates = ([pad] if pad else []) + list(_PAD_CANDIDATES)
        # RoBERTa derives position ids from input_ids != pad id, so the pad id must be the model's own.
        self.pad_id = next((i for c in candidates if (i := self._tok.token_to_id(c)) is not None), 0)
        # The ids of a text the model reads nothing of (only its special tokens): what a text of only
        # characters the tokenizer's own normalizer drops (zero-width, soft hyphen, control) comes to.
        self.empty_ids: list[int] = self._tok.encode("", add_special_tokens=True).ids

    def normalize(self, text: str) -> str:
        """The text this version's model reads: the request's text after the recorded normalisation."""
        return text if self.normalization is None else normalize_text(text, self.normalization)

    def encode_ids(self, texts: list[str], *, normalized: bool = False) -> tuple[list[list[int]], list[bool]]:
        """Token ids per text (truncated, unpadded) and the truncation flags, in one Rust call.

        normalized: the texts went through `normalize` already (a batch that mixes scenarios
        normalises each row with its own version's settings, then tokenizes once)."""
        if not normalized:
            texts = [self.normalize(t) for t in texts]
        limit = self.max_length_tokens * PREFIX_CHARS_PER_TOKEN
        prefixes = [_word_prefix(t, limit) for t in texts]
        encodings = self._encode(prefixes)
        # A prefix that overflowed the max length gives the text's own ids: it ends at a word followed by a
        # space, so every token it holds is a token of the whole text, and the kept ones are the first
        # max-length of them. A prefix that did not overflow says nothing: that text is encoded whole.
        again = [i for i, e in enumerate(encodings) if prefixes[i] is not texts[i] and not e.overflowing]
        for i, encoding in zip(again, self._encode([texts[i] for i in again]) if again else [], strict=True):
            encodings[i] = encoding
        return [e.ids for e in encodings], [bool(e.overflowing) for e in encodings]

    def _encode(self, texts: list[str]) -> list:
        if len(texts) == 1:
            # encode_batch lets go of the GIL and must take it back: on a replica whose pass threads run
            # Python between ORT calls that wait was up to a switch interval (5 ms) for a ~45 µs tweet
            # (measured: 3.3 ms a call beside one busy Python thread, 80 µs with encode, which keeps it).
            return [self._tok.encode(texts[0], add_special_tokens=True)]
        return self._encode_batch(texts, add_special_tokens=True)

    def pad(self, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Pad to the longest row of this micro-batch only (dynamic padding)."""
        longest = max((len(r) for r in rows), default=1) or 1
        ids = np.full((len(rows), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), longest), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return ids, mask

    def count(self, text: str) -> tuple[int, bool]:
        """Tokens after truncation, and whether it was truncated."""
        ids, cut = self.encode_ids([text])
        return len(ids[0]), cut[0]


def _word_prefix(text: str, limit: int) -> str:
    """`text` itself when it has at most `limit` characters; else its longest prefix of at most `limit`
    characters that is followed in `text` by a space (U+0020, which every pre-tokenizer splits on) and
    ends with a printable, non-space character (so no word is cut, and no character that a normalizer
    removes or joins, such as a control character, sits at the edge); `text` itself when there is none.

    Tokenizing 20,000 characters to keep 64 tokens took 4-10 ms a text on the request loop (64 such texts
    in one request: 250-670 ms, every other request and probe waiting); the prefix takes ~1,000."""
    if len(text) <= limit:
        return text
    end = text.rfind(" ", 1, limit + 1)
    while end > 0 and text[end - 1] == " ":  # back to the start of that run of spaces
        end -= 1
    if end <= 0 or text[end - 1].isspace() or unicodedata.category(text[end - 1]).startswith("C"):
        return text
    return text[:end]
