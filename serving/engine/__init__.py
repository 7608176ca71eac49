"""Tokenize -> ONNX Runtime -> probabilities, for many scenarios in one batch."""

from .adapters import AdapterTable, MultiAdapterCache, SharedAdapterGraph, graph_folder_name
from .loader import BaseEncoderCache, EngineSettings, LoadedScenario, NumpyHead, load_scenario
from .registry import ScenarioRouter, ScenarioState
from .runner import BatchStats, OnnxEngine, Row, RowResult, softmax
from .session import OnnxGraph, choose_providers, precision_order
from .tokenize import TextTokenizer, TokenBatch

__all__ = [
    "AdapterTable",
    "BaseEncoderCache",
    "BatchStats",
    "EngineSettings",
    "LoadedScenario",
    "MultiAdapterCache",
    "NumpyHead",
    "OnnxEngine",
    "OnnxGraph",
    "Row",
    "RowResult",
    "ScenarioRouter",
    "ScenarioState",
    "SharedAdapterGraph",
    "TextTokenizer",
    "TokenBatch",
    "choose_providers",
    "graph_folder_name",
    "load_scenario",
    "precision_order",
    "softmax",
]
