"""Served = scored: the engine cleans a request's raw text with the normalisation its version recorded."""

from __future__ import annotations

from model_repository.text import NO_NORMALIZATION, TextNormalization, normalize_text
from serving.engine import Row
from serving.engine.runner import OnnxEngine

RAW = "  <b>Great</b> film &amp; cast,\n\n see https://example.com/x?y=1  now "
CLEAN = "Great film & cast, see now"


def test_normalize_text_is_the_training_cleaning() -> None:
    from training.data import clean_text

    spec = TextNormalization()
    assert normalize_text(RAW, spec) == CLEAN == clean_text(RAW, spec)
    assert normalize_text(RAW, NO_NORMALIZATION) == RAW and NO_NORMALIZATION.is_identity
    assert (
        normalize_text(
            "A1 b!", TextNormalization(lowercase=True, remove_punctuation=True, remove_digits=True)
        )
        == "a b"
    )


def test_published_versions_record_it_and_the_engine_serves_the_cleaned_text(loaded_scenarios: dict) -> None:
    loaded = loaded_scenarios["full_three"]
    assert loaded.manifest.text_normalization == TextNormalization()
    tokenizer = loaded.tokenizer
    assert tokenizer.encode_ids([RAW])[0] == tokenizer.encode_ids([CLEAN], normalized=True)[0]
    assert tokenizer.count(RAW) == tokenizer.count(CLEAN)
    raw_result, clean_result = OnnxEngine().classify([Row(loaded, RAW), Row(loaded, CLEAN)])
    assert raw_result.logits.tolist() == clean_result.logits.tolist()
    unclean = tokenizer.encode_ids([RAW], normalized=True)[0]
    assert unclean != tokenizer.encode_ids([RAW])[0]  # the test text really changes when cleaned


def test_one_text_and_a_batch_tokenize_alike(loaded_scenarios: dict) -> None:
    """A one-text request takes the tokenizer's single-text call (it keeps the GIL); a batch the batch
    call that skips offsets. Same ids and the same truncation flag either way, at and past the version's
    max length."""
    tokenizer = loaded_scenarios["full_three"].tokenizer
    long_text = " ".join(["word"] * (tokenizer.max_length_tokens * 2))
    texts = [RAW, CLEAN, long_text, "", "é 東京 🙂"]
    assert tokenizer._encode_batch.__name__ == "encode_batch_fast"  # the batch call without offsets
    ids, truncated = tokenizer.encode_ids(texts)
    assert truncated[2] and not truncated[0] and len(ids[2]) == tokenizer.max_length_tokens
    for text, batch_ids, batch_cut in zip(texts, ids, truncated, strict=True):
        assert tokenizer.encode_ids([text]) == ([batch_ids], [batch_cut])
