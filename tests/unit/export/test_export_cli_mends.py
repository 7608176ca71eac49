"""`labelwise export` / `export-bench` edges found in review."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def test_export_bench_times_sessions_built_as_serving_builds_them(
    tiny_roberta_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """export-bench built its own ORT sessions (spinning pool threads, a CPU memory arena, ORT's fused
    SkipLayerNormalization): its seq/s were not serving's. It times sessions built by serving's OnnxGraph:
    no spinning, one inter-op thread, no arena, SkipLayerNormFusion disabled, from the unfused graph."""
    ort = pytest.importorskip("onnxruntime", reason="the serving extra is not installed")
    import onnx
    from typer.testing import CliRunner

    from labelwise.cli import app
    from serving.engine.graph_rewrite import cpu_disabled_optimizers
    from tests.conftest import publish_toy

    labels = ("positive", "negative", "neutral")
    repo, manifest = publish_toy(tmp_path, tiny_roberta_dir, "spam", "full", labels, ["fp32"])
    graph = repo.version_path("spam", manifest.version) / manifest.exports[0].path
    assert any(n.op_type == "SkipLayerNormalization" for n in onnx.load(str(graph)).graph.node)
    built: list[tuple[str, Any, dict[str, Any]]] = []

    class Recorded(ort.InferenceSession):  # the real session, its arguments kept
        def __init__(self, source: Any, sess_options: Any = None, **kw: Any) -> None:
            built.append((str(source), sess_options, kw))
            super().__init__(source, sess_options=sess_options, **kw)

    monkeypatch.setattr(ort, "InferenceSession", Recorded)
    data = tmp_path / "data" / "validation.csv"  # publish_toy's
    args = ["export-bench", "-s", "spam", "--data", str(data), "--threads", "1", "--rows", "4"]
    result = CliRunner().invoke(app, [*args, "-r", str(repo.root)])

    assert result.exit_code == 0, result.output
    (source, options, kw) = built[-1]
    assert source != str(graph)  # the copy with SkipLayerNormalization unfused, as serving loads on CPU
    assert kw.get("disabled_optimizers") == cpu_disabled_optimizers() == ["SkipLayerNormFusion"]
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.enable_cpu_mem_arena is False and options.inter_op_num_threads == 1
    assert options.intra_op_num_threads == 1
