"""Import an optional dependency, or fail with the exact install command."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtraError

__all__ = ["MissingExtraError", "require"]

_EXTRA_OF = {
    "torch": "training",
    "transformers": "training",
    "peft": "training",
    "optimum": "training",
    "datasets": "training",
    "optuna": "training",
    "sklearn": "training",
    "matplotlib": "training",
    "ray": "serving",
    "fastapi": "serving",
    "onnxruntime": "serving",
    "tokenizers": "serving",
    "prometheus_client": "serving",
    "locust": "loadtest",
    "pyarrow": "parquet",  # Parquet input and output of `labelwise classify`, a client-only install too
}


def require(module: str) -> ModuleType:
    """Import module or raise MissingExtraError (exit code 2) naming the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRA_OF.get(module.split(".")[0], "dev")
        raise MissingExtraError(f"{module} is not installed; run: pip install 'labelwise[{extra}]'") from exc
