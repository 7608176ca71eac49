"""Every error the multi-adapter graph raises; each message names the adapter, array or field at fault."""

from __future__ import annotations


class MultiAdapterError(Exception):
    """Base class: the multi-adapter base graph cannot be built, stored or fed."""


class AdapterMismatchError(MultiAdapterError, ValueError):
    """An adapter or head does not fit the graph: other rank, target modules, base, layers or head shape."""


class UnsupportedBaseError(MultiAdapterError):
    """The base encoder's architecture has no numpy head kind or LoRA layout this graph knows."""
