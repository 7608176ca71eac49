"""`labelwise export` / `export-bench` edges found in review."""

from __future__ import annotations

from pathlib import Path

from training.export.bench import _texts


def test_export_bench_reads_a_csv_that_starts_with_a_byte_order_mark(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" starts with a BOM: export-bench refused it, "missing column 'text' (columns:
    ['\\ufefftext', ...])", while training and `classify --file` read the same file."""
    data = tmp_path / "texts.csv"
    data.write_bytes("text,label\nthe soup was great,positive\nan awful wait,negative\n".encode("utf-8-sig"))
    assert _texts(data, 10) == ["the soup was great", "an awful wait"]
