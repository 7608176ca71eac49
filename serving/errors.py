"""Every error serving raises. `serving.api.errors` maps each to one HTTP status and JSON shape."""

from __future__ import annotations

from model_repository.errors import LabelwiseError


class ServingError(LabelwiseError):
    """Base class: `code` is the machine-readable error code clients see."""

    code = "internal_error"
    status_code = 500
    # the request field at fault, where one is (an InvalidRequestError's; an unknown scenario's on a route
    # whose API names it in a field, Infinity's `model`): the error shape's `field` / `param`
    field: str | None = None


class InvalidRequestError(ServingError):
    """The request is well-formed JSON but breaks a limit; names the field."""

    code = "invalid_request"
    status_code = 422

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class TextTooLongError(InvalidRequestError):
    """A text exceeds the model's max length and the request asked not to truncate."""

    code = "text_too_long"
    status_code = 413


class TextEmptyOnceCleanedError(InvalidRequestError):
    """A text that the version's recorded cleaning (its text_normalization: strip_html, strip_urls...)
    leaves empty, e.g. only markup or a URL: its model would read nothing and still answer a label, and
    training refuses such a row."""


class UnknownScenarioError(ServingError, LookupError):
    """The scenario is not served by this deployment."""

    code = "unknown_scenario"
    status_code = 404
    # the alias a scenario listed as skipped lacks (skipped()); None for a name not in the repository
    skipped_alias: str | None = None

    @classmethod
    def not_served(cls) -> UnknownScenarioError:
        """A name this deployment does not serve (not echoed back): the registry's answer on /v1 and on the
        compatibility routes that name a scenario (KServe's words it as a model: compat._unknown_as_model)."""
        return cls("unknown scenario: GET /v1/scenarios lists the scenarios served here")

    @classmethod
    def skipped(cls, name: str, alias: str) -> UnknownScenarioError:
        """Serve-all mode: the scenario is in the repository (listed as skipped) but has no `alias`: what
        every route answers a request for it, /v1 and the compatibility routes alike."""
        exc = cls(
            f"scenario {name!r} is not served: it has no {alias!r} alias; promote a version to it "
            f"(labelwise promote --scenario {name} --version N --alias {alias}) to serve it"
        )
        exc.skipped_alias = alias
        return exc


class NotReadyError(ServingError):
    """The scenario (or the service) has not finished loading."""

    code = "not_ready"
    status_code = 503


class UnauthorizedError(ServingError):
    """A bearer API key is configured and the request did not carry it."""

    code = "unauthorized"
    status_code = 401


class ModelLoadError(ServingError):
    """A version could not be verified or loaded; the previous version keeps serving."""

    code = "model_load_failed"
    status_code = 500


class ScoresNotFiniteError(ServingError):
    """The model gave a row NaN or infinite scores (a broken graph or weights): answered 500, never as
    null scores in the JSON."""

    code = "scores_not_finite"
    status_code = 500


class RequestTimeoutError(ServingError):
    """The request was not answered within request_timeout_s."""

    code = "timeout"
    status_code = 504
