"""ONNX Runtime sessions: provider, precision and thread choice in one place."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..optional import require

logger = logging.getLogger("labelwise.serving")


def available_providers() -> list[str]:
    return list(require("onnxruntime").get_available_providers())


def choose_providers(configured: list[str] | None, num_gpus: float) -> list[str]:
    """Configured providers, else CUDA when the replica has a GPU and onnxruntime-gpu, else CPU."""
    available = available_providers()
    if configured:
        missing = [p for p in configured if p not in available]
        if missing:
            raise ValueError(f"ort_providers: {missing} not available in this onnxruntime (has {available})")
        return list(configured)
    if num_gpus > 0 and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def precision_order(preference: str, providers: list[str]) -> list[str]:
    """Precisions to try in order: auto means fp16 on GPU, int8 on CPU, then fp32."""
    if preference != "auto":
        return [preference, "fp32"] if preference != "fp32" else ["fp32"]
    if providers and providers[0] == "CUDAExecutionProvider":
        return ["fp16", "fp32"]
    return ["int8", "fp32"]


class OnnxGraph:
    """One ONNX Runtime session; feeds only the inputs the graph declares."""

    def __init__(self, path: Path, providers: list[str], intra_op_threads: int) -> None:
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        # One request stream per replica: inter-op parallelism only adds thread contention.
        options.inter_op_num_threads = 1
        self.path = path
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_name = self.session.get_outputs()[0].name

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, extra: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """The first output; `extra` feeds further inputs (the multi-adapter graph's tables and index)."""
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, **(extra or {})}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        unknown = [n for n in self.input_names if n not in feeds]
        if unknown:
            raise ValueError(f"{self.path}: graph wants inputs {unknown} that serving cannot provide")
        return self.session.run([self.output_name], {n: feeds[n] for n in self.input_names})[0]
