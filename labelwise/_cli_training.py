"""`labelwise train|compare|evaluate|export|tune`: filled in by the training issues."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Training commands are added here; training is imported inside each command, never at start-up."""
