"""Import an optional dependency or fail with the pip command that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{module} is not installed; run: pip install 'labelwise[serving]'") from exc
