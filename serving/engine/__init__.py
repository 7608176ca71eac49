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
from .providers import check_session_providers, installed_ort, likely_cause
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
    "check_session_providers",
    "choose_providers",
    "installed_ort",
    "likely_cause",
    "load_scenario",
    "precision_order",
    "softmax",
]
