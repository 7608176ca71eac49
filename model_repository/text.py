"""The one text normalisation: training cleans with it, evaluation scores with it, serving applies it.

A version records the settings it was trained with (`Manifest.text_normalization`), so the text a
served request is tokenized from is the text the model was scored on. Pure Python, no dependencies.
"""

from __future__ import annotations

import html
import re

from pydantic import BaseModel, ConfigDict, Field

_TAG = re.compile(r"<[^>]{1,200}>")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")
_DIGIT = re.compile(r"\d")


class TextNormalization(BaseModel):
    """Text cleaning before tokenizing. Lower-casing and removing punctuation/digits hurt cased BPE models,
    so they are opt-in only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    normalize_whitespace: bool = Field(
        default=True, description="Collapse runs of whitespace and strip ends."
    )
    strip_html: bool = Field(default=True, description="Remove HTML tags and unescape HTML entities.")
    strip_urls: bool = Field(default=True, description="Remove http(s):// and www. URLs.")
    lowercase: bool = Field(default=False, description="Lower-case the text (opt-in: hurts cased models).")
    remove_punctuation: bool = Field(default=False, description="Drop punctuation (opt-in).")
    remove_digits: bool = Field(default=False, description="Drop digits (opt-in).")

    @property
    def is_identity(self) -> bool:
        return not any(self.model_dump().values())


# What a manifest without the field means: versions published before it tokenized the raw text.
NO_NORMALIZATION = TextNormalization(normalize_whitespace=False, strip_html=False, strip_urls=False)


def normalize_text(text: str, spec: TextNormalization) -> str:
    """The text the model sees: serving calls this on the raw request text, training on the raw row."""
    if spec.strip_html:
        text = html.unescape(_TAG.sub(" ", text))
    if spec.strip_urls:
        text = _URL.sub(" ", text)
    if spec.lowercase:
        text = text.lower()
    if spec.remove_punctuation:
        text = _PUNCT.sub(" ", text)
    if spec.remove_digits:
        text = _DIGIT.sub(" ", text)
    if spec.normalize_whitespace:
        text = _SPACE.sub(" ", text).strip()
    return text


def lone_surrogate_at(text: str) -> int | None:
    """The index of the first lone surrogate in text (a JSON `\\ud800` escape without its pair: it has no
    UTF-8 form, and no tokenizer reads it), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None
