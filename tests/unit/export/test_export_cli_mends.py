"""`labelwise export` / `export-bench` edges found in review."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.errors import DataError
from training.export.bench import _texts


def test_export_bench_reads_a_csv_that_starts_with_a_byte_order_mark(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" starts with a BOM: export-bench refused it, "missing column 'text' (columns:
    ['\\ufefftext', ...])", while training and `classify --file` read the same file."""
    data = tmp_path / "texts.csv"
    data.write_bytes("text,label\nthe soup was great,positive\nan awful wait,negative\n".encode("utf-8-sig"))
    assert _texts(data, 10) == ["the soup was great", "an awful wait"]


def test_export_bench_names_the_flag_of_a_csv_without_a_text_column(tmp_path: Path) -> None:
    """Every other refusal of the file named --data; this one named the path only."""
    data = tmp_path / "texts.csv"
    data.write_text("review,label\nhello,positive\n")
    with pytest.raises(DataError, match=r"^--data .*texts\.csv: missing column 'text'"):
        _texts(data, 10)
