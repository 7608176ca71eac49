"""Errors of the tuning package; each subclasses training's so one `except TrainingError` catches them."""

from __future__ import annotations

from ..errors import TrainingError


class TuningError(TrainingError, ValueError):
    """A tune setting is invalid (trials, timeout, study name) or a study cannot run or resume."""
