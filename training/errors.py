"""Every error the training package raises; each message names the file, column, label or setting at fault."""

from __future__ import annotations


class TrainingError(Exception):
    """Base class for training errors: raised before training starts whenever input is bad."""


class ScenarioConfigError(TrainingError, ValueError):
    """A scenario YAML or a training setting is missing or invalid."""


class DataError(TrainingError, ValueError):
    """A data file is missing, empty, unreadable, lacks a column or holds an unknown label."""


class BaseModelNotFoundError(TrainingError, LookupError):
    """The base encoder is neither a local folder nor in the offline Hugging Face cache."""


class StrategyError(TrainingError, ValueError):
    """A strategy cannot run here: unknown LoRA targets for an architecture, QLoRA without CUDA, ..."""
