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


def test_export_bench_of_a_frozen_version_times_the_shared_base_encoder_and_its_head(
    tiny_roberta_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Serving runs a frozen version's head on the shared base encoder, never the version's own graph;
    export-bench timed onnx/model.fp32.onnx and said nothing of which graph it was."""
    pytest.importorskip("onnxruntime", reason="the serving extra is not installed")
    import shutil

    from model_repository import layout
    from tests.conftest import publish_toy
    from training.errors import ExportError
    from training.export import bench

    labels = ("positive", "negative", "neutral")
    repo, manifest = publish_toy(tmp_path, tiny_roberta_dir, "spam", "frozen", labels, ["fp32"])
    data = tmp_path / "data"  # publish_toy's files
    assert manifest.base_encoder is not None and manifest.exports  # it holds its own graph too
    opened: list[Path] = []
    real_session = bench.ort_session
    monkeypatch.setattr(
        bench, "ort_session", lambda path, **kw: opened.append(path) or real_session(path, **kw)
    )

    results = bench.run_bench(repo, "spam", manifest.version, data / "validation.csv", threads=1, rows=4)

    key = manifest.base_encoder.key
    assert opened == [repo.base_path(key, "fp32") / layout.ENCODER_FILE] and list(results) == ["fp32"]
    out = capsys.readouterr().out
    assert f"fp32: timed shared base encoder + head (_bases/{key}/fp32/encoder.onnx + head.npz)" in out

    # No shared base published: serving cannot load the version, and export-bench says why.
    shutil.move(repo.base_path(key), tmp_path / "moved-away")
    with pytest.raises(
        ExportError, match=rf"spam v1 is frozen: .*no shared base is published .*_bases/{key}/fp32"
    ):
        bench.run_bench(repo, "spam", manifest.version, data / "validation.csv", threads=1, rows=4)
