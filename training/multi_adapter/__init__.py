"""The multi-adapter base graph (issue 9): rows of different LoRA scenarios share one batch and one graph."""

from model_repository import AdapterEntry, GraphSpec, build_tables, check_adapter, table_bytes

from ..errors import AdapterMismatchError, MultiAdapterError, UnsupportedBaseError
from .base_graph import export_multi_adapter_base, load_spec, resolve_base
from .graph import build_module

__all__ = [
    "AdapterEntry",
    "AdapterMismatchError",
    "GraphSpec",
    "MultiAdapterError",
    "UnsupportedBaseError",
    "build_module",
    "build_tables",
    "check_adapter",
    "export_multi_adapter_base",
    "load_spec",
    "resolve_base",
    "table_bytes",
]
