"""`labelwise export`: filled in by the export issue."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Export commands are added here; training.export is imported inside each command."""
