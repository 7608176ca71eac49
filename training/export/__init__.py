"""ONNX export: optimum graphs in fp32/int8/fp16, parity with torch, shared base encoders, numpy heads."""

from ..errors import (
    ExportError,
    ParityError,
    SourceVersionError,
    UnknownPrecisionError,
    UnsupportedArchitectureError,
)
from .base_encoder import base_key, content_hash
from .exporter import FP32_MAX_ABS_LOGIT_DIFF, export_into, parse_precisions
from .heads import apply_head

__all__ = [
    "FP32_MAX_ABS_LOGIT_DIFF",
    "ExportError",
    "ParityError",
    "SourceVersionError",
    "UnknownPrecisionError",
    "UnsupportedArchitectureError",
    "apply_head",
    "base_key",
    "content_hash",
    "export_into",
    "parse_precisions",
]
