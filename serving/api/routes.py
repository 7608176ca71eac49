"""The FastAPI app: routes, validation, auth, request metrics. No model code: it calls a backend."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any, Protocol

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from ..config import ServingConfig
from ..errors import InvalidRequestError, RequestTimeoutError, ServingError, UnauthorizedError
from ..metrics import ServingMetrics
from .admission import AdmissionMiddleware, InFlight
from .body_limit import BodyLimitMiddleware
from .http_errors import (
    KEY_REFUSAL,
    UnexpectedErrorMiddleware,
    backpressure_status,
    error_response,
    install_error_handlers,
    method_not_allowed_message,
    not_found_message,
    serving_error_response,
    unexpected_error_response,
)
from .request_id import RequestIdMiddleware, request_id_of
from .schemas import ClassifyRequest, ClassifyResponse, ErrorBody, Readiness, ScenarioList


class ClassifyBackend(Protocol):
    """What the routes call: the replica's ClassifierService, or serving.app.HandleBackend to it."""

    async def classify(
        self,
        scenario: str,
        texts: list[str],
        top_k: int | None,
        truncate: bool,
        raw_scores: bool = False,
        abstain: bool = False,
    ) -> dict[str, Any]: ...

    async def list_scenarios(self) -> list[dict[str, Any]]: ...

    async def readiness(self) -> dict[str, Any]: ...

    async def engine_metrics(self) -> bytes: ...


# Every refusal a classify call can get, whatever its shape: bad JSON, no key, unknown scenario, body too
# slow or too large, not JSON, invalid, overloaded, server fault, not ready, too slow.
ANSWERED_ERRORS = (400, 401, 404, 408, 413, 415, 422, 429, 500, 503, 504)
_ERRORS = {s: {"model": ErrorBody} for s in ANSWERED_ERRORS}
# What any route behind the key may answer besides its own: no key, a replica at max_ongoing_requests,
# a fault of the backend (answered 500 with the request id).
_GATE_ERRORS = {s: {"model": ErrorBody} for s in (401, 429, 500, 503)}
MAX_TEXTS_HEADER = "X-Labelwise-Max-Texts-Per-Request"


def check_limits(body: ClassifyRequest, config: ServingConfig) -> None:
    """Limits that come from config, so they cannot live in the static schema."""
    check_texts(body.texts, config)


def check_texts(
    texts: list[str], config: ServingConfig, field: str = "texts", one_text: bool = False
) -> None:
    """The config's text limits on `texts`, sent as the request field `field` (a list, `field.<i>` naming
    each text; with one_text, the field is the one text itself)."""
    if len(texts) > config.max_texts_per_request:
        raise InvalidRequestError(
            f"{field}: {len(texts)} texts, at most {config.max_texts_per_request} per request", field=field
        )
    for i, text in enumerate(texts):
        if len(text) > config.max_chars_per_text:
            named = field if one_text else f"{field}.{i}"
            raise InvalidRequestError(
                f"{named}: {len(text)} characters, at most {config.max_chars_per_text}", field=named
            )


def json_bytes(payload: Any) -> bytes:
    """Compact UTF-8 JSON, as FastAPI's JSONResponse writes it, by orjson: 0.3 µs for a one-text answer
    where json.dumps took 7 µs, on the event loop of every request. orjson writes NaN as null where
    json.dumps(allow_nan=False) raised, so the engine refuses non-finite scores before they get here
    (ScoresNotFiniteError)."""
    return orjson.dumps(payload)


def api_key_dependency(config: ServingConfig) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency that refuses a request without the configured bearer key (none: open)."""

    # async: FastAPI runs a sync dependency in a worker thread, one thread hop per request for a
    # header comparison (measured in docs/benchmarks.md).
    def refusal(request: Request) -> UnauthorizedError | None:
        if not config.api_key:
            return None
        header = request.headers.get("authorization", "")
        # whitespace after the key is the header's optional whitespace (RFC 9110), not part of the key
        given = header[7:].rstrip(" \t") if header.lower().startswith("bearer ") else ""
        if hmac.compare_digest(given.encode(), config.api_key.encode()):
            return None
        return UnauthorizedError("missing or wrong bearer API key (Authorization: Bearer <key>)")

    async def require_key(request: Request) -> None:
        refused = refusal(request)
        if refused is not None:
            raise refused

    # FastAPI parses a JSON body before it runs dependencies: the body refusals ask this first (key_refusal)
    setattr(require_key, KEY_REFUSAL, refusal)
    return require_key


def ray_route_refusal(config: ServingConfig) -> Callable[[dict], Response | None]:
    """refuse(scope): the refusal of a request to one of Ray Serve's own routes that the app's routes
    would refuse, else None (Ray answers it). A direct-ingress replica answers /-/healthz and /-/routes
    itself, whatever the method and without the key (serving.direct_ingress): only GET and HEAD are
    answered, as on /healthz, and /-/routes, which names the app, wants the API key as /v1 does;
    /-/healthz is a probe, open as /healthz is."""
    key_refusal = getattr(api_key_dependency(config), KEY_REFUSAL)

    def refuse(scope: dict) -> Response | None:
        request = Request(scope)
        if request.method not in ("GET", "HEAD"):
            message = method_not_allowed_message(request.method, request.url.path, "GET, HEAD")
            response = error_response(405, "method_not_allowed", message)
            response.headers["Allow"] = "GET, HEAD"
            return response
        refused = key_refusal(request) if request.url.path == "/-/routes" else None
        return None if refused is None else serving_error_response(refused, "-", request.url.path)

    return refuse


async def within_timeout(call: Awaitable[Any], config: ServingConfig) -> Any:
    """The backend's answer, or RequestTimeoutError after request_timeout_s."""
    try:
        # asyncio.timeout, not wait_for: no task of its own per request.
        async with asyncio.timeout(config.request_timeout_s):
            return await call
    except TimeoutError:
        raise RequestTimeoutError(
            f"not answered within {config.request_timeout_s:g} s (request_timeout_s)"
        ) from None


# Set by a compatibility route around its handler (compat.ecosystem_route): whether counted() has counted
# the request, so that a refusal it has not counted is counted once, as `_invalid`.
_COUNTED: ContextVar[list[bool] | None] = ContextVar("labelwise_counted", default=None)


@contextlib.contextmanager
def counting() -> Iterator[Callable[[], bool]]:
    """Around a route's handler: yields a function that tells whether counted() has counted the request."""
    holder = [False]
    token = _COUNTED.set(holder)
    try:
        yield lambda: holder[0]
    finally:
        _COUNTED.reset(token)


# The paths of classify requests (POST): /v1's, Infinity's, TEI's (on /, /predict and /invocations) and
# KServe's infer. `labelwise_requests_total` counts classify requests: a refusal elsewhere (a scanner's
# GET /wp-login.php, a 401 on /v1/scenarios) is none.
_CLASSIFY_PATH = re.compile(
    r"/(?:v1/classify|classify|predict|invocations|v2/models/[^/]+(?:/versions/[^/]+)?/infer)?"
)


def is_classify_path(path: str) -> bool:
    return _CLASSIFY_PATH.fullmatch(path) is not None


def refusal_counter(metrics: ServingMetrics) -> Callable[[int, str], None]:
    """count(status, path): a refusal that counted() has not counted, as `_invalid`, when the request was
    to a classify path."""

    def count(status: int, path: str) -> None:
        if is_classify_path(path):
            metrics.requests.labels("_invalid", str(status)).inc()

    return count


@contextlib.contextmanager
def counted(metrics: ServingMetrics, scenario: str) -> Iterator[None]:
    """Count the request by scenario and status, and time it when it succeeds.

    The label is the scenario only when it is served (or answered): names clients make up are all
    `_unknown`, so the label set stays bounded whatever they send."""
    start = time.perf_counter()
    status = "200"
    try:
        yield
    except ServingError as exc:
        status = str(exc.status_code)
        raise
    except Exception as exc:
        # Ray's BackPressureError (a separate ingress's full queue) is answered 429/503, not 500
        status = str(backpressure_status(exc) or 500)
        raise
    except BaseException:  # cancelled: the client went away (nginx's 499); never counted as answered
        status = "499"
        raise
    finally:
        holder = _COUNTED.get()
        if holder is not None:
            holder[0] = True
        label = metrics.scenario_label(scenario, answered=status == "200")
        metrics.requests.labels(label, status).inc()
        if status == "200":
            metrics.request_latency.labels(label).observe(time.perf_counter() - start)


def classify_headers(config: ServingConfig) -> dict[str, str]:
    """Headers of every classify answer: clients size their chunks from this (labelwise.client reads it)."""
    return {MAX_TEXTS_HEADER: str(config.max_texts_per_request)}


async def answer_classify(
    body: ClassifyRequest, backend: ClassifyBackend, config: ServingConfig, metrics: ServingMetrics
) -> bytes:
    """The JSON answer to a validated classify request: limits, backend call, timeout, request metrics.
    Raises ServingError (the error handlers turn it into the error shape)."""
    with counted(metrics, body.scenario):
        check_limits(body, config)
        # Positional: a separate ingress forwards the arguments through a deployment handle.
        call = backend.classify(
            body.scenario, body.texts, body.top_k, body.truncate, body.raw_scores, body.abstain
        )
        result = await within_timeout(call, config)
    # The backend builds this body itself (plain str/int/float/bool), so it is encoded as it is:
    # FastAPI would otherwise validate it again through ClassifyResponse, per request. The route's
    # response_model still documents it in OpenAPI.
    return json_bytes(result)


def v1_routes(backend: ClassifyBackend, config: ServingConfig, metrics: ServingMetrics) -> APIRouter:
    """The API: /v1/classify and /v1/scenarios, behind the API key when one is configured."""
    router = APIRouter(dependencies=[Depends(api_key_dependency(config))])
    limit_headers = classify_headers(config)

    # A valid JSON body is answered by FastClassifyMiddleware (fast_classify.py) before it gets here,
    # through the same answer_classify; this route answers the rest and documents the API in OpenAPI.
    @router.post("/v1/classify", response_model=ClassifyResponse, responses=_ERRORS)
    async def classify(body: ClassifyRequest, request: Request) -> Response:
        # Errors answered here, as the fast path answers them: counted() has counted them, and the app's
        # handlers count what reaches them.
        try:
            payload = await answer_classify(body, backend, config, metrics)
        except ServingError as exc:
            return serving_error_response(exc, request_id_of(request), request.url.path)
        except Exception as exc:
            return unexpected_error_response(exc, request_id_of(request), request.url.path)
        return Response(payload, media_type="application/json", headers=limit_headers)

    @router.head("/v1/scenarios", include_in_schema=False)  # RFC 9110: HEAD wherever GET (probe_routes)
    @router.get("/v1/scenarios", response_model=ScenarioList, responses=_GATE_ERRORS)
    async def scenarios() -> dict[str, Any]:
        limits = {
            "max_texts_per_request": config.max_texts_per_request,
            "max_chars_per_text": config.max_chars_per_text,
            "max_body_bytes": config.body_limit_bytes,
        }
        return {"scenarios": await backend.list_scenarios(), "limits": limits}

    return router


def probe_routes(backend: ClassifyBackend, metrics: ServingMetrics) -> APIRouter:
    """Liveness, readiness and Prometheus metrics: never behind the API key."""
    router = APIRouter()

    # GET and HEAD: load balancers and uptime checks probe with either (Starlette's own routes allow HEAD
    # wherever GET is; FastAPI's do not). HEAD is a route of its own, out of the schema: one route with
    # both methods gives both operations one operationId, which breaks OpenAPI client generators.
    @router.head("/healthz", include_in_schema=False)
    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.head("/readyz", include_in_schema=False)
    @router.get(
        "/readyz", response_model=Readiness, responses={500: {"model": ErrorBody}, 503: {"model": Readiness}}
    )
    async def readyz() -> Any:
        body = Readiness(**await backend.readiness()).model_dump()
        if not body["ready"]:
            return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
        return body

    @router.head("/metrics", include_in_schema=False)
    @router.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(metrics.render() + await backend.engine_metrics(), media_type=metrics.content_type)

    @router.head("/", include_in_schema=False)
    @router.get("/", include_in_schema=False)
    async def root(request: Request) -> Response:
        return error_response(404, "not_found", not_found_message(request.url.path))

    return router


def openapi_as_answered(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """app.openapi without the 422 `HTTPValidationError` ({"detail": [...]}) FastAPI documents on any
    operation with parameters that declares no 422 of its own: this app never sends that body (its
    handlers answer a validation error in the route's own shape, and KServe's routes answer it 400)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = FastAPI.openapi(app)  # cached on the app: what /openapi.json serves from now on
        unsent = {"$ref": "#/components/schemas/HTTPValidationError"}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                documented = responses.get("422", {}).get("content", {}).get("application/json", {})
                if documented.get("schema") == unsent:
                    del responses["422"]
        if b"HTTPValidationError" not in orjson.dumps(schema.get("paths", {})):
            components = schema.get("components", {}).get("schemas", {})
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
        return schema

    return openapi


def create_api(
    backend: ClassifyBackend, config: ServingConfig, metrics: ServingMetrics, fast_classify: bool = True
) -> FastAPI:
    """The FastAPI app of a replica (or of a separate ingress): routes over `backend`, errors in one shape.
    fast_classify: valid classify requests skip FastAPI's routing (fast_classify.py); False: to compare."""
    app = FastAPI(
        title="labelwise",
        description="Text classification for many scenarios: POST /v1/classify.",
        version="1",
        # `/v1/classify/` is an unknown path (404 in the error shape), not a bodyless 307 to an address
        # built from the Host header that a client would have to follow with its body again.
        redirect_slashes=False,
    )

    count_refusal = refusal_counter(metrics)
    install_error_handlers(app, on_error=count_refusal)
    app.include_router(v1_routes(backend, config, metrics))
    app.include_router(probe_routes(backend, metrics))
    from .compat import compat_routes  # here: compat builds on this module's helpers
    from .fast_classify import ClassifyFrontDoor, FastClassifyMiddleware  # here: they build on this module

    app.include_router(compat_routes(backend, config, metrics))
    app.openapi = openapi_as_answered(app)
    # Innermost: inside the request id, admission and body limit, in front of FastAPI's routing.
    if fast_classify:
        app.add_middleware(FastClassifyMiddleware, backend=backend, config=config, metrics=metrics)
    app.add_middleware(
        BodyLimitMiddleware,
        limit_bytes=config.body_limit_bytes,
        on_refuse=count_refusal,
        timeout_s=config.request_timeout_s,
    )
    # Added last, so outermost: an overloaded replica refuses before reading or parsing anything.
    in_flight = InFlight()
    app.add_middleware(
        AdmissionMiddleware,
        limit=config.max_ongoing_requests,
        status=config.backpressure_status_code,
        retry_after_s=config.retry_after_s,
        on_refuse=lambda status: metrics.requests.labels("_overloaded", str(status)).inc(),
        in_flight=in_flight,
    )
    # Inside the request id: an exception no handler answered is answered with the id on it.
    app.add_middleware(UnexpectedErrorMiddleware, on_error=count_refusal)
    app.add_middleware(RequestIdMiddleware)  # outermost: refusals carry an id as well
    # In front of all of it, where the server calls it (direct ingress: serving.direct_ingress).
    app.state.classify_front_door = (
        ClassifyFrontDoor(app, backend, config, metrics, in_flight) if fast_classify else None
    )
    # Asked by a direct-ingress replica before Ray answers its own routes (serving.direct_ingress).
    app.state.ray_route_refusal = ray_route_refusal(config)
    return app
