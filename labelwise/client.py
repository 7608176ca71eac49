"""Python clients for the labelwise service: `LabelwiseClient` (sync) and `AsyncLabelwiseClient` (asyncio).

Both split a list longer than the server's `max_texts_per_request` into chunks, send up to `concurrency`
chunks at once and put the answers back in input order; they retry connect/read/write/pool errors and
429/502/503 answers with exponential backoff and full jitter, waiting at least the Retry-After the
server sent. An error answer raises the `ClientError` subclass for its error code (labelwise.errors);
no answer at all after every retry raises `ConnectionFailedError`. See docs/client.md.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from .errors import BadRequestError, ClientError, ConnectionFailedError

__all__ = [
    "DEFAULT_MAX_TEXTS_PER_REQUEST",
    "MAX_TEXTS_HEADER",
    "AsyncLabelwiseClient",
    "ClassifyResult",
    "ClientError",
    "LabelScore",
    "LabelwiseClient",
    "RetryPolicy",
    "ScenarioInfo",
]

# The service's default limit (serving.config.ServingConfig.max_texts_per_request), used until the
# server says otherwise: in GET /v1/scenarios (`max_texts_per_request`, top level or under `limits`),
# in this response header, or in a 422 naming the `texts` field.
DEFAULT_MAX_TEXTS_PER_REQUEST = 64
# Longer than the service's request_timeout_s default (30 s), so that a slow answer arrives as the
# server's 504 (ServerTimeoutError, not retried) rather than as a read timeout here, which is retried:
# a POST sent again to a server that is still working on it only adds to its load.
DEFAULT_TIMEOUT_S = 35.0
CONNECT_TIMEOUT_S = 5.0
MAX_TEXTS_HEADER = "X-Labelwise-Max-Texts-Per-Request"
# Transport failures worth another try: nothing, or not all of the answer, came back.
_RETRY_EXCEPTIONS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
_AT_MOST = re.compile(r"at most (\d+)")


class LabelScore(BaseModel):
    label: str = Field(description="Label name.")
    score: float = Field(description="Probability in [0, 1].")


class ClassifyResult(BaseModel):
    """The answer to one classify call, whatever the number of chunks it took, in input order."""

    model_config = ConfigDict(extra="allow")  # fields a newer server adds pass through
    scenario: str = Field(description="Scenario that answered.")
    version: int = Field(description="Model version that answered (the first chunk's; see `versions`).")
    results: list[list[LabelScore]] = Field(description="Per text, labels with scores, best first.")
    truncated: list[bool] = Field(description="Per text, whether it was cut to the max length.")
    versions: list[int] = Field(
        default_factory=list,
        description="Per text, the version that answered it (chunks may straddle a version swap).",
    )

    @property
    def labels(self) -> list[str]:
        """The best label of each text."""
        return [row[0].label for row in self.results]

    @property
    def scores(self) -> list[float]:
        """The best label's score of each text."""
        return [row[0].score for row in self.results]


class ScenarioInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(description="Scenario name.")
    alias: str | None = Field(default=None, description="Alias (or version) the deployment follows.")
    version: int | None = Field(default=None, description="Version serving now; None while loading.")
    labels: list[str] = Field(default_factory=list, description="Labels in logit order.")


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying a request again."""

    max_retries: int = 3
    backoff_s: float = 0.5  # the first retry waits up to this; each next one up to twice as long
    max_wait_s: float = 30.0  # cap on one wait, Retry-After included
    retry_statuses: frozenset[int] = frozenset({429, 502, 503})
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def wait_s(self, attempt: int, response: httpx.Response | None) -> float:
        """Retry-After when the answer carries one (plus up to 10% jitter), else full jitter over
        backoff_s * 2**attempt; never more than max_wait_s."""
        retry_after = _retry_after_s(response)
        if retry_after is not None:
            return min(retry_after * (1 + 0.1 * self.rng.random()), self.max_wait_s)
        return self.rng.uniform(0, min(self.backoff_s * 2**attempt, self.max_wait_s))


def _retry_after_s(response: httpx.Response | None) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date), or None when absent or unreadable."""
    value = response.headers.get("retry-after") if response is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error_of(response: httpx.Response) -> ClientError:
    try:
        body = response.json()
    except ValueError:
        body = {"error": {"message": response.text[:200] or response.reason_phrase}}
    return ClientError.for_answer(response.status_code, body)


class _TooMany(Exception):
    """The server refused a chunk as too many texts; `limit` is the chunk size to use instead."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    @staticmethod
    def of(error: BadRequestError, sent: int) -> _TooMany | None:
        """_TooMany when the refusal is about the number of texts and a smaller chunk can help."""
        if error.field != "texts" or sent <= 1:
            return None
        message = error.body.get("error", {}).get("message", "") if isinstance(error.body, dict) else ""
        found = _AT_MOST.search(str(message))
        limit = int(found.group(1)) if found else sent // 2
        return _TooMany(limit) if 1 <= limit < sent else None


def _limit_from_scenarios(body: Any) -> int | None:
    if not isinstance(body, dict):
        return None
    for where in (body, body.get("limits")):
        value = where.get("max_texts_per_request") if isinstance(where, dict) else None
        if isinstance(value, int) and value >= 1:
            return value
    return None


def _limit_from_header(response: httpx.Response) -> int | None:
    value = response.headers.get(MAX_TEXTS_HEADER)
    return int(value) if value is not None and value.isdigit() and int(value) >= 1 else None


def _merge(answers: Sequence[dict[str, Any]]) -> ClassifyResult:
    """One result from the chunks' answers, in order; per-text versions kept."""
    first = dict(answers[0])
    first["results"] = [row for a in answers for row in a["results"]]
    first["truncated"] = [t for a in answers for t in a["truncated"]]
    first["versions"] = [a["version"] for a in answers for _ in a["results"]]
    for key, value in first.items():  # per-text lists a newer server adds (e.g. raw_scores)
        per_text = all(isinstance(a.get(key), list) and len(a[key]) == len(a["results"]) for a in answers)
        if key not in ("results", "truncated", "versions") and isinstance(value, list) and per_text:
            first[key] = [v for a in answers for v in a[key]]
    return ClassifyResult.model_validate(first)


def _chunks(texts: Sequence[str], size: int) -> list[list[str]]:
    return [list(texts[i : i + size]) for i in range(0, len(texts), size)]


class _Base:
    """What both clients share: settings, the limit the server announced, error and retry decisions."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeout_s: float,
        max_retries: int,
        backoff_s: float,
        max_wait_s: float,
        concurrency: int,
        max_texts_per_request: int | None,
        retry: RetryPolicy | None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if max_texts_per_request is not None and max_texts_per_request < 1:
            raise ValueError(f"max_texts_per_request must be at least 1, got {max_texts_per_request}")
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # A connection that cannot be made fails fast; an answer may take up to timeout_s.
        self.timeout = httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s))
        self.retry = retry or RetryPolicy(max_retries, backoff_s, max_wait_s)
        self.concurrency = concurrency
        self._limit = max_texts_per_request
        self._limit_given = max_texts_per_request is not None

    @property
    def max_texts_per_request(self) -> int:
        """The chunk size in use: given, announced by the server, or the service default."""
        return self._limit or DEFAULT_MAX_TEXTS_PER_REQUEST

    def _learn_limit(self, value: int | None) -> None:
        if value is not None and not self._limit_given:
            self._limit = value

    def _outcome(self, response: httpx.Response, attempt: int) -> tuple[Any, float | None]:
        """(parsed JSON, None) on success; (None, seconds to wait) to retry; raises otherwise."""
        self._learn_limit(_limit_from_header(response))
        if response.status_code < 400:
            return response.json(), None
        if response.status_code in self.retry.retry_statuses and attempt < self.retry.max_retries:
            return None, self.retry.wait_s(attempt, response)
        raise _error_of(response)

    def _transport_wait(self, exc: httpx.HTTPError, method: str, path: str, attempt: int) -> float:
        if attempt >= self.retry.max_retries:
            raise ConnectionFailedError(
                f"{method} {self.base_url}{path}: {type(exc).__name__}: {exc or 'no answer'} "
                f"(after {attempt + 1} attempts)"
            ) from exc
        return self.retry.wait_s(attempt, None)

    def _classify_body(
        self, scenario: str, texts: list[str], top_k: int | None, truncate: bool, extra: dict[str, Any]
    ) -> dict[str, Any]:
        return {"scenario": scenario, "texts": texts, "top_k": top_k, "truncate": truncate, **extra}


class LabelwiseClient(_Base):
    """Synchronous client; `classify` takes any number of texts. Thread-safe."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_wait_s: float = 30.0,
        concurrency: int = 4,
        max_texts_per_request: int | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            timeout_s,
            max_retries,
            backoff_s,
            max_wait_s,
            concurrency,
            max_texts_per_request,
            retry,
        )
        limits = httpx.Limits(max_connections=max(concurrency, 1) + 1)
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=self.timeout,
            headers=self.headers,
            limits=limits,
            transport=transport,
        )
        self._discovered = self._limit_given
        self._discover_lock = threading.Lock()
        self._sleep: Callable[[float], None] = time.sleep

    def __enter__(self) -> LabelwiseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call with retries; the answer's JSON, or the ClientError subclass for its error."""
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except _RETRY_EXCEPTIONS as exc:
                self._sleep(self._transport_wait(exc, method, path, attempt))
            else:
                body, wait = self._outcome(response, attempt)
                if wait is None:
                    return body
                self._sleep(wait)
            attempt += 1

    def scenarios(self) -> list[ScenarioInfo]:
        """GET /v1/scenarios: what the server serves (it also tells the client its text limit)."""
        body = self.request("GET", "/v1/scenarios")
        self._learn_limit(_limit_from_scenarios(body))
        self._discovered = True
        return [ScenarioInfo.model_validate(s) for s in body["scenarios"]]

    def _discover(self) -> None:
        with self._discover_lock:
            if self._discovered:
                return
            try:
                self.scenarios()
            except ConnectionFailedError:
                raise  # no server at all: classify would only wait through the same retries again
            except ClientError:  # an older server or a stricter proxy: keep the default until refused
                self._discovered = True

    def _classify_chunk(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.request("POST", "/v1/classify", json=body)
        except BadRequestError as exc:
            refusal = _TooMany.of(exc, len(body["texts"]))
            if refusal is None:
                raise
            raise refusal from exc

    def classify(
        self,
        scenario: str,
        texts: Sequence[str],
        top_k: int | None = None,
        truncate: bool = True,
        **extra: Any,
    ) -> ClassifyResult:
        """Labels with scores for every text, in order; lists over the server's limit go as chunks,
        up to `concurrency` at once. `extra` fields go into each request body as they are."""
        texts = list(texts)
        if not texts:
            raise ValueError("texts is empty: give at least one text")
        self._discover()
        while True:
            parts = _chunks(texts, self.max_texts_per_request)
            bodies = [self._classify_body(scenario, p, top_k, truncate, extra) for p in parts]
            try:
                if len(bodies) == 1 or self.concurrency == 1:
                    answers = [self._classify_chunk(b) for b in bodies]
                else:
                    with ThreadPoolExecutor(max_workers=min(self.concurrency, len(bodies))) as pool:
                        answers = list(pool.map(self._classify_chunk, bodies))
                break
            except _TooMany as refused:  # the server's limit is lower than assumed: chunk again
                self._limit = refused.limit  # the server's word beats a given or announced limit
        return _merge(answers)

    def ready(self) -> bool:
        """Whether /readyz answers 200 now (no retries)."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False


class AsyncLabelwiseClient(_Base):
    """asyncio client with the same behaviour as LabelwiseClient; use `async with`."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_wait_s: float = 30.0,
        concurrency: int = 4,
        max_texts_per_request: int | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            timeout_s,
            max_retries,
            backoff_s,
            max_wait_s,
            concurrency,
            max_texts_per_request,
            retry,
        )
        limits = httpx.Limits(max_connections=max(concurrency, 1) + 1)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=self.timeout,
            headers=self.headers,
            limits=limits,
            transport=transport,
        )
        self._discovered = self._limit_given
        self._discover_lock = asyncio.Lock()
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def __aenter__(self) -> AsyncLabelwiseClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call with retries; the answer's JSON, or the ClientError subclass for its error."""
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, **kwargs)
            except _RETRY_EXCEPTIONS as exc:
                await self._sleep(self._transport_wait(exc, method, path, attempt))
            else:
                body, wait = self._outcome(response, attempt)
                if wait is None:
                    return body
                await self._sleep(wait)
            attempt += 1

    async def scenarios(self) -> list[ScenarioInfo]:
        """GET /v1/scenarios: what the server serves (it also tells the client its text limit)."""
        body = await self.request("GET", "/v1/scenarios")
        self._learn_limit(_limit_from_scenarios(body))
        self._discovered = True
        return [ScenarioInfo.model_validate(s) for s in body["scenarios"]]

    async def _discover(self) -> None:
        async with self._discover_lock:
            if self._discovered:
                return
            try:
                await self.scenarios()
            except ConnectionFailedError:
                raise
            except ClientError:
                self._discovered = True

    async def _classify_chunk(self, body: dict[str, Any], gate: asyncio.Semaphore) -> dict[str, Any]:
        try:
            async with gate:
                return await self.request("POST", "/v1/classify", json=body)
        except BadRequestError as exc:
            refusal = _TooMany.of(exc, len(body["texts"]))
            if refusal is None:
                raise
            raise refusal from exc

    async def classify(
        self,
        scenario: str,
        texts: Sequence[str],
        top_k: int | None = None,
        truncate: bool = True,
        **extra: Any,
    ) -> ClassifyResult:
        """Labels with scores for every text, in order; chunks go up to `concurrency` at once."""
        texts = list(texts)
        if not texts:
            raise ValueError("texts is empty: give at least one text")
        await self._discover()
        gate = asyncio.Semaphore(self.concurrency)
        while True:
            parts = _chunks(texts, self.max_texts_per_request)
            bodies = [self._classify_body(scenario, p, top_k, truncate, extra) for p in parts]
            try:
                answers = await asyncio.gather(*(self._classify_chunk(b, gate) for b in bodies))
                return _merge(answers)
            except _TooMany as refused:  # the server's limit is lower than assumed: chunk again
                self._limit = refused.limit  # the server's word beats a given or announced limit

    async def ready(self) -> bool:
        """Whether /readyz answers 200 now (no retries)."""
        try:
            return (await self._http.get("/readyz")).status_code == 200
        except httpx.HTTPError:
            return False
