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

from loadtests import gpu_bench

ROOT = Path(__file__).resolve().parents[2]


# The whole GPU-bench dry run, 47-58 s (`make gpu-bench DRY_RUN=1` runs the same); CI time: `make test-all`.
@pytest.mark.slow
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


def test_building_the_model_writes_nothing_to_stdout(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """stdout carries only the report: the tokenizer's training printed 3 empty lines ahead of the table."""
    from loadtests.gpu_bench import TINY, build_base

    build_base(tmp_path / "base", TINY)
    assert capfd.readouterr().out == ""


def test_the_http_texts_are_exactly_l_tokens_and_never_past_the_models_max(tmp_path: Path) -> None:
    """They were L to L+4 tokens (129 at L=128, past the model's 128): a word past L is passed over."""
    from transformers import AutoTokenizer

    from loadtests.errors import BenchError
    from loadtests.gpu_bench import LENGTHS, TINY, build_base, texts_of_length

    base = build_base(tmp_path / "base", TINY)
    tok = AutoTokenizer.from_pretrained(base)
    for length in LENGTHS:
        texts = texts_of_length(base, length, 64)
        assert len(set(texts)) == 64
        assert {len(tok(t, verbose=False)["input_ids"]) for t in texts} == {length}, length
    with pytest.raises(BenchError, match=f"texts of {max(LENGTHS) + 1} tokens: the model reads at most"):
        texts_of_length(base, max(LENGTHS) + 1, 1)


def importlib_has(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def run_gpu_bench(
    *args: str, out_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python -m loadtests.gpu_bench --dry-run ARGS --out OUT_DIR`, bounded in time."""
    cmd = [sys.executable, "-m", "loadtests.gpu_bench", "--dry-run", *args, "--out", str(out_dir)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


# CI time (30 minutes on the 2-core box): in `make test-all`, not `make test`.
@pytest.mark.slow
def test_the_torch_path_runs_without_exporting(tmp_path: Path) -> None:
    """`--backend torch`: the path of a GPU machine without onnxruntime-gpu, here on CPU in fp32."""
    from loadtests.gpu_bench import BATCH_SIZES, LENGTHS

    out = run_gpu_bench("--backend", "torch", "--no-lora", out_dir=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert report["backend"] == "torch fp32 + SDPA, dry run"
    cells = {(r["length"], int(r["batch"])) for r in report["rows"] if r["path"] == "in-process"}
    assert cells == {(n, b) for n in LENGTHS for b in BATCH_SIZES}
    assert all(r["seq_per_s"] > 0 for r in report["rows"])
    assert not (tmp_path / "repository").exists()  # nothing was exported: no ORT session reads it
    assert "HTTP: skipped on the torch path" in out.stdout


# ---- the HTTP step: values-gpu's serve config, and a failed step keeps the report --------------------
VALUES_GPU = ROOT / "helm" / "labelwise" / "values-gpu.yaml"
# values-gpu.yaml's replicas-per-GPU and batching settings: the HTTP step serves with these as written.
GPU_BATCHING = tuple(k for k in gpu_bench.HTTP_SHOWN if k not in ("num_gpus", "num_cpus"))


def values_gpu_args() -> dict:
    import yaml

    return yaml.safe_load(VALUES_GPU.read_text(encoding="utf-8"))["serve"]["args"]


# A second whole dry run (~23 s of CI) for a failing HTTP step: `make test-all`.
_SECOND_DRY_RUN = pytest.mark.slow


@pytest.fixture(scope="module")
def http_fails(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    """A dry run whose HTTP step fails: `labelwise serve` exits as it starts, before Ray, since its Ray temp
    folder is a file. (A port out of range or taken is refused before the first figure.)"""
    from serving.local_ray import free_loopback_port

    out_dir = tmp_path_factory.mktemp("gpu-bench-http-fails")
    not_a_folder = out_dir.parent / f"{out_dir.name}-ray-temp"
    not_a_folder.write_text("a file", encoding="utf-8")
    env = {"LABELWISE_RAY_TEMP_DIR": str(not_a_folder)}
    port = str(free_loopback_port())
    return run_gpu_bench("--no-lora", "--port", port, out_dir=out_dir, env=env), out_dir


@_SECOND_DRY_RUN
def test_the_http_step_serves_with_values_gpus_batching(http_fails: tuple) -> None:
    """The serve config written for `labelwise serve` carries values-gpu.yaml's batching (not the CPU
    defaults: pass_padding_tokens 8 would cut the bench's L..L+4-token rows into passes by length)."""
    import yaml

    if not importlib_has("ray.serve"):
        pytest.skip("Ray Serve is not installed: the HTTP step does not run")
    _out, out_dir = http_fails
    written = yaml.safe_load((out_dir / "serve-config.yaml").read_text(encoding="utf-8"))
    gpu = values_gpu_args()
    assert {k: written.get(k) for k in GPU_BATCHING} == {k: gpu[k] for k in GPU_BATCHING}
    assert written["pass_padding_tokens"] == 65536 and written["batch_wait_timeout_s"] == 0.005
    # Two replicas, as values-gpu runs per GPU (num_gpus 0.5); the dry run's CPU provider has no GPU.
    assert written["num_replicas"] == round(1 / gpu["num_gpus"]) == 2
    assert written["num_gpus"] == 0 and written["ort_providers"] == ["CPUExecutionProvider"]
    assert written["precision"] == "fp32" and written["scenarios"] == [{"name": "gpu-bench"}]
    report = json.loads((out_dir / "gpu_bench.json").read_text())
    assert report["http_serve_config"] == written
    note = next(n for n in report["notes"] if n.startswith("HTTP serve config from"))
    assert "helm/labelwise/values-gpu.yaml" in note and "2 replicas" in note
    assert "pass_padding_tokens 65536" in note and "batch_wait_timeout_s 0.005" in note


def test_the_gpu_serve_config_is_values_gpu_with_only_the_benchs_own_settings(tmp_path: Path) -> None:
    from loadtests.gpu_bench import VALUES_GPU_ARGS, Plan, http_serve_config
    from serving.config import ServingConfig

    gpu = values_gpu_args()
    assert gpu == VALUES_GPU_ARGS  # the fallback for a machine without the chart is the chart's values
    plan = Plan(False, tmp_path)
    config, note = http_serve_config(plan, tmp_path / "repository", "fp16", "cuda")
    own = {"repository", "scenarios", "precision", "num_replicas", "max_texts_per_request", "num_cpus"}
    assert {k: v for k, v in config.items() if k not in own} == {k: v for k, v in gpu.items() if k not in own}
    assert config["num_gpus"] == 0.5 and config["num_replicas"] == 2  # two replicas per GPU
    assert config["ort_providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert config["precision"] == "fp16" and config["repository"] == str(tmp_path / "repository")
    assert "2 replicas per GPU" in note and "pass_padding_tokens 65536" in note
    checked = ServingConfig(**config)  # what `labelwise serve --config` validates
    assert checked.pass_padding_tokens == 65536 and checked.batch_wait_timeout_s == 0.005
    missing, why = http_serve_config(plan, tmp_path / "repository", "fp16", "cuda", tmp_path / "none.yaml")
    assert missing == config and "not here" in why


@_SECOND_DRY_RUN
def test_a_failed_http_step_keeps_the_table_and_the_json(http_fails: tuple) -> None:
    """The HTTP step fails as the LoRA mix may: FAILED under the table, the other figures kept, exit 1."""
    from loadtests.gpu_bench import BATCH_SIZES, LENGTHS

    if not importlib_has("ray.serve"):
        pytest.skip("Ray Serve is not installed: the HTTP step does not run")
    out, out_dir = http_fails
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "| path | L | B | seq/s | bound seq/s | ratio to bound |" in out.stdout
    # `labelwise serve` refused its Ray temp folder and exited; the bench reports it, with the log's tail
    refused = r"^FAILED: HTTP: BenchError: labelwise serve exited with code [12] while starting"
    assert re.search(refused, out.stdout, re.M)
    report = json.loads((out_dir / "gpu_bench.json").read_text())
    cells = {(r["length"], int(r["batch"])) for r in report["rows"] if r["path"] == "in-process"}
    assert cells == {(n, b) for n in LENGTHS for b in BATCH_SIZES}
    assert all(r["seq_per_s"] > 0 for r in report["rows"])
    assert [f.split(":")[0] for f in report["failures"]] == ["HTTP"]


def test_a_server_that_never_gets_ready_keeps_the_other_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ServerNotUpError is a LoadTestError and a TimeoutError, not a BenchError: still caught."""
    from loadtests import gpu_bench
    from loadtests.errors import ServerNotUpError

    if not importlib_has("ray.serve"):
        pytest.skip("Ray Serve is not installed: the HTTP step does not run")

    def never_ready(*_args: object, **_kwargs: object) -> dict:
        raise ServerNotUpError("labelwise serve at http://127.0.0.1:1 was not ready after 300s")

    monkeypatch.setattr(gpu_bench, "through_http", never_ready)
    from serving.local_ray import free_loopback_port

    plan = gpu_bench.Plan(
        True, tmp_path, lengths=(32,), batch_sizes=(1, 4), seconds_per_cell=0.01, lora=False, threads=1
    )
    plan.port = free_loopback_port()  # checked free before the figures
    report = gpu_bench.run(plan, say=lambda _m: None)
    assert report.failures == [
        "HTTP: ServerNotUpError: labelwise serve at http://127.0.0.1:1 was not ready after 300s"
    ]
    assert [(r.path, r.length, r.batch) for r in report.rows] == [
        ("in-process", 32, "1"),
        ("in-process", 32, "4"),
    ]
    written = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert written["failures"] == report.failures and len(written["rows"]) == 2
    assert "FAILED: HTTP: ServerNotUpError" in gpu_bench.render(report)


@pytest.mark.parametrize(
    "error",
    [
        "loadtests.errors:ServerNotUpError",
        "serving.errors:ModelLoadError",
        "subprocess:TimeoutExpired",
    ],
)
def test_main_answers_a_load_test_error_with_a_message_not_a_traceback(
    error: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import importlib

    from loadtests import gpu_bench

    module, name = error.split(":")
    kind = getattr(importlib.import_module(module), name)
    exc = kind(["labelwise-loadgen"], 42) if name == "TimeoutExpired" else kind("it did not come up")

    def fails(plan: object, say: object) -> None:
        raise exc

    monkeypatch.setattr(gpu_bench, "run", fails)
    assert gpu_bench.main(["--dry-run", "--out", str(tmp_path)]) == 1
    assert f"error: {name}: " in capsys.readouterr().err


# ---- ORT's CUDA provider: listed is not working ------------------------------------------------------
def test_cuda_listed_but_not_starting_takes_the_torch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime-gpu built for another CUDA lists CUDAExecutionProvider, but its sessions run on the
    CPU: simulated here by listing CUDA on this CPU build, whose session then runs on the CPU."""
    import onnxruntime as ort
    import torch

    if torch.cuda.is_available() or "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has a GPU")
    from loadtests.gpu_bench import pick_backend

    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    backend, device, precision = pick_backend(dry_run=False)
    assert backend == "torch fp16 + SDPA (ORT's CUDA provider did not start)"
    assert (device, precision) == ("cuda", "fp16")
    notes: list[str] = []
    pick_backend(False, "auto", notes)
    assert len(notes) == 1 and "runs on ['CPUExecutionProvider']" in notes[0]


def test_the_cuda_probe_needs_no_onnx_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe's graph is serialized in the file: gpu_bench runs where only torch and onnxruntime are."""
    from loadtests.gpu_bench import PROBE_GRAPH, cuda_session_fails

    if importlib_has("onnx"):
        import onnx

        model = onnx.load_from_string(PROBE_GRAPH)
        onnx.checker.check_model(model)
        assert [n.op_type for n in model.graph.node] == ["Identity"]
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    why = cuda_session_fails()
    import torch

    if torch.cuda.is_available():
        return  # on a GPU machine: None where ORT's CUDA provider works, else why not
    assert why is not None and why.startswith("ORT lists CUDAExecutionProvider but")


# ---- options refused before any work -----------------------------------------------------------------
@pytest.mark.parametrize("under", [False, True])
def test_an_out_that_is_a_file_is_one_line_and_exit_2(
    under: bool, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """--out naming a file (or a path under one) ended in a NotADirectoryError / FileExistsError traceback at
    the first mkdir: now one line naming the file, exit 2, before the CUDA check or any export."""
    from loadtests.gpu_bench import main

    blocking = tmp_path / "report.txt"
    blocking.write_text("not a folder", encoding="utf-8")
    out = blocking / "gpu" if under else blocking
    assert main(["--out", str(out), "--no-http"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    said = f"is inside {blocking}, which is a file" if under else "is a file, not a folder"
    assert len(err) == 1 and err[0].startswith(f"error: --out {out} ") and said in err[0], err
    assert blocking.read_text(encoding="utf-8") == "not a folder"


@pytest.mark.parametrize("port", ["70000", "-3"])
def test_a_port_no_server_can_listen_on_is_refused_before_the_figures(
    port: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """--port 70000 was taken, and the HTTP step refused it only after every in-process figure and the
    LoRA mix (minutes of a lent GPU): now one line, exit 2, before anything runs."""
    from loadtests.gpu_bench import main

    out = tmp_path / "gb"
    assert main(["--dry-run", "--no-lora", "--port", port, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --port {port}: use a TCP port from 1 to 65535 (or 0: a free one)"], err
    assert not out.exists()  # refused before the first figure


def test_a_port_whose_direct_ingress_range_runs_past_65535_is_refused_before_the_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """--port 65535 was accepted, though the HTTP step's 2 direct-ingress replicas (values-gpu's num_gpus
    0.5) take 65535 and 65536: now refused at the start, naming the range; --no-http needs no range."""
    import argparse

    from loadtests.gpu_bench import http_replicas, main, refuse_unusable_options, values_gpu_args

    replicas = http_replicas(values_gpu_args()[0])
    assert replicas == 2
    out = tmp_path / "out"
    assert main(["--dry-run", "--no-lora", "--port", "65535", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: --port 65535: the HTTP step's 2 direct-ingress replicas take ports 65535-65536, past 65535; "
        "use a port from 1 to 65534 (or 0: a free one), or --no-http"
    ], err
    assert not out.exists()
    for port, no_http in ((65534, False), (65535, True)):  # the last port that fits; no HTTP step
        refuse_unusable_options(argparse.Namespace(port=port, no_http=no_http, out=out))


def test_a_taken_port_is_refused_before_the_figures(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--port of a server still running (an earlier bench's, in its own session) failed the HTTP step only
    after every in-process figure and the LoRA mix: now refused before the first one, naming the port."""
    import socket

    from loadtests.gpu_bench import main
    from serving.local_ray import free_loopback_port

    if not importlib_has("ray.serve"):
        pytest.skip("Ray Serve is not installed: the HTTP step does not run")
    out = tmp_path / "gb"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:  # bound, never listening
        taken.bind(("127.0.0.1", free_loopback_port()))
        port = taken.getsockname()[1]
        assert main(["--dry-run", "--no-lora", "--port", str(port), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"error: BenchError: labelwise serve: 127.0.0.1:{port} is in use"
    )
    assert not (out / "gpu_bench.json").exists() and not (out / "base").exists()  # no figure was taken
