"""The engine: load versions (loader), know which serves (registry), tokenize, run ONNX Runtime (runner)."""

from .adapters import AdapterTable, MultiAdapterCache, SharedAdapterGraph
from .loader import (
    BaseEncoderCache,
    EngineSettings,
    LoadedScenario,
    available_providers,
    choose_providers,
    load_scenario,
    precision_order,
)
from .registry import LoadEvent, ScenarioRegistry, ScenarioState
from .runner import BatchOutcome, BatchStats, OnnxEngine, OnnxGraph, Row, RowResult, softmax
from .tokenize import TextTokenizer

__all__ = [
    "AdapterTable",
    "BaseEncoderCache",
    "BatchOutcome",
    "BatchStats",
    "EngineSettings",
    "LoadEvent",
    "LoadedScenario",
    "MultiAdapterCache",
    "OnnxEngine",
    "OnnxGraph",
    "Row",
    "RowResult",
    "ScenarioRegistry",
    "ScenarioState",
    "SharedAdapterGraph",
    "TextTokenizer",
    "available_providers",
    "choose_providers",
    "load_scenario",
    "precision_order",
    "softmax",
]
