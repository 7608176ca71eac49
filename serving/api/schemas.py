"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    WithJsonSchema,
)

BLANK_TEXT = "a text of only whitespace; send the text to classify"


def _not_blank(text: str) -> str:
    """Refuse a text of only whitespace, as training and `labelwise classify` do: a model reads nothing
    but its special tokens there, and would still answer a confident label."""
    if text.isspace():
        raise ValueError(BLANK_TEXT)
    return text


# A string holding something besides whitespace (the schema's pattern: one non-whitespace character).
NonEmptyText = Annotated[
    StrictStr,
    StringConstraints(min_length=1),
    AfterValidator(_not_blank),
    WithJsonSchema({"type": "string", "minLength": 1, "pattern": "\\S"}),
]


def _integral_float_as_int(value: Any) -> Any:
    """1.0 -> 1: JSON Schema's `integer` (OpenAPI 3.1) is any number with no fraction. A fraction, a
    boolean or a string stays as it is, for StrictInt to refuse."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# An integer of at least 1, as the schema says: 1 and 1.0, not 1.5, true or "1". The bound sits before the
# validator: after it, pydantic writes it into the schema as `ge`, not `minimum`.
LabelCount = Annotated[StrictInt, Field(ge=1), BeforeValidator(_integral_float_as_int)]


class ClassifyRequest(BaseModel):
    """POST /v1/classify."""

    model_config = ConfigDict(extra="forbid")
    scenario: Annotated[StrictStr, StringConstraints(min_length=1, max_length=64)] = Field(
        description="Scenario name, as listed by GET /v1/scenarios.", examples=["review_sentiment"]
    )
    texts: list[NonEmptyText] = Field(
        min_length=1,
        description="Texts to classify (non-empty strings).",
        examples=[["Great value, works well."]],
    )
    top_k: LabelCount | None = Field(
        default=None, description="Labels per text, best first; null returns every label."
    )
    truncate: StrictBool = Field(
        default=True,
        description="Cut texts over the max length (flagged in `truncated`); false answers 413.",
    )
    raw_scores: StrictBool = Field(
        default=False, description="Also answer `raw_scores`: per text, the logits of the same labels."
    )
    abstain: StrictBool = Field(
        default=False,
        description="Also answer `decisions`: per text, the best label, or null when its probability is "
        "under the version's decision threshold (chosen on validation at training time; `threshold`).",
    )


class LabelScore(BaseModel):
    label: str = Field(description="Label name.")
    score: float = Field(description="Softmax probability in [0, 1].")


class LabelLogit(BaseModel):
    label: str = Field(description="Label name.")
    score: float = Field(description="The label's logit (raw score before the softmax; any real number).")


class Usage(BaseModel):
    tokens: list[int] = Field(description="Per text, the tokens the model read (special tokens included).")
    total_tokens: int = Field(description="Tokens of every text of the request.")


class ClassifyResponse(BaseModel):
    scenario: str = Field(description="Scenario that answered.")
    version: int = Field(description="Model version that answered every text of this request.")
    results: list[list[LabelScore]] = Field(description="Per text, labels with scores, best first.")
    truncated: list[bool] = Field(description="Per text, whether it was cut to the model's max length.")
    usage: Usage = Field(description="Token counts, per text and in total.")
    raw_scores: list[list[LabelLogit]] | None = Field(
        default=None, description="raw_scores requests: per text, the logits of the labels in `results`."
    )
    decisions: list[str | None] | None = Field(
        default=None, description="abstain requests: per text, the best label, or null under `threshold`."
    )
    threshold: float | None = Field(
        default=None,
        description="abstain requests: the version's decision threshold; null when it has none (then "
        "no text abstains).",
    )


class ScenarioInfo(BaseModel):
    name: str = Field(description="Scenario name.")
    alias: str = Field(description="Alias (or version) this deployment follows.")
    version: int | None = Field(description="Version serving now; null while not loaded.")
    strategy: str | None = Field(default=None, description="full, frozen or lora.")
    precision: str | None = Field(default=None, description="Precision of the graph in use.")
    provider: str | None = Field(
        default=None, description="ONNX Runtime execution provider the graph runs on (CUDA or CPU)."
    )
    labels: list[str] = Field(default_factory=list, description="Labels in logit order.")
    max_length_tokens: int | None = Field(default=None, description="Longer texts are truncated.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="Validation metrics of the version.")
    last_error: str | None = Field(default=None, description="Why the latest load attempt failed, if it did.")
    skipped: bool = Field(default=False, description="Serve-all mode: no alias to serve; not served.")


class Limits(BaseModel):
    max_texts_per_request: int = Field(description="Texts allowed in one classify request.")
    max_chars_per_text: int = Field(description="Characters allowed per text.")
    max_body_bytes: int = Field(description="Request body size allowed (larger: 413 before parsing).")


class ScenarioList(BaseModel):
    scenarios: list[ScenarioInfo] = Field(description="Every configured scenario.")
    limits: Limits = Field(description="This server's request limits.")


class Readiness(BaseModel):
    ready: bool = Field(
        description="True when every configured scenario (serve-all: every one with the alias) is loaded."
    )
    missing: list[str] = Field(default_factory=list, description="Scenarios not loaded yet.")
    skipped: list[str] = Field(
        default_factory=list,
        description="Serve-all mode: scenarios in the repository without the alias; not served, not awaited.",
    )


class ErrorDetail(BaseModel):
    type: str = Field(description="Machine-readable error code, e.g. unknown_scenario.")
    message: str = Field(description="What is wrong, naming the field when there is one.")
    code: int = Field(description="HTTP status code.")
    field: str | None = Field(default=None, description="The request field at fault, dotted.")


class ErrorBody(BaseModel):
    error: ErrorDetail
