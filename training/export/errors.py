"""Every error the export raises; each message names the version, file or precision at fault."""

from __future__ import annotations


class ExportError(Exception):
    """The export could not produce trustworthy graphs; nothing is published."""


class UnknownPrecisionError(ExportError, ValueError):
    """A precision other than fp32, fp16 or int8 was asked for."""


class UnsupportedArchitectureError(ExportError):
    """optimum cannot export this architecture to ONNX."""


class ParityError(ExportError):
    """The ONNX graph does not compute what the torch model computes (fp32 over the threshold)."""


class SourceVersionError(ExportError):
    """The version to re-export is missing, fails verification, or lacks the files it needs."""
