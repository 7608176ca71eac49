"""Engine mends: a failed pass names its scenario in the log; a rewrite that could not be written leaves no
partial copy behind; the config refuses infinite durations."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from model_repository import ModelRepository
from serving import ServingConfig


def test_a_failed_pass_is_logged_with_the_scenario_and_version_it_ran(
    published_repo: ModelRepository, caplog: pytest.LogCaptureFixture
) -> None:
    from serving.batching import BatchItem, run_items
    from serving.engine import BaseEncoderCache, EngineSettings, OnnxEngine, Row, load_scenario

    settings = EngineSettings(["CPUExecutionProvider"], ["fp32"], intra_op_threads=1)
    version = load_scenario(published_repo, "full_three", 1, settings, BaseEncoderCache())

    def broken(input_ids: np.ndarray, mask: np.ndarray, extra: dict | None = None) -> np.ndarray:
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : node '/layer.0/MatMul_quant'")

    version.graph.run = broken  # a graph that breaks under traffic: its error names a node only
    items = [BatchItem(Row(version, "the film was great"), time.perf_counter())]
    with caplog.at_level(logging.ERROR, logger="serving.batching"):
        (result,) = run_items(items, OnnxEngine().run)
    assert isinstance(result, RuntimeError)
    (line,) = [r.getMessage() for r in caplog.records if "rows failed" in r.getMessage()]
    assert "scenario full_three v1" in line and "MatMul_quant" in line, line


def test_a_rewritten_graph_that_cannot_be_written_leaves_no_partial_copy(tmp_path: Path) -> None:
    """A full disk (a file size limit stands in) while writing the CPU rewrite: the published graph is
    loaded instead, and the cut temporary copy is removed, not left to hold the room the next open needs."""
    pytest.importorskip("onnx")
    from tests.unit.serving.test_graph_rewrite import _residual_graph

    graph = _residual_graph(tmp_path / "g.onnx")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    script = textwrap.dedent(
        f"""
        import resource, signal, tempfile
        from pathlib import Path
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        tempfile.tempdir = {str(scratch)!r}
        from serving.engine.graph_rewrite import cpu_session_path
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, resource.RLIM_INFINITY))
        for _ in range(3):
            with cpu_session_path(Path({str(graph)!r})) as (path, count):
                assert (path, count) == ({str(graph)!r}, 0), (path, count)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no room for the rewritten graph" in done.stderr
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("field", ["retry_after_s", "request_timeout_s", "health_check_period_s"])
def test_infinite_durations_are_refused_at_config(
    tmp_path: Path, field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # retry_after_s: inf made every overload answer a 500 (math.ceil(inf) in the Retry-After header)
    with pytest.raises(ValidationError, match=field):
        ServingConfig(repository=str(tmp_path), **{field: math.inf})
    monkeypatch.setenv(f"LABELWISE_{field.upper()}", "1e400")  # what an env var or YAML reads as inf
    with pytest.raises(ValidationError, match=field):
        ServingConfig(repository=str(tmp_path))
