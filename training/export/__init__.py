"""ONNX export: optimum graphs in fp32/int8/fp16, parity with torch, shared base encoders, numpy heads."""

from ._base_encoder import base_key, content_hash
from ._heads import apply_head
from ._hook import FP32_MAX_ABS_LOGIT_DIFF, export_into, parse_precisions
from .errors import (
    ExportError,
    ParityError,
    SourceVersionError,
    UnknownPrecisionError,
    UnsupportedArchitectureError,
)

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
