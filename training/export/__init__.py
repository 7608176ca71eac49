"""ONNX export: optimum graphs in each precision of `RECIPES`, parity with torch, shared base encoders.

`export_into` is the hook training calls before a version is sealed; `reexport.reexport_version` and
`bench.run_bench` back `labelwise export` and `labelwise bench`.
"""

from ..errors import (
    ExportError,
    ParityError,
    SourceVersionError,
    UnknownPrecisionError,
    UnsupportedArchitectureError,
)
from .exporter import export_into
from .precisions import RECIPES, PrecisionRecipe, parse_precisions

__all__ = [
    "RECIPES",
    "ExportError",
    "ParityError",
    "PrecisionRecipe",
    "SourceVersionError",
    "UnknownPrecisionError",
    "UnsupportedArchitectureError",
    "export_into",
    "parse_precisions",
]
