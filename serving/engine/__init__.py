"""Tokenize -> ONNX Runtime -> probabilities, for many scenarios in one batch."""

from ._engine import BatchStats, OnnxEngine, Row, RowResult, softmax
from ._router import ScenarioRouter, ScenarioState
from ._scenario import BaseEncoderCache, EngineSettings, LoadedScenario, NumpyHead, load_scenario
from ._session import OnnxGraph, choose_providers, precision_order
from ._tokenize import TextTokenizer, TokenBatch

__all__ = [
    "BaseEncoderCache",
    "BatchStats",
    "EngineSettings",
    "LoadedScenario",
    "NumpyHead",
    "OnnxEngine",
    "OnnxGraph",
    "Row",
    "RowResult",
    "ScenarioRouter",
    "ScenarioState",
    "TextTokenizer",
    "TokenBatch",
    "choose_providers",
    "load_scenario",
    "precision_order",
    "softmax",
]
