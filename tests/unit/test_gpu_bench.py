"""`make gpu-bench DRY_RUN=1`: the device script's code path, on CPU with a tiny model, prints its table."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("optimum.exporters.onnx", reason="the training extra is not installed")
pytest.importorskip("onnxruntime", reason="the serving extra is not installed")

ROOT = Path(__file__).resolve().parents[2]


def test_dry_run_prints_one_table_for_every_length_and_batch_size(tmp_path: Path) -> None:
    from loadtests.gpu_bench import BATCH_SIZES, LENGTHS

    out = subprocess.run(
        [sys.executable, "-m", "loadtests.gpu_bench", "--dry-run", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=420,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    table = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| path | L | B | seq/s | bound seq/s | ratio to bound |")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[1:] if "---" not in line]
    in_process = {(int(r[1]), int(r[2])): r for r in rows if r[0] == "in-process"}
    assert set(in_process) == {(n, b) for n in LENGTHS for b in BATCH_SIZES}
    for r in in_process.values():
        assert float(r[3].replace(",", "")) > 0 and float(r[5]) > 0
    assert "precision: fp32" in out.stdout and "matmul:" in out.stdout
    report = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert report["backend"].startswith("onnxruntime CPU EP") and report["matmul_tflops"] > 0
    # The exported graph went through the project's export and the repository.
    assert list((tmp_path / "repository" / "gpu-bench").glob("*/manifest.json"))
    if importlib_has("ray.serve"):
        http = [r for r in rows if r[0] == "HTTP"]
        assert sorted(int(r[1]) for r in http) == sorted(LENGTHS)
        assert all(float(r[3].replace(",", "")) > 0 for r in http)
        assert re.search(r"HTTP L=32: [0-9.]+ of the best in-process figure", out.stdout)


def test_a_full_run_without_a_gpu_refuses_with_the_dry_run_hint() -> None:
    import onnxruntime as ort
    import torch

    if torch.cuda.is_available() or "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has a GPU")
    from loadtests.errors import BenchError
    from loadtests.gpu_bench import pick_backend

    with pytest.raises(BenchError, match="DRY_RUN=1"):
        pick_backend(dry_run=False)


def importlib_has(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False
