"""HTTP surface: FastAPI routes, request/response schemas, errors -> HTTP in one place."""

from .http_errors import error_response
from .routes import ClassifyBackend, check_limits, create_api
from .schemas import ClassifyRequest, ClassifyResponse, ErrorBody, LabelScore, Readiness, ScenarioInfo

__all__ = [
    "ClassifyBackend",
    "ClassifyRequest",
    "ClassifyResponse",
    "ErrorBody",
    "LabelScore",
    "Readiness",
    "ScenarioInfo",
    "check_limits",
    "create_api",
    "error_response",
]
