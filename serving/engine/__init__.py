"""Tokenize -> ONNX Runtime -> probabilities, for many scenarios in one batch."""

from ._adapters import AdapterTable, MultiAdapterCache, SharedAdapterGraph, graph_folder_name
from ._engine import BatchStats, OnnxEngine, Row, RowResult, softmax
from ._router import ScenarioRouter, ScenarioState
from ._scenario import BaseEncoderCache, EngineSettings, LoadedScenario, NumpyHead, load_scenario
from ._session import OnnxGraph, choose_providers, precision_order
from ._tokenize import TextTokenizer, TokenBatch

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
