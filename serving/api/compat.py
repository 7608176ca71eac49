"""Drop-in routes for clients written against other servers, each a thin adapter over the backend that
/v1/classify calls: Infinity's `POST /classify`, TEI's `POST /predict`, and the KServe v2 / Triton open
inference protocol (`/v2/...`). Each answers its errors in its own ecosystem's JSON shape, with the
statuses that ecosystem uses; docs/compat.md says what each shape cannot carry.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    WithJsonSchema,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from model_repository.layout import is_number
from model_repository.text import lone_surrogate_at

from ..config import ServingConfig
from ..errors import (
    InvalidRequestError,
    NotReadyError,
    RequestTimeoutError,
    ServingError,
    UnknownScenarioError,
)
from ..metrics import ServingMetrics
from .ecosystems import (
    EMPTY_TEXT,
    INFINITY,
    KSERVE,
    TEI,
    Ecosystem,
    TeiErrorType,
    infinity_error,
    kserve_error,
    tei_error,
)
from .http_errors import (
    RETRY_AFTER_S,
    _backpressure,
    http_refusal,
    internal_message,
    key_refusal,
    quoted,
    retry_after_headers,
    unreadable_body,
    validation_refusal,
)
from .request_id import request_id_of
from .routes import (
    ANSWERED_ERRORS,
    ClassifyBackend,
    api_key_dependency,
    check_texts,
    counted,
    counting,
    json_bytes,
    refusal_counter,
    within_timeout,
)
from .schemas import BLANK_TEXT, NonEmptyText

logger = logging.getLogger("labelwise.serving")
SCENARIO_HEADER = "X-Labelwise-Scenario"
SCENARIO_DOC = "The scenario; absent: default_scenario, else the only one served."
VERSION_HEADER = "X-Labelwise-Version"  # the version that answered: none of these shapes has a field for it

try:
    LABELWISE_VERSION = importlib.metadata.version("labelwise")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a checkout, not installed
    LABELWISE_VERSION = "unknown"


def _not_counted(status: int, path: str) -> None:
    """The KServe health probes' refusals are not requests to count, as /readyz's are not."""


def ecosystem_refusal(ecosystem: Ecosystem, request: Request, exc: Exception) -> tuple[int, Response]:
    """(our status, the answer in the ecosystem's shape and status) for an exception a route raised:
    a validation error, a body that cannot be read, a ServingError, Ray's backpressure or a fault."""
    answer = ecosystem.response
    if isinstance(exc, RequestValidationError) or (
        isinstance(exc, StarletteHTTPException) and exc.status_code == 400
    ):
        exc = key_refusal(request) or exc  # a body FastAPI could not read: the key is asked for first
    if isinstance(exc, RequestValidationError):
        status, field, message = validation_refusal(exc)
        refusal = unreadable_body(request) or (status, "invalid_request", message, field)
        return refusal[0], answer(*refusal)
    if isinstance(exc, StarletteHTTPException):  # a body that cannot be read as one (400, 413)
        refusal = http_refusal(exc)
        if refusal[0] == 400:
            refusal = unreadable_body(request) or refusal
        return refusal[0], answer(*refusal)
    if isinstance(exc, ServingError):
        status = exc.status_code
        if status >= 500 and not isinstance(exc, NotReadyError | RequestTimeoutError):
            request_id = request_id_of(request)
            logger.error("%s on %s (request %s): %s", exc.code, request.url.path, request_id, exc)
            return status, answer(status, exc.code, internal_message(request_id), None)
        field = exc.field
        retry = RETRY_AFTER_S if isinstance(exc, NotReadyError) else None
        return status, answer(status, exc.code, str(exc), field, retry)
    backpressure = _backpressure(exc)
    if backpressure is not None:
        status, retry_after_s = backpressure
        return status, answer(status, "overloaded", "service overloaded; retry later", None, retry_after_s)
    request_id = request_id_of(request)
    logger.error("unexpected error on %s (request %s)", request.url.path, request_id, exc_info=exc)
    return 500, answer(500, "internal_error", internal_message(request_id), None)


def ecosystem_route(
    ecosystem: Ecosystem,
    on_invalid: Callable[[int, str], None],
    prepare: Callable[[Request], Awaitable[None]] | None = None,
) -> type[APIRoute]:
    """An APIRoute whose every refusal (validation, API key, backend error, fault) is in the ecosystem's
    shape, with our status replaced by the ecosystem's where it says so (e.g. Infinity: unknown model
    400). `prepare` may rewrite the request before FastAPI reads it (KServe: v2_request_as_json); what it
    refuses is answered in the shape too. A refusal that counted() has not counted (one raised before
    the route knows its scenario: validation, the API key, no default scenario) is counted once, with
    `on_invalid` and our status."""

    class EcosystemRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                with counting() as was_counted:
                    try:
                        if prepare is not None:
                            # a client without the key is told that alone, before its body is read
                            refused = key_refusal(request)
                            if refused is not None:
                                raise refused
                            await prepare(request)
                        return await handler(request)
                    except Exception as exc:
                        status, refusal = ecosystem_refusal(ecosystem, request, exc)
                        if not was_counted():
                            on_invalid(status, request.url.path)
                        return refusal

            return guarded

    return EcosystemRoute


async def served_entry(backend: ClassifyBackend, scenario: str) -> dict[str, Any]:
    """The /v1/scenarios entry of a served scenario; UnknownScenarioError for any other name, worded as
    the registry words it (one listed as skipped is told why, as /v1/classify tells it)."""
    for entry in await backend.list_scenarios():
        if entry["name"] == scenario and entry.get("skipped"):
            raise UnknownScenarioError.skipped(scenario, entry["alias"])
        if entry["name"] == scenario:
            return entry
    raise UnknownScenarioError.not_served()


@contextlib.contextmanager
def _unknown_as_model() -> Iterator[None]:
    """The backend's unknown scenario in the one wording of every KServe v2 route (Triton says the model "is
    not found"; /v1 says unknown scenario), the name not echoed; one listed as skipped keeps its reason."""
    try:
        yield
    except UnknownScenarioError as exc:
        if exc.skipped_alias is not None:
            raise
        raise UnknownScenarioError(
            "unknown model: not found; GET /v1/scenarios lists the scenarios served here"
        ) from None


async def default_scenario(
    backend: ClassifyBackend, config: ServingConfig, named_by: str = SCENARIO_HEADER
) -> str:
    """config.default_scenario, else the only scenario served; a request that needs one is told to name
    it in `named_by`, where its own API names one (Infinity: the `model` field; TEI: our header)."""
    if config.default_scenario:
        return config.default_scenario
    served = [e["name"] for e in await backend.list_scenarios() if not e.get("skipped")]
    if len(served) == 1:
        return served[0]
    where = f"the {named_by} header" if named_by == SCENARIO_HEADER else f"`{named_by}`"
    raise InvalidRequestError(
        f"{named_by}: this server serves {len(served)} scenarios and has no default_scenario; "
        f"name one in {where} (GET /v1/scenarios lists them)",
        field=named_by,
    )


@contextlib.contextmanager
def texts_named(prefix: str, one_text: bool = False, status_422: bool = False) -> Iterator[None]:
    """A text the backend refuses (too long, or left empty by its version's cleaning) is named as this
    route's request names it (`prefix.<i>`, or `prefix` for a request of one text), not by /v1's field
    `texts.<i>`. status_422: a text too long is refused as invalid (422) instead of 413, where the
    ecosystem says so (TEI: a validation error)."""
    try:
        yield
    except InvalidRequestError as exc:
        field = exc.field or ""
        if not field.startswith("texts."):
            raise
        named = prefix if one_text else f"{prefix}.{field.removeprefix('texts.')}"
        refusal = InvalidRequestError if status_422 else type(exc)
        raise refusal(f"{named}{str(exc).removeprefix(field)}", field=named) from None


@contextlib.contextmanager
def _named_by_model() -> Iterator[None]:
    """An unknown scenario on Infinity's /classify names the request's `model` field (its error's `param`),
    as Infinity names the field of every refusal; it said `param: null`."""
    try:
        yield
    except UnknownScenarioError as exc:
        exc.field = "model"
        raise


def _scored(rows: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """Rows of {label, score} as Infinity and TEI write them: score first."""
    return [[{"score": x["score"], "label": x["label"]} for x in row] for row in rows]


# ---- Infinity: POST /classify ---------------------------------------------------------------------
# What Infinity's own client (and ClassifyInput's default) sends when the caller names no model.
INFINITY_UNNAMED = "default/not-specified"


class InfinityClassifyRequest(BaseModel):
    """Infinity's ClassifyInput."""

    input: list[NonEmptyText] = Field(min_length=1, description="Texts to classify.", examples=[["Great!"]])
    model: StrictStr | None = Field(
        default=None,
        description="The scenario; absent or Infinity's `default/not-specified`: default_scenario, else the "
        "only one served.",
    )
    raw_scores: StrictBool = Field(default=False, description="Scores are logits instead of probabilities.")


class InfinityLabelScore(BaseModel):
    score: float
    label: str


class InfinityUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class InfinityClassifyResult(BaseModel):
    """Infinity's ClassifyResult."""

    object: Literal["classify"] = "classify"
    data: list[list[InfinityLabelScore]] = Field(description="Per text, every label, best first.")
    model: str = Field(description="The scenario that answered.")
    usage: InfinityUsage
    id: str = Field(description="labelwise-<X-Request-Id>.")
    created: int = Field(description="Unix time of the answer.")


class InfinityError(BaseModel):
    message: str
    type: str | None = None
    param: str | None = None
    code: int


class InfinityErrorBody(BaseModel):
    error: InfinityError


def infinity_routes(backend: ClassifyBackend, config: ServingConfig, metrics: ServingMetrics) -> APIRouter:
    route = ecosystem_route(INFINITY, refusal_counter(metrics))
    router = APIRouter(
        route_class=route,
        dependencies=[Depends(api_key_dependency(config))],
        tags=["compat: Infinity"],
    )
    errors = {s: {"model": InfinityErrorBody} for s in ANSWERED_ERRORS if s != 404}  # unknown model: 400

    @router.post("/classify", response_model=InfinityClassifyResult, responses=errors)
    async def classify(body: InfinityClassifyRequest, request: Request) -> Response:
        """Infinity's /classify: `model` names the scenario; every label per text, best first."""
        named = body.model if body.model != INFINITY_UNNAMED else None  # "" names a model: none is so called
        scenario = named if named is not None else await default_scenario(backend, config, named_by="model")
        with counted(metrics, scenario), _named_by_model():
            check_texts(body.input, config, "input")
            call = backend.classify(scenario, body.input, None, True, body.raw_scores, False)
            with texts_named("input"):
                result = await within_timeout(call, config)
        answer = {
            "object": "classify",
            "data": _scored(result["raw_scores"] if body.raw_scores else result["results"]),
            "model": result["scenario"],
            "usage": {
                "prompt_tokens": result["usage"]["total_tokens"],
                "total_tokens": result["usage"]["total_tokens"],
            },
            "id": f"labelwise-{request_id_of(request)}",
            "created": int(time.time()),
        }
        return Response(
            json_bytes(answer),
            media_type="application/json",
            headers={VERSION_HEADER: str(result["version"])},
        )

    return router


# ---- TEI: POST /predict ---------------------------------------------------------------------------
TeiInputs = StrictStr | list[StrictStr] | list[list[StrictStr]]


class TeiPredictRequest(BaseModel):
    """TEI's PredictRequest."""

    # Read as any JSON value and checked by tei_texts, which names what is wrong; pydantic's own refusal
    # of the union named a branch ("inputs.str: Input should be a valid string" for a list). The schema
    # still documents the union.
    inputs: Annotated[Any, WithJsonSchema(TypeAdapter(TeiInputs).json_schema())] = Field(
        description='A text ("t"), the same as a one-text list (["t"]), or a batch ([["t1"], ["t2"]]). '
        'A pair (["a", "b"] or [["a", "b"]] in a batch) is refused: the models here read one text.',
        examples=["What a lovely day"],
    )
    raw_scores: StrictBool = Field(default=False, description="Scores are logits instead of probabilities.")
    truncate: StrictBool | None = Field(
        default=None,
        description="Cut texts over the model's max length; absent or null: cut them (TEI's auto-truncate "
        "default since 1.9); false: such a text is refused (422, validation).",
    )
    truncation_direction: Literal["right", "Right", "left", "Left"] = Field(
        default="right", description="Only right truncation is served; left is refused (422)."
    )


class TeiPrediction(BaseModel):
    score: float
    label: str


class TeiErrorBody(BaseModel):
    """TEI's ErrorResponse; `error_type` is its ErrorType, sent as the variant's name (no serde rename)."""

    error: str = Field(examples=["inputs: an empty text"])
    error_type: TeiErrorType = Field(examples=["Validation"])


class TeiClassifierModel(BaseModel):
    id2label: dict[str, str]
    label2id: dict[str, int]


class TeiInfo(BaseModel):
    """TEI's Info (GET /info) for the scenario a predict without a header would answer."""

    model_id: str
    model_sha: str | None
    model_dtype: str
    served_model_name: str
    model_type: dict[Literal["classifier"], TeiClassifierModel]
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int | None
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int
    version: str
    sha: str | None
    docker_label: str | None


def tei_texts(inputs: Any) -> tuple[list[str], bool]:
    """TEI's reading of `inputs` (a text, a one-text list or a batch of one-text lists): (texts, whether
    it was a batch). Any other JSON value, pairs and empty texts are refused, naming what is wrong."""
    pair = 'a pair of texts; the models served here read one text (a batch is [["t1"], ["t2"]])'
    shapes = 'a text, ["text"], or a batch [["t1"], ["t2"]]'
    if isinstance(inputs, str):
        texts, batch = [inputs], False
    elif not isinstance(inputs, list):
        raise InvalidRequestError(f"inputs: {_json_kind(inputs)}; send {shapes}", field="inputs")
    elif not inputs:
        raise InvalidRequestError('inputs: empty; send a text or a batch [["t1"], ["t2"]]', field="inputs")
    elif any(isinstance(x, str) for x in inputs) and not all(isinstance(x, str) for x in inputs):
        raise InvalidRequestError(f"inputs: texts and lists mixed; send {shapes}", field="inputs")
    elif all(isinstance(x, str) for x in inputs):
        if len(inputs) == 2:
            raise InvalidRequestError(f"inputs: {pair}", field="inputs")
        if len(inputs) > 2:
            raise InvalidRequestError(
                f'inputs: {len(inputs)} strings; a batch is a list of one-text lists [["t1"], ["t2"]]',
                field="inputs",
            )
        texts, batch = [inputs[0]], False  # type: ignore[list-item]
    else:
        texts, batch = [], True
        for i, sequence in enumerate(inputs):
            if not isinstance(sequence, list) or not all(isinstance(x, str) for x in sequence):
                what = f'{_json_kind(sequence)}; each item of a batch is ["text"]'
                raise InvalidRequestError(f"inputs.{i}: {what}", field=f"inputs.{i}")
            if len(sequence) != 1:
                what = pair if len(sequence) == 2 else f'{len(sequence)} strings; each item is ["text"]'
                raise InvalidRequestError(f"inputs.{i}: {what}", field=f"inputs.{i}")
            texts.append(sequence[0])
    for i, text in enumerate(texts):
        named = f"inputs.{i}" if batch else "inputs"
        if not text:
            raise EmptyTextError(f"{named}: an empty text", field=named)
        if text.isspace():
            raise InvalidRequestError(f"{named}: {BLANK_TEXT}", field=named)
        refuse_lone_surrogate(text, named)
    return texts, batch


class EmptyTextError(InvalidRequestError):
    """TEI's own refusal of an empty text: 400 with error_type Empty (its tokenizer's
    TextEmbeddingsError::Empty), where other bad input is 422 Validation."""

    code = EMPTY_TEXT
    status_code = 400


def refuse_lone_surrogate(text: str, named: str) -> None:
    """InvalidRequestError for a text holding a lone surrogate (a JSON `\\ud800` escape without its pair),
    which no tokenizer reads: refused here as /v1's strict strings are, not a 500 from the backend, where
    a field read as any JSON value lets one through (TEI's `inputs`, KServe's `data`)."""
    at = lone_surrogate_at(text)
    if at is not None:
        raise InvalidRequestError(
            f"{named}: not valid Unicode (lone surrogate at character {at}); send UTF-8 text, "
            "each \\uD800-\\uDFFF escape as half of a surrogate pair",
            field=named,
        )


def _named_value(value: Any) -> str:
    """A JSON value from the request, for a refusal: a text quoted (cut when long), else what it is."""
    return quoted(value, 40) if isinstance(value, str) else _json_kind(value)


def _json_kind(value: Any) -> str:
    """What a JSON value is, for a refusal: `null`, `a number`, `a list holding a number`..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a text"
    if isinstance(value, dict):
        return "an object"
    odd = [x for x in value if not isinstance(x, str)]
    return f"a list holding {_json_kind(odd[0])}" if odd else "a list of texts"


# Our precision -> TEI's DType as its /info writes it (backends/src/dtype.rs: float16, float32, bfloat16);
# int8 has no TEI name and is sent as it is.
_TEI_DTYPES = {"fp32": "float32", "fp16": "float16"}


def _tei_dtype(precision: str | None) -> str:
    return _TEI_DTYPES.get(precision or "", precision or "")


def tei_routes(backend: ClassifyBackend, config: ServingConfig, metrics: ServingMetrics) -> APIRouter:
    route = ecosystem_route(TEI, refusal_counter(metrics))
    router = APIRouter(
        route_class=route, dependencies=[Depends(api_key_dependency(config))], tags=["compat: TEI"]
    )
    errors = {TEI.statuses.get(s, s): {"model": TeiErrorBody} for s in ANSWERED_ERRORS}  # 500: 424

    # TEI serves a classifier's predict on /predict, and on / and /invocations (what
    # huggingface_hub.InferenceClient(model=<url>) and SageMaker-style callers post to).
    @router.post("/predict", response_model=list[TeiPrediction] | list[list[TeiPrediction]], responses=errors)
    @router.post(
        "/invocations",
        response_model=list[TeiPrediction] | list[list[TeiPrediction]],
        responses=errors,
        include_in_schema=False,
    )
    @router.post(
        "/",
        response_model=list[TeiPrediction] | list[list[TeiPrediction]],
        responses=errors,
        include_in_schema=False,
    )
    async def predict(
        body: TeiPredictRequest,
        scenario: Annotated[str | None, Header(alias=SCENARIO_HEADER, description=SCENARIO_DOC)] = None,
    ) -> Response:
        """TEI's /predict (also on / and /invocations): one text answers a list of predictions, a batch a
        list of such lists."""
        if body.truncation_direction.lower() == "left":
            raise InvalidRequestError(
                "truncation_direction: only right truncation is served", "truncation_direction"
            )
        texts, batch = tei_texts(body.inputs)
        name = scenario or await default_scenario(backend, config)
        with counted(metrics, name):
            check_texts(texts, config, "inputs", one_text=not batch)
            truncate = True if body.truncate is None else body.truncate
            call = backend.classify(name, texts, None, truncate, body.raw_scores, False)
            with texts_named("inputs", one_text=not batch, status_422=True):
                result = await within_timeout(call, config)
        rows = _scored(result["raw_scores"] if body.raw_scores else result["results"])
        headers = {VERSION_HEADER: str(result["version"])}
        return Response(
            json_bytes(rows if batch else rows[0]), media_type="application/json", headers=headers
        )

    @router.head("/info", include_in_schema=False)  # HEAD wherever GET, as TEI's own router does
    @router.get("/info", response_model=TeiInfo, responses=errors)
    async def info(
        scenario: Annotated[str | None, Header(alias=SCENARIO_HEADER, description=SCENARIO_DOC)] = None,
    ) -> dict[str, Any]:
        """TEI's /info for the scenario that /predict answers (the header's, else the default)."""
        name = scenario or await default_scenario(backend, config)
        entry = await served_entry(backend, name)
        if entry.get("version") is None:
            raise NotReadyError(f"scenario {name!r} is not loaded yet")
        labels = entry.get("labels") or []
        return {
            "model_id": f"{name}/v{entry['version']}",
            "model_sha": None,
            "model_dtype": _tei_dtype(entry.get("precision")),
            "served_model_name": name,
            "model_type": {
                "classifier": {
                    "id2label": {str(i): label for i, label in enumerate(labels)},
                    "label2id": {label: i for i, label in enumerate(labels)},
                }
            },
            "max_concurrent_requests": config.max_ongoing_requests,
            "max_input_length": int(entry.get("max_length_tokens") or 0),
            "max_batch_tokens": config.max_batch_tokens,
            "max_batch_requests": None,
            "max_client_batch_size": config.max_texts_per_request,
            "auto_truncate": True,
            "tokenization_workers": 1,
            "version": LABELWISE_VERSION,
            "sha": None,
            "docker_label": None,
        }

    return router


def tei_probes(backend: ClassifyBackend) -> APIRouter:
    """TEI's GET /health (and /ping): 200 with an empty body once every scenario is loaded, else 503 in
    TEI's shape (also when readiness itself fails). Never behind the API key, never refused for load
    (admission.PROBE_PATHS), as TEI's own."""
    router = APIRouter(tags=["compat: TEI"])

    answers: dict[int | str, dict[str, Any]] = {
        200: {"description": "Healthy: an empty body.", "content": {}},
        503: {"model": TeiErrorBody},
    }

    # /ping too: TEI's SageMaker health route (beside POST /invocations, served here)
    @router.head("/ping", include_in_schema=False)
    @router.head("/health", include_in_schema=False)  # TEI answers HEAD wherever it answers GET
    @router.get("/ping", response_class=Response, responses=answers)
    @router.get("/health", response_class=Response, responses=answers)
    async def health() -> Response:
        try:
            ready = (await backend.readiness())["ready"]
        except Exception:  # the backend could not say (a classifier replica being replaced): unhealthy
            logger.warning("TEI /health: readiness failed", exc_info=True)
            ready = False
        if not ready:
            body = tei_error(503, "not_ready", "unhealthy", None)
            return JSONResponse(body, status_code=503, headers=retry_after_headers(RETRY_AFTER_S))
        return Response(status_code=200)

    return router


# ---- KServe v2 / Triton: /v2 ----------------------------------------------------------------------
def _unicode(value: str) -> str:
    """A name or id that is valid Unicode: one with a lone surrogate (a JSON `\\ud800` escape without its
    pair) could not be written back in an answer or a log line."""
    at = lone_surrogate_at(value)
    if at is not None:
        raise ValueError(f"not valid Unicode (lone surrogate at character {at})")
    return value


V2Str = Annotated[StrictStr, AfterValidator(_unicode)]


class V2Tensor(BaseModel):
    name: V2Str = Field(description="Any name: the one input is the texts.")
    shape: list[StrictInt] = Field(description="[N] or [N, 1].")
    datatype: V2Str = Field(description="BYTES (UTF-8 strings in JSON).")
    parameters: dict[str, Any] | None = None
    data: list[Any] = Field(description="The N texts, flat or nested row-major.")


class V2RequestedOutput(BaseModel):
    name: V2Str
    parameters: dict[str, Any] | None = None


class V2InferRequest(BaseModel):
    id: V2Str | None = None
    parameters: dict[str, Any] | None = Field(
        default=None, description='{"truncate": false} refuses over-long texts (413) instead of cutting them.'
    )
    inputs: list[V2Tensor] = Field(min_length=1, description="One BYTES tensor of texts.")
    outputs: list[V2RequestedOutput] | None = Field(
        default=None, description="Outputs to return (label, score, labels, scores, logits); absent: all."
    )


class V2OutputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[Any]


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str
    outputs: list[V2OutputTensor]


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2ErrorBody(BaseModel):
    error: str


# name -> (datatype, whether it has one column per label)
V2_OUTPUTS: dict[str, tuple[str, bool]] = {
    "label": ("BYTES", False),
    "score": ("FP32", False),
    "labels": ("BYTES", True),
    "scores": ("FP32", True),
    "logits": ("FP32", True),
}


def _version_number(version: str) -> bool:
    """Whether a /versions/{version} path segment is a version number (a version folder's name, within an
    int64: int() of thousands of digits raises)."""
    return is_number(version) and len(version) <= 18


def _elements(data: list[Any], shape: list[int]) -> list[Any]:
    """The N elements of a tensor's data: flat (KServe's row-major form, either shape), or for [N, 1] N
    one-element rows; any other nesting is refused, naming the first item that breaks the shape."""
    if len(shape) == 2 and data and all(isinstance(row, list) for row in data):
        for i, row in enumerate(data):
            if len(row) != 1:
                raise InvalidRequestError(
                    f"inputs.0.data.{i}: {len(row)} elements; a row of shape {shape} holds one text",
                    f"inputs.0.data.{i}",
                )
        return [row[0] for row in data]
    for i, item in enumerate(data):
        if isinstance(item, list):
            raise InvalidRequestError(
                f"inputs.0.data.{i}: a list; the data of shape {shape} is its texts, flat"
                + (" (or one-text rows [[t1], [t2]])" if len(shape) == 2 else ""),
                f"inputs.0.data.{i}",
            )
    return data


def v2_texts(body: V2InferRequest) -> list[str]:
    """The texts of a v2 request: one BYTES input of shape [N] or [N, 1] whose N elements are strings."""
    if len(body.inputs) != 1:
        raise InvalidRequestError(
            f"inputs: {len(body.inputs)} tensors; send one BYTES tensor of texts", "inputs"
        )
    tensor = body.inputs[0]
    if tensor.datatype != "BYTES":
        raise InvalidRequestError(
            f"inputs.0.datatype: {quoted(tensor.datatype, 40)}; the texts are BYTES", "inputs.0.datatype"
        )
    if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
        raise InvalidRequestError(f"inputs.0.shape: {tensor.shape}; expected [N] or [N, 1]", "inputs.0.shape")
    texts = _elements(tensor.data, tensor.shape)
    if not texts:  # shape [0] and no data matched, and were refused as if they did not
        raise InvalidRequestError("inputs.0.data: empty; send at least one text", "inputs.0.data")
    if tensor.shape[0] != len(texts):
        raise InvalidRequestError(
            f"inputs.0.shape: {tensor.shape} does not match {len(texts)} elements of data", "inputs.0.shape"
        )
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text:
            raise InvalidRequestError(f"inputs.0.data.{i}: not a non-empty string", f"inputs.0.data.{i}")
        if text.isspace():
            raise InvalidRequestError(f"inputs.0.data.{i}: {BLANK_TEXT}", f"inputs.0.data.{i}")
        refuse_lone_surrogate(text, f"inputs.0.data.{i}")
    return texts


def v2_outputs(result: dict[str, Any], wanted: list[str]) -> list[dict[str, Any]]:
    """The output tensors asked for, from a classify answer with every label and raw scores."""
    rows, raw = result["results"], result["raw_scores"]
    n, k = len(rows), len(rows[0]) if rows else 0
    values = {
        "label": [row[0]["label"] for row in rows],
        "score": [row[0]["score"] for row in rows],
        "labels": [x["label"] for row in rows for x in row],
        "scores": [x["score"] for row in rows for x in row],
        "logits": [x["score"] for row in raw for x in row],
    }
    return [
        {
            "name": name,
            "datatype": V2_OUTPUTS[name][0],
            "shape": [n, k] if V2_OUTPUTS[name][1] else [n],
            "data": values[name],
        }
        for name in wanted
    ]


BINARY_HEADER = "inference-header-content-length"


def _bytes_elements(blob: bytes, where: str) -> list[str]:
    """The texts of a binary BYTES tensor: elements of a 4-byte little-endian length and that many bytes."""
    texts: list[str] = []
    at = 0
    while at < len(blob):
        end = at + 4 + (struct.unpack_from("<I", blob, at)[0] if at + 4 <= len(blob) else len(blob))
        if end > len(blob):
            raise InvalidRequestError(
                f"{where}: binary data ends inside element {len(texts)} (each element is a 4-byte "
                "little-endian length and that many bytes)",
                where,
            )
        try:
            texts.append(blob[at + 4 : end].decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidRequestError(
                f"{where}.data.{len(texts)}: not UTF-8", f"{where}.data.{len(texts)}"
            ) from None
        at = end
    return texts


def v2_binary_tensors(raw: bytes, header_size: str) -> dict[str, Any]:
    """The request of a body in the protocol's binary tensor extension, with every binary BYTES input
    turned into a JSON `data` list: a JSON header of `header_size` bytes, then each input that has
    `parameters.binary_data_size`, in order, as elements of a 4-byte little-endian length and its bytes
    (what tritonclient sends by default: `set_data_from_numpy(..., binary_data=True)`)."""
    # ASCII digits only: int() also reads "+10", " 10" and "1_0", and a size it misread was then blamed on the
    # JSON header rather than on this header
    size = int(header_size) if header_size.isascii() and header_size.isdigit() else -1
    if not 0 < size <= len(raw):
        raise InvalidRequestError(
            f"Inference-Header-Content-Length: {header_size[:32]!r} is not the size of the JSON header of "
            f"this {len(raw)}-byte body",
            "Inference-Header-Content-Length",
        )
    try:
        request = json.loads(raw[:size])
    except RecursionError:  # nested past the parser's limit: a plain JSON body gets a 400 for it too
        raise InvalidRequestError("body: the JSON header is nested too deeply", "body") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"body: the JSON header is not valid JSON ({exc})", "body") from None
    inputs = request.get("inputs") if isinstance(request, dict) else None
    offset = size
    for i, tensor in enumerate(inputs if isinstance(inputs, list) else []):
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
            continue
        length = parameters.pop("binary_data_size")
        where = f"inputs.{i}"
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            raise InvalidRequestError(  # 8.0 or true: not a size, whatever is left in the body
                f"{where}.parameters.binary_data_size: {json.dumps(length)[:40]} is not a byte count; "
                "send the size of the input's binary data as a whole number",
                f"{where}.parameters.binary_data_size",
            )
        if offset + length > len(raw):
            raise InvalidRequestError(
                f"{where}.parameters.binary_data_size: {length} bytes, {len(raw) - offset} left in the body",
                f"{where}.parameters.binary_data_size",
            )
        if tensor.get("datatype") != "BYTES":
            raise InvalidRequestError(
                f"{where}.datatype: {_named_value(tensor.get('datatype'))}; the input is texts, datatype "
                "BYTES",
                f"{where}.datatype",
            )
        texts = _bytes_elements(raw[offset : offset + length], where)
        offset += length
        tensor["data"] = texts
    if offset != len(raw):
        raise InvalidRequestError(
            f"body: {len(raw) - offset} bytes after the header and the binary inputs it announces", "body"
        )
    return request


async def v2_request_as_json(request: Request) -> None:
    """Before FastAPI reads a /v2 body: read it as JSON whatever Content-Type the request names (Triton and
    KServe do; tritonclient's HTTP client sends none, its aio client application/octet-stream, where
    FastAPI would hand the body on as bytes), and turn binary tensor inputs into JSON ones. A GET or HEAD
    (metadata, the probes) has no body to read: its headers are left as they are."""
    if request.method in ("GET", "HEAD"):  # an Inference-Header-Content-Length there was refused 400
        return
    header_size = request.headers.get(BINARY_HEADER)
    dropped = {b"content-type"}
    if header_size is not None:
        request._body = json.dumps(v2_binary_tensors(await request.body(), header_size)).encode()
        dropped.add(b"content-length")  # the body FastAPI reads is the JSON made here
    else:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json" or content_type.endswith("+json"):
            return
    headers = [(k, v) for k, v in request.scope["headers"] if k.lower() not in dropped]
    request.scope["headers"] = [*headers, (b"content-type", b"application/json")]
    request.__dict__.pop("_headers", None)  # Starlette caches the parsed headers there


def kserve_routes(backend: ClassifyBackend, config: ServingConfig, metrics: ServingMetrics) -> APIRouter:
    # The protocol answers bad input 400 (KServe's InvalidInput), where /v1 says 422 (ecosystems.KSERVE).
    route = ecosystem_route(KSERVE, refusal_counter(metrics), prepare=v2_request_as_json)
    probe_route = ecosystem_route(KSERVE, _not_counted, prepare=v2_request_as_json)
    tags: list[str] = ["compat: KServe v2 / Triton"]
    # never behind the API key, never refused for load, never counted
    probes = APIRouter(route_class=probe_route, tags=list(tags))
    router = APIRouter(route_class=route, dependencies=[Depends(api_key_dependency(config))], tags=tags)
    # 415 only for a compressed body (one of any Content-Type is read as JSON: tritonclient's gzip or
    # deflate request compression is refused before routing, body_limit.py); no 422 (the protocol says
    # 400; the 422 FastAPI adds to an operation with parameters is taken out by openapi_as_answered)
    errors = {s: {"model": V2ErrorBody} for s in ANSWERED_ERRORS if s != 422}

    @probes.head("/v2/health/live", include_in_schema=False)  # uptime checks probe with HEAD too
    @probes.get(
        "/v2/health/live", responses={200: {"content": {"application/json": {"example": {"live": True}}}}}
    )
    async def live() -> dict[str, bool]:
        return {"live": True}

    @probes.head("/v2/health/ready", include_in_schema=False)
    @probes.get("/v2/health/ready", responses={s: {"model": V2ErrorBody} for s in (500, 503)})
    async def ready() -> dict[str, bool]:
        readiness = await backend.readiness()
        if not readiness["ready"]:
            # the names /readyz lists: a scenario may be loading, or absent from the repository
            missing = readiness["missing"]
            named = ", ".join(missing[:10]) + (f", … ({len(missing)} in all)" if len(missing) > 10 else "")
            raise NotReadyError(f"not ready: not loaded: {named} (see /readyz)")
        return {"ready": True}

    # HEAD wherever GET (routes.probe_routes), each a route of its own out of the schema
    @router.head("/v2", include_in_schema=False)
    @router.get("/v2", responses=errors)
    async def server_metadata() -> dict[str, Any]:
        return {"name": "labelwise", "version": "1", "extensions": []}

    async def loaded_entry(scenario: str, version: str | None) -> dict[str, Any]:
        """The scenario's entry; with a version (the `/versions/{version}` paths), only the one loaded."""
        with _unknown_as_model():
            entry = await served_entry(backend, scenario)
        loaded = entry.get("version")
        # a version is a number, as Triton reads it: "01" names v1
        if version is not None and (loaded is None or not _version_number(version) or int(version) != loaded):
            served = f"v{entry['version']} is" if entry.get("version") is not None else "no version is yet"
            raise UnknownScenarioError(
                f"model {scenario!r} has no version {quoted(version, 40)} here ({served} served)"
            )
        return entry

    # Each model route also answers under /versions/{version} (what tritonclient's model_version= calls)
    # for the version serving, which the metadata lists.
    # The unversioned routes have handlers of their own: a `version` argument there would be a query
    # parameter (in the schema, and `?version=7` answered as a version).
    @router.head("/v2/models/{scenario}", include_in_schema=False)
    @router.get("/v2/models/{scenario}", response_model=V2ModelMetadata, responses=errors)
    async def served_model_metadata(scenario: str) -> dict[str, Any]:
        return await metadata_of(scenario, None)

    @router.head("/v2/models/{scenario}/versions/{version}", include_in_schema=False)
    @router.get("/v2/models/{scenario}/versions/{version}", response_model=V2ModelMetadata, responses=errors)
    async def model_metadata(scenario: str, version: str) -> dict[str, Any]:
        return await metadata_of(scenario, version)

    # (a path parameter is never null: the versioned routes take `version: str`, these helpers None too)
    async def metadata_of(scenario: str, version: str | None) -> dict[str, Any]:
        entry = await loaded_entry(scenario, version)
        k = len(entry.get("labels") or []) or -1
        return {
            "name": scenario,
            "versions": [str(entry["version"])] if entry.get("version") is not None else [],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [
                {"name": name, "datatype": datatype, "shape": [-1, k] if per_label else [-1]}
                for name, (datatype, per_label) in V2_OUTPUTS.items()
            ],
        }

    @router.head("/v2/models/{scenario}/ready", include_in_schema=False)
    @router.get("/v2/models/{scenario}/ready", responses=errors)
    async def served_model_ready(scenario: str) -> dict[str, Any]:
        return await ready_of(scenario, None)

    @router.head("/v2/models/{scenario}/versions/{version}/ready", include_in_schema=False)
    @router.get("/v2/models/{scenario}/versions/{version}/ready", responses=errors)
    async def model_ready(scenario: str, version: str) -> dict[str, Any]:
        return await ready_of(scenario, version)

    async def ready_of(scenario: str, version: str | None) -> dict[str, Any]:
        entry = await loaded_entry(scenario, version)
        if entry.get("version") is None:
            raise NotReadyError("model not loaded yet")
        return {"name": scenario, "ready": True}

    @router.post("/v2/models/{scenario}/infer", response_model=V2InferResponse, responses=errors)
    async def served_infer(scenario: str, body: V2InferRequest, request: Request) -> Response:
        """Texts in one BYTES tensor; per text the best label and its probability, and every label."""
        return await infer_with(scenario, body, request, None)

    @router.post(
        "/v2/models/{scenario}/versions/{version}/infer", response_model=V2InferResponse, responses=errors
    )
    async def infer(scenario: str, body: V2InferRequest, request: Request, version: str) -> Response:
        """As /v2/models/{scenario}/infer, answered only while that version is the one serving."""
        return await infer_with(scenario, body, request, version)

    async def infer_with(
        scenario: str, body: V2InferRequest, request: Request, version: str | None
    ) -> Response:
        with counted(metrics, scenario):
            if version is not None:
                await loaded_entry(scenario, version)
            texts = v2_texts(body)
            check_texts(texts, config, "inputs.0.data")
            wanted = [o.name for o in body.outputs] if body.outputs else list(V2_OUTPUTS)
            unknown = [name for name in wanted if name not in V2_OUTPUTS]
            if unknown:
                raise InvalidRequestError(
                    f"outputs: {quoted(unknown[0], 40)} is not an output; the outputs are "
                    f"{', '.join(V2_OUTPUTS)}",
                    "outputs",
                )
            if twice := next((name for i, name in enumerate(wanted) if name in wanted[:i]), None):
                # it was answered twice, two tensors of one name that a KServe client maps by name
                raise InvalidRequestError(
                    f"outputs: {quoted(twice, 40)} is asked for twice; name each output once", "outputs"
                )
            for i, output in enumerate(body.outputs or []):
                # tritonclient's class_count=k: Triton answers k "score:index:label" strings per text, and
                # this answered the plain tensor under the name asked for, the client's parsing at fault
                if (output.parameters or {}).get("classification"):
                    raise InvalidRequestError(
                        f"outputs.{i}.parameters.classification: the classification extension is not "
                        "served (GET /v2 lists its extensions); `labels` and `scores` are every label, best "
                        "first",
                        f"outputs.{i}.parameters.classification",
                    )
            truncate = (body.parameters or {}).get("truncate", True)
            if not isinstance(truncate, bool):
                raise InvalidRequestError("parameters.truncate: not a boolean", "parameters.truncate")
            with texts_named("inputs.0.data"), _unknown_as_model():
                result = await within_timeout(
                    backend.classify(scenario, texts, None, truncate, True, False), config
                )
            if version is not None and int(version) != result["version"]:  # swapped while it ran
                raise UnknownScenarioError(
                    f"model {scenario!r} has no version {quoted(version, 40)} here "
                    f"(v{result['version']} answered)"
                )
        answer = {
            "model_name": result["scenario"],
            "model_version": str(result["version"]),
            "id": body.id if body.id is not None else request_id_of(request),
            "outputs": v2_outputs(result, wanted),
        }
        return Response(json_bytes(answer), media_type="application/json")

    probes.include_router(router)
    return probes


def compat_routes(backend: ClassifyBackend, config: ServingConfig, metrics: ServingMetrics) -> APIRouter:
    """Every compatibility route, for create_api to include."""
    router = APIRouter()
    for routes in (infinity_routes, tei_routes, kserve_routes):
        router.include_router(routes(backend, config, metrics))
    router.include_router(tei_probes(backend))
    return router


__all__ = [
    "SCENARIO_HEADER",
    "VERSION_HEADER",
    "compat_routes",
    "infinity_error",
    "kserve_error",
    "tei_error",
    "tei_texts",
    "v2_texts",
]
