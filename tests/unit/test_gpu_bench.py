"""`make gpu-bench DRY_RUN=1`: the device script's code path, on CPU with a tiny model, prints its table."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("optimum.exporters.onnx", reason="the training extra is not installed")
pytest.importorskip("onnxruntime", reason="the serving extra is not installed")

ROOT = Path(__file__).resolve().parents[2]


def test_dry_run_prints_one_table_for_every_length_and_batch_size(tmp_path: Path) -> None:
    from loadtests.gpu_bench import (
        BATCH_SIZES,
        DRY_RUN_LORA_BATCH_SIZES,
        LENGTHS,
        LORA_ADAPTERS,
        LORA_LENGTH,
        LORA_RANK,
    )

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
    # The LoRA mix: 32 adapters mixed in one batch vs all rows on one, ratio printed beside its target.
    mixed = {int(r[2]): r for r in rows if r[0] == f"LoRA r{LORA_RANK}, {LORA_ADAPTERS} adapters mixed"}
    one = {int(r[2]): r for r in rows if r[0] == f"LoRA r{LORA_RANK}, all rows on 1 adapter"}
    assert set(mixed) == set(one) == set(DRY_RUN_LORA_BATCH_SIZES)
    for r in [*mixed.values(), *one.values()]:
        assert int(r[1]) == LORA_LENGTH and float(r[3].replace(",", "")) > 0 and float(r[5]) > 0
    for batch in DRY_RUN_LORA_BATCH_SIZES:
        assert re.search(
            rf"LoRA mix L={LORA_LENGTH} B={batch}: {LORA_ADAPTERS} adapters mixed = [0-9.]+ x one adapter "
            r"\(target >= 0.9: dry run, no verdict\)",
            out.stdout,
        )
    assert "FAILED" not in out.stdout and report["failures"] == []
    assert [m["batch"] for m in report["lora"]] == list(DRY_RUN_LORA_BATCH_SIZES)
    assert all(m["ratio"] > 0 and m["target"] == 0.9 for m in report["lora"])
    # The shared multi-adapter graph was published into the repository by training.multi_adapter.
    assert list((tmp_path / "repository" / "_bases").glob(f"*/multi-lora-r{LORA_RANK}-fp32/base.json"))
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


def test_the_lora_check_refuses_a_pass_that_ignores_each_rows_adapter() -> None:
    from loadtests.errors import BenchError
    from loadtests.gpu_bench import _check_mix

    order = np.array([0, 1, 2, 0, 1, 2])
    num_labels = np.array([3, 2, 3])
    rng = np.random.default_rng(0)
    one = rng.normal(size=(6, 3)).astype(np.float32)
    mixed = one.copy()
    mixed[order != 0] += 1.0  # rows of other adapters: other logits
    mixed[order == 1, 2] = one[order == 1, 2] = -np.inf  # adapter 1 has 2 labels: its third is masked
    _check_mix(mixed, one, order, num_labels, fp16=False)
    with pytest.raises(BenchError, match="gave adapter 0's logits"):
        _check_mix(one, one, order, num_labels, fp16=False)  # every row ran adapter 0
    swapped = mixed.copy()
    swapped[order == 0] += 1.0
    with pytest.raises(BenchError, match="rows of adapter 0 differ"):
        _check_mix(swapped, one, order, num_labels, fp16=False)
    unmasked = mixed.copy()
    unmasked[1, 2] = 0.5
    with pytest.raises(BenchError, match="past its 2 labels"):
        _check_mix(unmasked, one, order, num_labels, fp16=False)


def test_the_torch_lora_reference_runs_the_mix_on_cpu(tmp_path: Path) -> None:
    """The path taken where only torch sees the GPU, run here in fp32 on the tiny model."""
    from loadtests.gpu_bench import TINY, Plan, build_base, lora_mix_torch

    base = build_base(tmp_path / "base", TINY)
    plan = Plan(True, tmp_path, seconds_per_cell=0.01, lora_batch_sizes=(32,), lora_rounds=1, threads=1)
    timed, spec, how = lora_mix_torch(plan, base, "cpu", 1000)
    assert [b for b, _m, _o in timed] == [32] and all(m > 0 and o > 0 for _b, m, o in timed)
    assert spec.rank == 8 and len(spec.projections) == 6  # the default targets: every linear projection
    assert how.startswith("torch reference")


def importlib_has(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def test_the_torch_path_runs_without_exporting(tmp_path: Path) -> None:
    """`--backend torch`: the path of a GPU machine without onnxruntime-gpu, here on CPU in fp32."""
    from loadtests.gpu_bench import BATCH_SIZES, LENGTHS

    out = subprocess.run(
        [sys.executable, "-m", "loadtests.gpu_bench", "--dry-run", "--backend", "torch", "--no-lora",
         "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert report["backend"] == "torch fp32 + SDPA, dry run"
    cells = {(r["length"], int(r["batch"])) for r in report["rows"] if r["path"] == "in-process"}
    assert cells == {(n, b) for n in LENGTHS for b in BATCH_SIZES}
    assert all(r["seq_per_s"] > 0 for r in report["rows"])
    assert not (tmp_path / "repository").exists()  # nothing was exported: no ORT session reads it
    assert "HTTP: skipped on the torch path" in out.stdout
