"""Which ONNX Runtime execution providers a replica asks for, and proof that its sessions got them.

ONNX Runtime does not fail when a provider cannot start: a session asked for CUDA whose CUDA or cuDNN
libraries do not load runs on the CPU provider after one warning. A GPU replica that quietly serves
from the CPU is worse than one that refuses to start, so every session is checked after creation
(`check_session_providers`) and a missing provider is refused with its likely cause.
"""

from __future__ import annotations

import logging
from importlib import metadata

from ..errors import ModelLoadError
from ..optional import require

logger = logging.getLogger("labelwise.serving")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# Distributions that install the `onnxruntime` module; two of them in one environment overwrite each
# other's files, and whichever was installed last decides which providers exist.
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")


def available_providers() -> list[str]:
    """Providers this onnxruntime build offers (offered is not working: see check_session_providers)."""
    return list(require("onnxruntime").get_available_providers())


def installed_ort() -> dict[str, str]:
    """{distribution: version} of every ONNX Runtime package installed here."""
    found = {}
    for name in ORT_DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def likely_cause(provider: str) -> str:
    """Why `provider` is not running here, from what is installed; one sentence for an error message."""
    packages = installed_ort()
    listed = ", ".join(f"{k}=={v}" for k, v in packages.items()) or "no onnxruntime package"
    if provider != CUDA:
        return f"{provider} is not part of the installed ONNX Runtime build ({listed})"
    if "onnxruntime-gpu" not in packages:
        return (
            f"the CPU-only package is installed ({listed}), which has no CUDA provider: install "
            "onnxruntime-gpu instead (pip uninstall onnxruntime, then pip install -c constraints.txt "
            "'labelwise[gpu]'; `make install` does this on a machine with nvidia-smi)"
        )
    if "onnxruntime" in packages:
        return (
            f"both onnxruntime and onnxruntime-gpu are installed ({listed}); they share one module and "
            "the CPU build may have overwritten the GPU one: uninstall both, then install 'labelwise[gpu]'"
        )
    return (
        f"{listed} is installed but CUDA did not start: the CUDA 13 / cuDNN 9 libraries that PyPI's "
        "onnxruntime-gpu is built for (libcudart.so.13, libcublas.so.13, libcudnn.so.9) are not on the "
        "library path, or no GPU is visible to this process "
        "(nvidia-smi, CUDA_VISIBLE_DEVICES, the pod's nvidia.com/gpu limit); ONNX Runtime's own "
        "warning in this log names the library it could not load"
    )


def choose_providers(configured: list[str] | None, num_gpus: float) -> list[str]:
    """Configured providers, else CUDA (then CPU) when the replica has a GPU, else CPU.

    A provider that this build does not offer is refused here, before any session is created; a
    replica given a GPU never falls back to the CPU provider silently.
    """
    available = available_providers()
    if configured:
        if num_gpus > 0 and configured[0] == CPU:
            # Ray would reserve a GPU for this replica, and every session would run on the CPU: ORT gives
            # each node to the first provider listed that runs it, and the CPU provider runs every node.
            fix = f"put {CUDA} first" if CUDA in configured else f"add {CUDA} to ort_providers first"
            raise ModelLoadError(
                f"num_gpus={num_gpus:g} reserves a GPU for each replica, but ort_providers "
                f"{list(configured)} runs nothing on it (ONNX Runtime gives every node to the first "
                f"provider listed that runs it, and {CPU} runs them all): {fix} (or leave it unset), or set "
                "num_gpus: 0"
            )
        missing = [p for p in configured if p not in available]
        if missing:
            raise ModelLoadError(
                f"ort_providers asks for {missing[0]}, which this ONNX Runtime does not offer "
                f"(it offers {available}): {likely_cause(missing[0])}"
            )
        return list(configured)
    if num_gpus > 0:
        if CUDA not in available:
            raise ModelLoadError(
                f"num_gpus={num_gpus:g} but {CUDA} is not available (ONNX Runtime offers {available}): "
                f"{likely_cause(CUDA)}"
            )
        return [CUDA, CPU]
    return [CPU]


def check_session_providers(in_use: list[str], requested: list[str], what: str) -> None:
    """Refuse a session that is not running on every provider asked for (CPU is always there)."""
    dropped = [p for p in requested if p != CPU and p not in in_use]
    if dropped:
        raise ModelLoadError(
            f"{what}: asked for {dropped[0]} but the ONNX Runtime session runs on {in_use}: "
            f"{likely_cause(dropped[0])}"
        )


def device_of(in_use: list[str]) -> str:
    """'cuda' when the session's first provider is CUDA, else 'cpu' (where IO binding places tensors)."""
    return "cuda" if in_use and in_use[0] == CUDA else "cpu"


__all__ = [
    "CPU",
    "CUDA",
    "available_providers",
    "check_session_providers",
    "choose_providers",
    "device_of",
    "installed_ort",
    "likely_cause",
]
