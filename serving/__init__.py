"""Serving: Ray Serve deployments over ONNX Runtime. Never imports torch, peft or training.

`import serving` stays light: the Serve app lives in `serving.app` (imports ray), the replica's
service in `serving.service`. The request path is drawn in docs/architecture.md.
"""

from .config import ScenarioSpec, ServingConfig
from .errors import (
    InvalidRequestError,
    ModelLoadError,
    NotReadyError,
    RequestTimeoutError,
    ServingError,
    TextEmptyOnceCleanedError,
    TextTooLongError,
    UnauthorizedError,
    UnknownScenarioError,
)

__all__ = [
    "InvalidRequestError",
    "ModelLoadError",
    "NotReadyError",
    "RequestTimeoutError",
    "ScenarioSpec",
    "ServingConfig",
    "ServingError",
    "TextEmptyOnceCleanedError",
    "TextTooLongError",
    "UnauthorizedError",
    "UnknownScenarioError",
]
