"""Tokenize a batch once, with dynamic padding, from a version's tokenizer folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

_PAD_CANDIDATES = ("<pad>", "[PAD]", "<PAD>", "[pad]")


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
    """A fast tokenizer with truncation at the manifest's max length and no padding of its own."""

    def __init__(self, folder: Path, max_length_tokens: int) -> None:
        from tokenizers import Tokenizer

        self.max_length_tokens = max_length_tokens
        self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_length_tokens)
        pad = _pad_token(folder)
        candidates = ([pad] if pad else []) + list(_PAD_CANDIDATES)
        # RoBERTa derives position ids from input_ids != pad id, so the pad id must be the model's own.
        self.pad_id = next((i for c in candidates if (i := self._tok.token_to_id(c)) is not None), 0)

    def encode_ids(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids per text (truncated, unpadded) and the truncation flags, in one Rust call."""
        encodings = self._tok.encode_batch(texts, add_special_tokens=True)
        return [e.ids for e in encodings], [bool(e.overflowing) for e in encodings]

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
        enc = self._tok.encode(text, add_special_tokens=True)
        return len(enc.ids), bool(enc.overflowing)
