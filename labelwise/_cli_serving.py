"""`labelwise serve|promote|bench`: filled in by the serving issues."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Serving commands are added here; ray is imported inside each command, never at start-up."""
