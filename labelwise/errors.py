"""Every error labelwise raises, and the exit codes the `labelwise` command maps them to.

All of them derive from `LabelwiseError` (defined in `model_repository.errors`, the package every
other imports). The CLI turns any `LabelwiseError` into one line on stderr, `error: <message>`, and
exits with the error's `exit_code`:

- 0: success.
- 1 (`EXIT_RUNTIME`): the command ran and failed: a version that fails its checksums, an export that
  breaks parity, a server that did not come up, a scenario or version the repository does not hold.
- 2 (`EXIT_USAGE`): the command was asked something wrong: an unknown or malformed option (click's
  own usage errors), a missing data or config file, an invalid name, a missing optional extra.

Anything else escaping a command is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any

from loadtests.errors import LoadTestError
from model_repository.errors import EXIT_RUNTIME, EXIT_USAGE, LabelwiseError, RepositoryError, UsageError
from serving.errors import ServingError
from training.errors import ExportError, TrainingError, TuningError


def _detail(body: Any) -> dict[str, Any]:
    """The `error` object of an error answer. A gateway or proxy in front of the service may send
    `{"error": "invalid token"}` or `{"error": null}`: a value that is not an object is taken as its
    message (null as none), so that the answer still maps by its status (a 401 stays an
    AuthenticationError)."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return error
    return {} if error is None else {"message": str(error)}


class ClientError(LabelwiseError):
    """The service answered with an error (or could not be reached); `status`, `type`, `field` and
    `body` come from its answer. Each error code the service sends has its own subclass
    (`ClientError.for_answer` picks it); a code this client does not know stays a plain ClientError."""

    code: str | None = None  # the service's error type this subclass stands for

    def __init__(self, status: int | None, body: dict[str, Any], request_id: str | None = None) -> None:
        error = _detail(body)
        self.status = status
        self.body = body
        # the X-Request-Id the service answered with: its log lines about this request carry it
        self.request_id = request_id
        kind = error.get("type")
        self.type = kind if isinstance(kind, str) and kind else self.code or "http_error"
        self.field = error.get("field")
        message = error.get("message", body)
        self.message = str(message)
        head = f"{status} {self.type}" if status is not None else self.type
        super().__init__(f"{head}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (a process pool's worker raising it, a Ray task) and copied as itself: Exception's
        own pickling passes only the message to __init__, which needs the status and the body."""
        return (_rebuild_client_error, (type(self), self.status, self.body, self.request_id))

    @staticmethod
    def for_answer(status: int, body: dict[str, Any], request_id: str | None = None) -> ClientError:
        """The subclass for the answer's error type, else one for its status (any other 5xx: an
        InternalServerError, e.g. a proxy's 502 page), else ClientError."""
        error = _detail(body)
        by_status = _ERROR_BY_STATUS.get(status) or (InternalServerError if status >= 500 else ClientError)
        kind = _ERROR_BY_CODE.get(str(error.get("type"))) or by_status
        return kind(status, body, request_id)


def _rebuild_client_error(
    cls: type[ClientError], status: int | None, body: dict[str, Any], request_id: str | None
) -> ClientError:
    """A ClientError (any subclass, whatever its own __init__ takes) from what __reduce__ kept."""
    error = cls.__new__(cls)
    ClientError.__init__(error, status, body, request_id)
    return error


class BadRequestError(ClientError):
    """400/422 invalid_request: the request breaks the schema or a limit; `field` names what."""

    code = "invalid_request"
    exit_code = EXIT_USAGE


class TextTooLongError(ClientError):
    """413 text_too_long: a text is over the model's max length and the request asked not to truncate."""

    code = "text_too_long"
    exit_code = EXIT_USAGE


class BodyTooLargeError(ClientError):
    """413 body_too_large: the request body is over the service's byte limit."""

    code = "body_too_large"
    exit_code = EXIT_USAGE


class BodyTimeoutError(ClientError):
    """408 request_timeout: the request body did not arrive in full within the service's
    request_timeout_s (a client or network that stalls mid-body)."""

    code = "request_timeout"


class UnsupportedMediaTypeError(ClientError):
    """415 unsupported_media_type: the body's Content-Type is not JSON, or its Content-Encoding is one the
    service does not read (this client sends plain JSON: something between it and the service changed
    the request)."""

    code = "unsupported_media_type"


class AuthenticationError(ClientError):
    """401 unauthorized: the service wants a bearer API key and got none or a wrong one."""

    code = "unauthorized"
    exit_code = EXIT_USAGE


class ScenarioNotServedError(ClientError, LookupError):
    """404 unknown_scenario: the service does not serve this scenario (GET /v1/scenarios lists them)."""

    code = "unknown_scenario"


class EndpointNotFoundError(ClientError, LookupError):
    """404 not_found: no such route (a wrong base URL or route prefix)."""

    code = "not_found"


class MethodNotAllowedError(ClientError):
    """405 method_not_allowed."""

    code = "method_not_allowed"


class ServiceNotReadyError(ClientError):
    """503 not_ready: the scenario is still loading (retried, honouring Retry-After, before raising)."""

    code = "not_ready"


class OverloadedError(ClientError):
    """429/503 overloaded: the service shed the request (retried, honouring Retry-After, before raising)."""

    code = "overloaded"


class ServerTimeoutError(ClientError):
    """504 timeout: the service did not answer within its request_timeout_s."""

    code = "timeout"


class ModelLoadFailedError(ClientError):
    """500 model_load_failed: the service could not load a version."""

    code = "model_load_failed"


class InternalServerError(ClientError):
    """500 internal_error (or any other 5xx answer without a known type)."""

    code = "internal_error"


class InvalidApiKeyError(ClientError, ValueError):
    """The api_key given to a client cannot be sent in an Authorization header (not printable ASCII: a
    trailing newline of a key read from a file, an accented letter); raised at construction, before any
    request (`status` None)."""

    code = "invalid_api_key"
    exit_code = EXIT_USAGE

    def __init__(self, message: str) -> None:
        super().__init__(None, {"error": {"type": self.code, "message": message}})


class InvalidTextError(ClientError, ValueError):
    """A text given to `classify` that no request could carry (not a string: None, a number, NaN, bytes;
    or a string with a lone surrogate, which has no UTF-8 form), or no texts at all; raised before any
    request (`status` None), naming the text by its index in the caller's list (`texts[3]`)."""

    code = "invalid_text"
    exit_code = EXIT_USAGE

    def __init__(self, message: str) -> None:
        super().__init__(None, {"error": {"type": self.code, "message": message}})


class ConnectionFailedError(ClientError, ConnectionError):
    """No answer at all: connect, read, write or pool errors outlasted every retry (`status` is None)."""

    code = "connection_failed"

    def __init__(self, message: str) -> None:
        super().__init__(None, {"error": {"type": self.code, "message": message}})


_ANSWER_ERRORS: tuple[type[ClientError], ...] = (
    BadRequestError,
    TextTooLongError,
    BodyTooLargeError,
    BodyTimeoutError,
    UnsupportedMediaTypeError,
    AuthenticationError,
    ScenarioNotServedError,
    EndpointNotFoundError,
    MethodNotAllowedError,
    ServiceNotReadyError,
    OverloadedError,
    ServerTimeoutError,
    ModelLoadFailedError,
    InternalServerError,
)
_ERROR_BY_CODE: dict[str, type[ClientError]] = {cls.code: cls for cls in _ANSWER_ERRORS if cls.code}
_ERROR_BY_STATUS: dict[int, type[ClientError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: EndpointNotFoundError,
    405: MethodNotAllowedError,
    408: BodyTimeoutError,
    413: BodyTooLargeError,
    415: UnsupportedMediaTypeError,
    422: BadRequestError,
    429: OverloadedError,
    500: InternalServerError,
    503: OverloadedError,
    504: ServerTimeoutError,
}


class InputRowError(UsageError):
    """A row of an input file cannot be scored (no text column, an empty line, invalid UTF-8, bad JSON);
    the message names the file, the row (1-based, header excluded) and the line."""

    def __init__(self, path: object, row: int, line: int | None, what: str) -> None:
        self.path = path
        self.row = row
        self.line = line
        self.what = what
        where = f"row {row}" + (f" (line {line})" if line is not None else "")
        super().__init__(f"{path}: {where}: {what}")


class EvaluationError(LabelwiseError):
    """`labelwise evaluate` through the serving engine failed on a row (exit 1)."""


class MissingExtraError(LabelwiseError, ImportError):
    """An optional dependency is not installed; the message names the pip command that installs it."""

    exit_code = EXIT_USAGE


__all__ = [
    "EXIT_RUNTIME",
    "EXIT_USAGE",
    "AuthenticationError",
    "BadRequestError",
    "BodyTimeoutError",
    "BodyTooLargeError",
    "ClientError",
    "ConnectionFailedError",
    "EndpointNotFoundError",
    "EvaluationError",
    "ExportError",
    "InputRowError",
    "InternalServerError",
    "InvalidApiKeyError",
    "InvalidTextError",
    "LabelwiseError",
    "LoadTestError",
    "MethodNotAllowedError",
    "MissingExtraError",
    "ModelLoadFailedError",
    "OverloadedError",
    "RepositoryError",
    "ScenarioNotServedError",
    "ServerTimeoutError",
    "ServiceNotReadyError",
    "ServingError",
    "TextTooLongError",
    "TrainingError",
    "TuningError",
    "UnsupportedMediaTypeError",
    "UsageError",
]
