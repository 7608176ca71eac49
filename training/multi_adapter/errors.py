"""Every error the multi-adapter graph raises; each message names the adapter, array or field at fault."""

from __future__ import annotations

from model_repository.errors import AdapterMismatchError

__all__ = ["AdapterMismatchError", "MultiAdapterError", "UnsupportedBaseError"]


class MultiAdapterError(Exception):
    """Base class: the multi-adapter base graph cannot be built, stored or fed."""


class UnsupportedBaseError(MultiAdapterError):
    """The base encoder's architecture has no numpy head kind or LoRA layout this graph knows."""
