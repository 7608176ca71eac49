"""Every error the training package raises; each message names the file, column, label or setting at fault."""

from __future__ import annotations

from pathlib import Path

from model_repository import EXIT_USAGE, AdapterMismatchError, LabelwiseError


def not_a_file(path: Path) -> str:
    """Why `path`, which is not a regular file, cannot be read, for a message naming it: it is a folder, it
    exists but is something else (/dev/null, a link to /dev/zero: "does not exist" sent people looking for
    it), or it does not exist."""
    if path.is_dir():
        return "is a folder"
    return "is not a regular file" if path.exists() else "does not exist"


class TrainingError(LabelwiseError):
    """Base class for training errors: raised before training starts whenever input is bad."""


class ScenarioConfigError(TrainingError, ValueError):
    """A scenario YAML or a training setting is missing or invalid."""

    exit_code = EXIT_USAGE


class DataError(TrainingError, ValueError):
    """A data file is missing, empty, unreadable, lacks a column or holds an unknown label."""

    exit_code = EXIT_USAGE


class BaseModelNotFoundError(TrainingError, LookupError):
    """The base encoder is neither a local folder nor in the offline Hugging Face cache."""

    exit_code = EXIT_USAGE


class StrategyError(TrainingError, ValueError):
    """A strategy cannot run here: unknown LoRA targets for an architecture, QLoRA without CUDA, ..."""

    exit_code = EXIT_USAGE


class CollapsedRunError(TrainingError):
    """The run diverged to a constant answer at every learning rate it tried; it is not published."""


# ---- export (training.export) ----------------------------------------------------------------------
class ExportError(TrainingError):
    """The export could not produce trustworthy graphs; nothing is published."""


class UnknownPrecisionError(ExportError, ValueError):
    """A precision other than fp32, fp16 or int8 was asked for."""

    exit_code = EXIT_USAGE


class UnsupportedArchitectureError(ExportError):
    """optimum cannot export this architecture to ONNX."""


class ParityError(ExportError):
    """The ONNX graph does not compute what the torch model computes (fp32 over the threshold)."""


class SourceVersionError(ExportError):
    """The version to re-export is missing, fails verification, or lacks the files it needs."""


class NothingToExportError(ExportError):
    """A re-export asked only for precisions the version already holds (with this code's opset), and its
    graphs and base encoder verify: a new version would hold nothing new. `labelwise export` says so and
    exits 0 (as classify says "nothing to score"); nothing is published. Raised only when asked
    (reexport_version's skip_unchanged): a re-export of the same precisions still rebuilds a base encoder
    moved away."""


class ParityFileError(ExportError, DataError):
    """The file given for a re-export's parity rows (`--validation`) cannot be read, or, without it, the
    run's validation rows read today are not the ones it validated on: bad input, as `evaluate --data` and
    `evaluate --split` refuse them."""

    exit_code = EXIT_USAGE


# ---- multi-adapter graph (training.multi_adapter) ------------------------------------------------
class MultiAdapterError(TrainingError):
    """The multi-adapter base graph cannot be built, stored or fed."""


class UnsupportedBaseError(MultiAdapterError):
    """The base encoder's architecture has no numpy head kind or LoRA layout this graph knows."""


# ---- tuning (training.tuning) --------------------------------------------------------------------
class TuningError(TrainingError, ValueError):
    """A tune setting is invalid (trials, timeout, study name) or a study cannot run or resume."""

    exit_code = EXIT_USAGE


__all__ = [
    "AdapterMismatchError",
    "BaseModelNotFoundError",
    "DataError",
    "ExportError",
    "MultiAdapterError",
    "NothingToExportError",
    "ParityError",
    "ParityFileError",
    "ScenarioConfigError",
    "SourceVersionError",
    "StrategyError",
    "TrainingError",
    "TuningError",
    "UnknownPrecisionError",
    "UnsupportedArchitectureError",
    "UnsupportedBaseError",
    "not_a_file",
]
