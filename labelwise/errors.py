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


class ClientError(LabelwiseError):
    """The service answered with an error; `status`, `type`, `field` and `body` come from its answer."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        self.status = status
        self.body = body
        self.type = error.get("type", "http_error")
        self.field = error.get("field")
        super().__init__(f"{status} {self.type}: {error.get('message', body)}")


class MissingExtraError(LabelwiseError, ImportError):
    """An optional dependency is not installed; the message names the pip command that installs it."""

    exit_code = EXIT_USAGE


__all__ = [
    "EXIT_RUNTIME",
    "EXIT_USAGE",
    "ClientError",
    "ExportError",
    "LabelwiseError",
    "LoadTestError",
    "MissingExtraError",
    "RepositoryError",
    "ServingError",
    "TrainingError",
    "TuningError",
    "UsageError",
]
