"""Serving: Ray Serve deployments over ONNX Runtime. Never imports torch, peft or training.

`import serving` stays light: the builder and deployments live in `serving.app` (imports ray).
"""

from .config import ScenarioSpec, ServingConfig
from .errors import (
    InvalidRequestError,
    ModelLoadError,
    NotReadyError,
    ServingError,
    TextTooLongError,
    UnauthorizedError,
    UnknownScenarioError,
)

__all__ = [
    "InvalidRequestError",
    "ModelLoadError",
    "NotReadyError",
    "ScenarioSpec",
    "ServingConfig",
    "ServingError",
    "TextTooLongError",
    "UnauthorizedError",
    "UnknownScenarioError",
]
