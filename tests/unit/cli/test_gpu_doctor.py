"""`labelwise doctor`: what the engine will use here, and the refusal a replica would raise."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelwise.cli import app

ort = pytest.importorskip("onnxruntime")
CUDA_HERE = "CUDAExecutionProvider" in ort.get_available_providers()


def test_doctor_prints_providers_threads_and_precision_order(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["doctor", "--repository", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"providers available: {', '.join(ort.get_available_providers())}" in result.output
    assert "ORT intra-op threads: 1" in result.output  # num_cpus 1 by default
    expected = "fp16 > fp32" if CUDA_HERE else "int8 > fp32"
    assert f"precision order: {expected}" in result.output
    assert "(no scenario in the repository)" in result.output


@pytest.mark.skipif(CUDA_HERE, reason="checks a machine without CUDA")
def test_doctor_exits_2_with_the_refusal_a_cuda_replica_would_raise(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("ort_providers: [CUDAExecutionProvider]\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["doctor", "--config", str(config), "--repository", str(tmp_path)])
    assert result.exit_code == 2  # as `labelwise serve` refuses it
    assert "a replica would refuse to start" in result.output and "CUDAExecutionProvider" in result.output
    assert "onnxruntime-gpu" in result.output
    config.write_text("precision: fp16\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["doctor", "--config", str(config), "--repository", str(tmp_path)])
    assert result.exit_code == 2 and "precision fp16 on a replica without a GPU" in result.output


def test_dockerfile_gpu_pin_equals_constraints() -> None:
    """One onnxruntime-gpu version: the gpu extra (make install) and the image's gpu target."""
    import re

    root = Path(__file__).resolve().parents[3]
    pin = re.search(r"^onnxruntime-gpu==(\S+)$", (root / "constraints.txt").read_text(), re.M)
    arg = re.search(r"^ARG ORT_GPU_VERSION=(\S+)$", (root / "Dockerfile").read_text(), re.M)
    assert pin and arg and pin.group(1) == arg.group(1)


# The CUDA major each pinned onnxruntime-gpu wheel on PyPI is built for (its
# onnxruntime/capi/build_and_package_info.py: cuda_version; its CUDA provider links libcublas.so.<major>).
# 1.2x up to 1.26 were CUDA 12 builds; from 1.27 on PyPI carries the CUDA 13 builds.
ORT_GPU_CUDA_MAJOR = {"1.31.1": 13}


def test_the_gpu_image_has_the_cuda_major_the_pinned_wheel_needs() -> None:
    """The image's CUDA base must provide the libraries the onnxruntime-gpu wheel links against: with
    CUDA 12 under a CUDA 13 wheel the CUDA provider cannot load and every GPU replica refuses to start."""
    import re

    root = Path(__file__).resolve().parents[3]
    dockerfile = (root / "Dockerfile").read_text()
    version = re.search(r"^ARG ORT_GPU_VERSION=(\S+)$", dockerfile, re.M)
    image = re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:(\d+)\.\d+\.\d+-cudnn-runtime-\S+$", dockerfile, re.M)
    assert version and image, (
        "Dockerfile: ARG ORT_GPU_VERSION and ARG CUDA_IMAGE=nvidia/cuda:X.Y.Z-cudnn-runtime-…"
    )
    assert version.group(1) in ORT_GPU_CUDA_MAJOR, (
        f"record the CUDA major of onnxruntime-gpu=={version.group(1)}"
    )
    assert int(image.group(1)) == ORT_GPU_CUDA_MAJOR[version.group(1)]
