"""Every error the load tests and the benchmark raise; each message says what to do."""

from __future__ import annotations

from model_repository.errors import EXIT_USAGE, LabelwiseError


class LoadTestError(LabelwiseError):
    """Base class for load-test and benchmark errors."""


class NotLoopbackError(LoadTestError, ValueError):
    """A target URL that is not on 127.0.0.1 / localhost: this tooling never sends traffic elsewhere."""

    exit_code = EXIT_USAGE


class LoadTestOptionError(LoadTestError, ValueError):
    """An option that cannot work (out of range, a file without texts), refused before any load."""

    exit_code = EXIT_USAGE


class ServerNotUpError(LoadTestError, TimeoutError):
    """The server did not answer its readiness probe within the bounded wait."""


class BenchError(LoadTestError, RuntimeError):
    """A benchmark step failed (a child process exited, a measurement came back empty)."""
