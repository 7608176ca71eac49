"""Python clients for the labelwise service: `LabelwiseClient` (sync) and `AsyncLabelwiseClient` (asyncio).

Both split a list longer than the server's `max_texts_per_request` into chunks, send up to `concurrency`
chunks of each call at once (over a pool of `max_connections` connections that every call of the
client shares) and put the answers back in input order; they retry read/write/pool errors and
429/502/503 answers with exponential backoff and full jitter, waiting at least the Retry-After the
server sent, and a connection that cannot be made for `connect_retry_s` seconds (a server restarting).
An error answer raises the `ClientError` subclass for its error code (labelwise.errors); no answer at all
after every retry raises `ConnectionFailedError`. See docs/client.md.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import numbers
import random
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving.config import api_key_problem

from .errors import (
    BadRequestError,
    BodyTooLargeError,
    ClientError,
    ConnectionFailedError,
    EndpointNotFoundError,
    InvalidApiKeyError,
    InvalidTextError,
)

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
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
# Of those, the ones where no connection was made, so nothing was sent: a server restarting (a replica
# replaced, a rollout) refuses connections for seconds; these are retried for a time, not a count.
_CONNECT_EXCEPTIONS = (httpx.ConnectError, httpx.ConnectTimeout)
# Connections one client keeps at most, over every call and thread that shares it (httpx's default).
DEFAULT_MAX_CONNECTIONS = 100
_AT_MOST = re.compile(r"at most (\d+)")
# A refusal that names one text (`texts.<i>`), in the field and in its message.
_TEXT_FIELD = re.compile(r"texts\.(\d+)")
_TEXT_IN_MESSAGE = re.compile(r"(?<![\w.])texts\.(\d+)(?!\d)")
# A part of the caller's list: (index of its first text in the list, its texts).
_Part = tuple[int, list[str]]


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
    """When and how long to wait before trying a request again.

    Answers in `retry_statuses` and transport errors are retried up to `max_retries` times, except a
    connection that cannot be made (refused, or not made within the connect timeout: nothing was sent):
    that is retried for `connect_retry_s` seconds from the first such failure, each wait at most
    `connect_max_wait_s`, so that a server being restarted is waited for. `connect_retry_s=None` counts
    connect failures against `max_retries` like the others."""

    max_retries: int = 3
    backoff_s: float = 0.5  # the first retry waits up to this; each next one up to twice as long
    max_wait_s: float = 30.0  # cap on one wait, Retry-After included
    retry_statuses: frozenset[int] = frozenset({429, 502, 503})
    rng: random.Random = field(default_factory=random.Random, compare=False)
    # Longer than a replica replacement (docs/serving.md: about 4.6 s) with room for a slow start.
    connect_retry_s: float | None = 30.0
    connect_max_wait_s: float = 2.0  # cap on one wait between connect attempts

    def __post_init__(self) -> None:
        # A negative wait is not refused by the waits (they are clamped to 0): a policy with one retried
        # a refused connection thousands of times a second.
        # inf passed `>= 0`: a 503 (or a read timeout) was retried without end
        retries = self.max_retries
        if not _whole(retries) or retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {retries!r}: a whole number of retries")
        for name in ("backoff_s", "max_wait_s", "connect_max_wait_s"):
            value = getattr(self, name)
            if not value >= 0:  # NaN included
                raise ValueError(f"{name} must be 0 seconds or more, got {value}")
        # The cap on every wait: without it a Retry-After a year ahead was waited for (sync: an
        # OverflowError from Event.wait)
        if self.max_wait_s > threading.TIMEOUT_MAX:  # inf, or past what the platform can wait (~292 years)
            raise ValueError(
                f"max_wait_s must be a finite number of seconds, at most {threading.TIMEOUT_MAX:g}, got "
                f"{self.max_wait_s:g}"
            )
        if self.connect_retry_s is not None and not self.connect_retry_s >= 0:
            raise ValueError(f"connect_retry_s must be 0 or more (or None), got {self.connect_retry_s}")

    def connect_wait_s(self, attempt: int) -> float:
        """The wait after the `attempt`-th failed connect (0-based): full jitter over backoff_s *
        2**attempt, never more than connect_max_wait_s (nor max_wait_s)."""
        ceiling = min(self.backoff_s * 2 ** min(attempt, 30), self.connect_max_wait_s, self.max_wait_s)
        return self.rng.uniform(0, ceiling)

    def wait_s(self, attempt: int, response: httpx.Response | None) -> float:
        """Retry-After when the answer carries one (plus up to 10% jitter), else full jitter over
        backoff_s * 2**attempt; never more than max_wait_s."""
        retry_after = _retry_after_s(response)
        if retry_after is not None:
            return min(retry_after * (1 + 0.1 * self.rng.random()), self.max_wait_s)
        # 2**attempt capped as in connect_wait_s: past attempt 1023 it overflowed a float (OverflowError)
        return self.rng.uniform(0, min(self.backoff_s * 2 ** min(attempt, 30), self.max_wait_s))


def _retry_after_s(response: httpx.Response | None) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date), or None when absent or unreadable."""
    value = response.headers.get("retry-after") if response is not None else None
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:  # "nan" and "inf" parse as floats: unreadable as a wait (nan read as no wait at all)
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _without_credentials(url: str) -> str:
    """The URL without a user and password in it (`http://user:secret@host`): error messages name it."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1", url)


def _error_of(response: httpx.Response) -> ClientError:
    try:
        body = response.json()
    except ValueError:
        # not the service's JSON: a proxy or gateway in front of it answered (its HTML page is no message)
        kind = (response.headers.get("content-type") or "no Content-Type").split(";")[0]
        status = f"{response.status_code} {response.reason_phrase}".strip()
        body = {"error": {"message": f"{status} ({kind}, not the service's JSON: a proxy or gateway?)"}}
    request_id = response.headers.get("x-request-id")
    error = ClientError.for_answer(response.status_code, body, request_id)
    if isinstance(error, EndpointNotFoundError):
        # "404 not_found: Not Found" alone does not say which URL: name it (a base URL ending in /v1, say)
        request = response.request
        where = f"{request.method} {_without_credentials(str(request.url))}"
        message = f"{error.message} ({where}: no such path on the server; is the base URL its root?)"
        answer = body if isinstance(body, dict) else {}
        detail = answer.get("error") if isinstance(answer.get("error"), dict) else {"type": error.type}
        named = {**answer, "error": {**detail, "message": message}}
        return EndpointNotFoundError(response.status_code, named, request_id)
    return error


def _not_json(response: httpx.Response, exc: ValueError) -> ClientError:
    """The bad_answer error of a success answer whose body is not JSON (in labelwise classify's words)."""
    request = response.request
    kind = response.headers.get("content-type") or "no Content-Type"
    body = response.content[:80].decode("utf-8", "replace")
    url = _without_credentials(str(request.url))
    message = (
        f"{request.method} {url} did not answer as a labelwise server: {type(exc).__name__}: its "
        f"{response.status_code} answer is not JSON ({kind}: {body!r}); is the URL a proxy's page?"
    )
    return ClientError(response.status_code, {"error": {"type": "bad_answer", "message": message}})


def _redirected(response: httpx.Response) -> ClientError:
    """The bad_answer error of a redirect (an ingress sending http:// on to https://, say), naming where
    to: neither client follows one, and its page is no answer of this API."""
    request = response.request
    to = request.url.join(response.headers["location"])
    hint = (
        "use https:// in the base URL"
        if (request.url.scheme, to.scheme) == ("http", "https")
        else "give the URL of the server itself as the base URL"
    )
    message = (
        f"{request.method} {_without_credentials(str(request.url))} answered {response.status_code} "
        f"{response.reason_phrase} to {_without_credentials(str(to))}, a redirect the client does not "
        f"follow: {hint}"
    )
    return _bad_answer(message, response.status_code)


class _TooMany(Exception):
    """The server refused a chunk as too many texts, or as a body over its byte limit; `limit` is the
    chunk size to use instead, and `learn` whether it is the server's limit on texts (a body's size
    depends on its texts: halving one chunk says nothing of the next)."""

    def __init__(self, limit: int, learn: bool = True) -> None:
        self.limit = limit
        self.learn = learn

    @staticmethod
    def of(error: ClientError, sent: int) -> _TooMany | None:
        """_TooMany when the refusal is about the number of texts or the body's size and a smaller
        chunk can help."""
        if isinstance(error, BodyTooLargeError):
            return _TooMany(sent // 2, learn=False) if sent > 1 else None
        if not isinstance(error, BadRequestError) or error.field != "texts" or sent <= 1:
            return None
        message = error.body.get("error", {}).get("message", "") if isinstance(error.body, dict) else ""
        found = _AT_MOST.search(str(message))
        limit = int(found.group(1)) if found else sent // 2
        return _TooMany(limit) if 1 <= limit < sent else None


def _rebased(error: ClientError, start: int) -> ClientError:
    """The error a chunk got, naming a text by its index in the caller's list rather than in the chunk
    (`texts.600`, not `texts.22`, for the chunk that starts at 578), in `field` and in the message; its
    request id kept (the service's log lines about the request carry it)."""
    field_match = _TEXT_FIELD.fullmatch(error.field) if isinstance(error.field, str) else None
    detail = error.body.get("error") if isinstance(error.body, dict) else None
    if start == 0 or field_match is None or not isinstance(detail, dict):
        return error

    def shift(found: re.Match[str]) -> str:
        return f"texts.{int(found.group(1)) + start}"

    detail = {**detail, "field": shift(field_match)}
    if isinstance(detail.get("message"), str):
        detail["message"] = _TEXT_IN_MESSAGE.sub(shift, detail["message"])
    return type(error)(error.status, {**error.body, "error": detail}, error.request_id)


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
    # ASCII digits only: str.isdigit takes '²', which int() refuses
    digits = value is not None and value.isascii() and value.isdigit()
    return int(value) if digits and int(value) >= 1 else None


def _merged_usage(answers: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The chunks' `usage` as one: per-text lists (`tokens`) joined in order, integer totals
    (`total_tokens`) summed, anything else the first chunk's; None when a chunk has none."""
    usages = [a.get("usage") for a in answers]
    if not all(isinstance(u, dict) for u in usages):
        return None
    merged = dict(usages[0])
    for key in merged:
        values = [u.get(key) for u in usages]
        sizes = [len(a["results"]) for a in answers]
        if all(isinstance(v, list) and len(v) == n for v, n in zip(values, sizes, strict=True)):
            merged[key] = [x for v in values for x in v]
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            merged[key] = sum(values)
    return merged


def _merge(answers: Sequence[dict[str, Any]], expected: int | None = None) -> ClassifyResult:
    """One result from the chunks' answers (each checked by `_checked_answer`), in order; per-text
    versions kept, usage added up. With `expected`, the chunks must hold that many results: one missing
    would pair later texts with other texts' labels. A result of the wrong shape is a bad_answer."""
    got = sum(len(a["results"]) for a in answers)
    if expected is not None and got != expected:
        message = f"the answers to {len(answers)} chunks hold {got} results for {expected} texts"
        raise _bad_answer(message)
    first = dict(answers[0])
    first["results"] = [row for a in answers for row in a["results"]]
    first["truncated"] = [t for a in answers for t in a["truncated"]]
    first["versions"] = [a["version"] for a in answers for _ in a["results"]]
    for key, value in first.items():  # per-text lists a newer server adds (e.g. raw_scores)
        per_text = all(isinstance(a.get(key), list) and len(a[key]) == len(a["results"]) for a in answers)
        if key not in ("results", "truncated", "versions") and isinstance(value, list) and per_text:
            first[key] = [v for a in answers for v in a[key]]
    if "usage" in first:
        usage = _merged_usage(answers)
        if usage is None:  # some chunk came back without usage: a sum would be wrong
            del first["usage"]
        else:
            first["usage"] = usage
    try:
        return ClassifyResult.model_validate(first)
    except ValidationError as exc:  # a JSON answer of the wrong shape: not this API's
        raise _bad_answer(f"POST /v1/classify answered {_problems(exc)}") from None


def _bad_answer(message: str, status: int | None = None) -> ClientError:
    return ClientError(status, {"error": {"type": "bad_answer", "message": message}})


def _problems(exc: ValidationError) -> str:
    """A pydantic ValidationError as one line: `where: what` per error, joined by '; '."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'the answer'}: {e['msg']}" for e in exc.errors())


def _whole(value: object) -> bool:
    """Whether `value` is a whole number: an int, not a bool, a float or NaN."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_count(name: str, value: object) -> None:
    """ValueError unless `value` is a whole number of at least 1."""
    if not _whole(value) or value < 1:
        raise ValueError(f"{name} must be at least 1 (a whole number), got {value!r}")


URL_FORM = "give it as http://HOST:PORT"


def url_problem(url: str) -> str | None:
    """What keeps any request from going to the server URL `url`, said after it ("is not a valid URL
    (...)", "has no host", ...), or None: the client's base_url and `labelwise classify --url` alike."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port  # reading it checks its range
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        if parts.scheme and parts.hostname:
            return f"has scheme {parts.scheme!r}, not http:// or https://"
        return "has no http:// or https://"
    if not parts.hostname:
        return "has no host"
    return "has port 0, which is not a port" if port == 0 else None


def _check_base_url(url: object) -> None:
    """ValueError, naming it, for a base_url no request can go to (url_problem): `http://[::1` was an
    httpx.InvalidURL (no ClientError), `:99999` a refused connection retried for connect_retry_s, and
    `localhost:8000` failed only on the first call."""
    if not isinstance(url, str):
        raise ValueError(f"base_url must be a string, got {type(url).__name__}; {URL_FORM}")
    problem = url_problem(url)
    if problem is not None:
        raise ValueError(f"base_url {_without_credentials(url)!r} {problem}; {URL_FORM}")


def _check_api_key(key: str) -> None:
    """InvalidApiKeyError for a key no request could carry (serving.config.api_key_problem: the service's
    own rule for its config), at construction rather than as a UnicodeEncodeError (or a 401) on the
    first call."""
    problem = api_key_problem(key)
    if problem is not None:
        raise InvalidApiKeyError(
            f"api_key {problem}: give the key exactly as the service has it, in ASCII letters, digits and "
            "punctuation (a key read from a file: strip its trailing newline)"
        )


def _sendable(texts: Sequence[str]) -> list[str]:
    """texts as a list, refused here (InvalidTextError, a ValueError, naming the text) where no request
    could carry them: none at all, a value that is not a string (None, a number, a NaN from a missing
    cell, bytes), or a string with a lone surrogate (it has no UTF-8 form: the body could not be
    encoded). One string is refused too: as a sequence it would be sent one character a text; and so are
    None, a dict and anything else that is not a sequence of texts."""
    if isinstance(texts, str | bytes):
        raise InvalidTextError(
            f"texts is one {type(texts).__name__}, not a list of texts (it would be sent a character a "
            "text): pass [text]"
        )
    not_a_list = f"texts is {type(texts).__name__}, not a list of texts: pass a list of strings"
    if texts is None or isinstance(texts, Mapping):  # a dict would be sent its keys
        raise InvalidTextError(not_a_list)
    try:
        texts = list(texts)
    except TypeError:  # not iterable: a number, say
        raise InvalidTextError(not_a_list) from None
    if not texts:
        raise InvalidTextError("texts is empty: give at least one text")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidTextError(f"texts[{i}]: expected a string, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidTextError(
                f"texts[{i}]: not valid Unicode (a lone surrogate at character {exc.start}): "
                "decode the text with errors='replace' or drop that character"
            ) from None
    return texts


def _check_fields(body: Mapping[str, Any]) -> None:
    """BadRequestError (`status` None, `field` the field's name) for a classify body's field other than
    `texts` (checked by _sendable) that JSON cannot carry: a NaN or infinity, a numpy scalar, a set.
    httpx raised its own ValueError or TypeError for it, after GET /v1/scenarios had gone out."""
    for name, value in body.items():
        if name == "texts":
            continue
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            message = (
                f"{name} cannot be sent as JSON ({exc}): give a finite number, a string, a bool, None, "
                "or a list or dict of them (a numpy value: its .item())"
            )
            error = {"type": BadRequestError.code, "field": name, "message": message}
            raise BadRequestError(None, {"error": error}) from None


@dataclass
class _Tries:
    """One request's retries so far: count-based ones (answers, transport errors after a connection
    was made) and, apart, failed connects, timed from the first."""

    retries: int = 0
    connects: int = 0
    connect_since: float | None = None  # time.monotonic() of the first failed connect


# Room a classify body takes besides its texts (scenario, top_k, options, brackets), generously.
_BODY_OVERHEAD_BYTES = 1024


def _parts(start: int, texts: list[str], size: int, max_bytes: int | None = None) -> list[_Part]:
    """`texts` (which start at `start` in the caller's list) cut into parts of at most `size`, and, with
    `max_bytes` (the server's body limit), of bodies within it: each text costs its JSON string (ASCII
    escapes, as the body is sent) and a comma. A text that alone is over the limit goes alone (the server
    refuses it, by name). Without the byte cut a server that refuses a large body before reading it
    closes the connection, which an async client read as a transport error and sent again."""
    if max_bytes is None:
        return [(start + i, texts[i : i + size]) for i in range(0, len(texts), size)]
    budget = max(1, max_bytes - _BODY_OVERHEAD_BYTES)
    parts: list[_Part] = []
    first, used = 0, 0
    for i, text in enumerate(texts):
        cost = len(json.dumps(text)) + 1
        if i > first and (i - first >= size or used + cost > budget):
            parts.append((start + first, texts[first:i]))
            first, used = i, 0
        used += cost
    if texts:
        parts.append((start + first, texts[first:]))
    return parts


class _Base:
    """What both clients share: settings, the limit the server announced, error and retry decisions."""

    _http: httpx.Client | httpx.AsyncClient

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
        max_connections: int,
        connect_retry_s: float | None,
    ) -> None:
        # A NaN passed `< 1`: concurrency=nan left the sync client's thread pool without a thread and
        # max_connections=nan the pool without a connection (a call waited forever), and
        # max_texts_per_request=nan or 2.5 failed each classify with a TypeError from range()
        _check_count("concurrency", concurrency)
        _check_count("max_connections", max_connections)
        if connect_retry_s is not None and connect_retry_s < 0:
            raise ValueError(f"connect_retry_s must be 0 or more (or None), got {connect_retry_s}")
        if max_texts_per_request is not None:
            _check_count("max_texts_per_request", max_texts_per_request)
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not timeout_s > 0:
            # 0 made every connect time out at once: a reachable server was retried for connect_retry_s,
            # then reported as unreachable
            raise ValueError(f"timeout_s must be more than 0 seconds, got {timeout_s!r}")
        _check_base_url(base_url)
        self.base_url = base_url.rstrip("/")
        self._shown_url = _without_credentials(self.base_url)  # what error messages name
        if api_key:
            _check_api_key(api_key)
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # A connection that cannot be made fails fast; an answer may take up to timeout_s. inf, and any
        # wait longer than the platform can time (threading.TIMEOUT_MAX, about 292 years), is no timeout
        # (None to httpx): as a number the sync client's socket refused it (OverflowError)
        self.timeout = httpx.Timeout(
            None if timeout_s > threading.TIMEOUT_MAX else timeout_s,
            connect=min(CONNECT_TIMEOUT_S, timeout_s),
        )
        self.retry = retry or RetryPolicy(max_retries, backoff_s, max_wait_s, connect_retry_s=connect_retry_s)
        # `concurrency` bounds one call's requests in flight; the connection pool is the whole client's,
        # shared by every thread or task that calls it at once.
        self.concurrency = concurrency
        self.limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=min(max_connections, 20)
        )
        self._limit = max_texts_per_request
        self._limit_given = max_texts_per_request is not None
        # The server's longest text in characters, from GET /v1/scenarios' `limits` (None: not told).
        self.max_chars_per_text: int | None = None
        self.max_body_bytes: int | None = None  # the server's body limit, as GET /v1/scenarios announces it

    def _check_open(self) -> None:
        """ClientError (client_closed) for a call on a closed client: httpx raised a bare RuntimeError. A
        call checks after a RuntimeError from httpx, or a transport error, too: another thread (or task)
        may close the client while the call waits to retry or has a request in flight (its connection cut)."""
        if self._http.is_closed:
            message = (
                "the client is closed (by close(), aclose() or the end of its `with` block): make a new one"
            )
            raise ClientError(None, {"error": {"type": "client_closed", "message": message}})

    @property
    def max_texts_per_request(self) -> int:
        """The chunk size in use: given, announced by the server, or the service default."""
        return self._limit or DEFAULT_MAX_TEXTS_PER_REQUEST

    def _discovery_settled(self, exc: ClientError) -> bool:
        """Whether GET /v1/scenarios failing with `exc` (an older server or a stricter proxy: the default
        limit stands until refused) settles discovery for good. An answer that says "later" (429 or 5xx
        after its retries: a server restarting or shedding load) does not: the next call asks again, or
        the limits it announces (max_chars_per_text, which labelwise classify cuts texts to) were lost for
        the client's whole life."""
        return exc.status is None or (exc.status < 500 and exc.status not in self.retry.retry_statuses)

    def _learn_limit(self, value: int | None) -> None:
        if value is not None and not self._limit_given:
            self._limit = value

    def _learn_limits(self, body: Any) -> None:
        """The text limits GET /v1/scenarios announces."""
        self._learn_limit(_limit_from_scenarios(body))
        limits = body.get("limits") if isinstance(body, dict) else None
        chars = limits.get("max_chars_per_text") if isinstance(limits, dict) else None
        if isinstance(chars, int) and not isinstance(chars, bool) and chars >= 1:
            self.max_chars_per_text = chars
        body_bytes = limits.get("max_body_bytes") if isinstance(limits, dict) else None
        if isinstance(body_bytes, int) and not isinstance(body_bytes, bool) and body_bytes >= 1:
            self.max_body_bytes = body_bytes

    def _outcome(self, response: httpx.Response, tries: _Tries) -> tuple[Any, float | None]:
        """(parsed JSON, None) on success; (None, seconds to wait) to retry; raises otherwise."""
        self._learn_limit(_limit_from_header(response))
        if response.is_redirect:
            raise _redirected(response)
        if response.status_code < 400:
            try:
                return response.json(), None
            except ValueError as exc:  # a proxy's HTML page, say: not an answer of this API
                raise _not_json(response, exc) from None
        if response.status_code in self.retry.retry_statuses and tries.retries < self.retry.max_retries:
            tries.retries += 1
            return None, self.retry.wait_s(tries.retries - 1, response)
        raise _error_of(response)

    def _transport_wait(self, exc: httpx.HTTPError, method: str, path: str, tries: _Tries) -> float:
        """The wait before trying again after a transport error, or ConnectionFailedError. A connect that
        failed (nothing sent) is tried again until connect_retry_s have passed since the first one, the
        last wait cut to end there; other errors count against max_retries."""
        self._check_open()
        budget = self.retry.connect_retry_s
        if isinstance(exc, _CONNECT_EXCEPTIONS) and budget is not None:
            now = time.monotonic()
            if tries.connect_since is None:
                tries.connect_since = now
            spent = now - tries.connect_since
            if spent >= budget:
                attempts = tries.retries + tries.connects + 1
                raise ConnectionFailedError(
                    f"{method} {self._shown_url}{path}: {type(exc).__name__}: {exc or 'no answer'} "
                    f"(after {attempts} attempts over {spent:.1f} s; connect_retry_s is {budget:g})"
                ) from exc
            tries.connects += 1
            return min(self.retry.connect_wait_s(tries.connects - 1), budget - spent)
        if tries.retries >= self.retry.max_retries:
            raise ConnectionFailedError(
                f"{method} {self._shown_url}{path}: {type(exc).__name__}: {exc or 'no answer'} "
                f"(after {tries.retries + tries.connects + 1} attempts)"
            ) from exc
        tries.retries += 1
        return self.retry.wait_s(tries.retries - 1, None)

    def _transport_failure(self, exc: httpx.HTTPError, method: str, path: str) -> ClientError:
        """The ClientError for an httpx error that no retry mends (every ClientError the docs list, not
        httpx's own): an answer that cannot be decoded (a `Content-Encoding` its body is not, redirects
        without end) is a bad_answer; a request that cannot be sent (a proxy refusing it, a scheme httpx
        does not speak) fails to connect."""
        self._check_open()
        where = f"{method} {self._shown_url}{path}: {type(exc).__name__}: {exc or 'no answer'}"
        if isinstance(exc, (httpx.DecodingError, httpx.TooManyRedirects)):
            return _bad_answer(where)
        return ConnectionFailedError(where)

    def _scenarios_of(self, body: Any) -> list[ScenarioInfo]:
        """The scenarios a GET /v1/scenarios answer lists, its text limits learned; bad_answer (and
        nothing learned) when it is not this API's answer."""
        listed = body.get("scenarios") if isinstance(body, dict) else None
        if not isinstance(listed, list):
            if not isinstance(body, dict):
                why = f"its answer is a JSON {type(body).__name__}, not an object"
            elif "scenarios" not in body:
                why = f"KeyError: 'scenarios' (its answer has no `scenarios` list: {str(body)[:80]!r})"
            else:
                why = f"its `scenarios` is a JSON {type(listed).__name__}, not a list"
            raise _bad_answer(
                f"GET {self._shown_url}/v1/scenarios did not answer as a labelwise server: {why}"
            )
        try:
            scenarios = [ScenarioInfo.model_validate(s) for s in listed]
        except ValidationError as exc:
            raise _bad_answer(
                f"GET {self._shown_url}/v1/scenarios did not answer as a labelwise server: {_problems(exc)}"
            ) from None
        self._learn_limits(body)
        return scenarios

    def _classify_body(
        self, scenario: str, texts: list[str], top_k: int | None, truncate: bool, extra: dict[str, Any]
    ) -> dict[str, Any]:
        return {"scenario": scenario, "texts": texts, "top_k": top_k, "truncate": truncate, **extra}

    @staticmethod
    def _checked_answer(answer: Any, sent: int, start: int) -> dict[str, Any]:
        """The answer to a chunk of `sent` texts from `start` of the caller's list, checked to hold one
        result (and one `truncated` flag) per text, and its `version`: a short or long answer would shift
        every later text onto another's result. ClientError (bad_answer) otherwise."""
        results = answer.get("results") if isinstance(answer, dict) else None
        truncated = answer.get("truncated") if isinstance(answer, dict) else None
        version = answer.get("version") if isinstance(answer, dict) else None
        if isinstance(results, list) and len(results) == sent:
            if not isinstance(truncated, list):
                got = "no `truncated` list"
            elif len(truncated) != sent:
                got = f"{len(truncated)} `truncated` flags"
            elif not isinstance(version, int) or isinstance(version, bool):
                got = "no integer `version`"
            else:
                return answer
        elif isinstance(results, list):
            got = f"{len(results)} results"
        else:
            got = "no `results` list" if isinstance(answer, dict) else f"a JSON {type(answer).__name__}"
        message = f"POST /v1/classify answered {got} for {sent} texts (texts {start} to {start + sent - 1})"
        raise _bad_answer(message)

    @staticmethod
    def _raise_for_chunk(error: ClientError, sent: int, start: int) -> NoReturn:
        """Raises the error of a chunk of `sent` texts from `start` of the caller's list: _TooMany when
        the server wants smaller chunks, else the error, naming its text by the index in that list."""
        refusal = _TooMany.of(error, sent)
        if refusal is not None:
            raise refusal from error
        rebased = _rebased(error, start)
        if rebased is error:
            raise error
        raise rebased from None

    def _split(self, start: int, part: list[str], refused: _TooMany | None) -> list[_Part]:
        """The smaller parts to send instead of one the server refused as too many texts (its word beats
        a given or announced limit), or of one cut before the limit came down."""
        if refused is not None and refused.learn:
            self._limit = refused.limit
        size = refused.limit if refused is not None else self.max_texts_per_request
        return _parts(start, part, size, self.max_body_bytes)


class LabelwiseClient(_Base):
    """Synchronous client; `classify` takes any number of texts. Thread-safe: threads may share one
    client, each call sending up to `concurrency` requests at once, all of them together up to
    `max_connections`. A connection refused is tried again for `connect_retry_s` seconds (None: counted
    against `max_retries` like other errors); both that and the retry settings are replaced by `retry`
    when it is given."""

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
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        connect_retry_s: float | None = 30.0,
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
            max_connections,
            connect_retry_s,
        )
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=self.timeout,
            headers=self.headers,
            limits=self.limits,
            transport=transport,
        )
        # Asked even with max_texts_per_request given: the server's body limit comes from it too.
        self._discovered = False
        self._discover_lock = threading.Lock()
        # A stand-in for the waits between retries (tests record them instead of waiting).
        self._sleep: Callable[[float], None] | None = None

    def _wait_unless_stopped(self, stop: threading.Event, seconds: float) -> None:
        """A retry's wait, cut short (raising ClientError) once `stop`, its own call's, is set: one Event
        per call, so that a call ending early never cuts another thread's retries short."""
        if self._sleep is not None:
            self._sleep(seconds)
        elif stop.wait(seconds):
            raise ClientError(None, {"error": {"type": "cancelled", "message": "the call was stopped"}})

    def __enter__(self) -> LabelwiseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call with retries; the answer's JSON, or the ClientError subclass for its error."""
        return self._request(method, path, threading.Event(), **kwargs)

    def _request(self, method: str, path: str, stop: threading.Event, **kwargs: Any) -> Any:
        """request(), its waits between retries cut short once `stop` (its classify call's) is set."""
        tries = _Tries()
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except _RETRY_EXCEPTIONS as exc:
                self._wait_unless_stopped(stop, self._transport_wait(exc, method, path, tries))
            except httpx.HTTPError as exc:
                raise self._transport_failure(exc, method, path) from exc
            except RuntimeError:  # httpx's for a closed client: before the first request, or since
                self._check_open()
                raise
            else:
                body, wait = self._outcome(response, tries)
                if wait is None:
                    return body
                self._wait_unless_stopped(stop, wait)

    def scenarios(self) -> list[ScenarioInfo]:
        """GET /v1/scenarios: what the server serves (it also tells the client its text limit)."""
        scenarios = self._scenarios_of(self.request("GET", "/v1/scenarios"))
        self._discovered = True  # only once the answer is this API's: a bad_answer is raised each time
        return scenarios

    def _discover(self) -> None:
        with self._discover_lock:
            if self._discovered:
                return
            try:
                self.scenarios()
            except ConnectionFailedError:
                raise  # no server at all: classify would only wait through the same retries again
            except ClientError as exc:  # an older server or a stricter proxy: keep the default until refused
                if exc.type == "bad_answer":  # answered, but not as this API: classify would be no better
                    raise
                self._discovered = self._discovery_settled(exc)

    def _classify_chunk(self, body: dict[str, Any], start: int, stop: threading.Event) -> dict[str, Any]:
        """POST one chunk that starts at `start` of the caller's list; its retries end once `stop` is set."""
        try:
            answer = self._request("POST", "/v1/classify", stop, json=body)
        except ClientError as exc:
            self._raise_for_chunk(exc, len(body["texts"]), start)
        return self._checked_answer(answer, len(body["texts"]), start)

    def _score_part(
        self,
        body_of: Callable[[list[str]], dict[str, Any]],
        part: _Part,
        answers: dict[int, Any],
        stop: threading.Event,
    ) -> list[_Part]:
        """Scores one part into answers[start]; or the smaller parts to send instead, when the server's
        limit is lower than the part (refused, or learned from another chunk since it was cut)."""
        start, texts = part
        if len(texts) > self.max_texts_per_request:
            return self._split(start, texts, None)
        try:
            answers[start] = self._classify_chunk(body_of(texts), start, stop)
        except _TooMany as refused:
            return self._split(start, texts, refused)
        return []

    def _score_in_pool(
        self, score: Callable[[_Part], list[_Part]], parts: Iterable[_Part], stop: threading.Event
    ) -> None:
        """Scores the parts on up to `concurrency` threads, the smaller parts a refusal asks for
        included. The first error cancels every part not yet sent, sets `stop` (this call's: its parts
        waiting to retry give up), and is raised once those in flight are back."""
        lock = threading.Lock()
        changed = threading.Event()
        futures: list[Future[None]] = []
        errors: list[BaseException] = []
        pool = ThreadPoolExecutor(max_workers=self.concurrency)

        def finished(future: Future[None]) -> None:
            if not future.cancelled() and future.exception() is not None:
                with lock:
                    errors.append(future.exception())
            changed.set()

        def submit(part: _Part) -> None:
            future = pool.submit(run, part)
            with lock:
                futures.append(future)
            future.add_done_callback(finished)

        def run(part: _Part) -> None:
            for smaller in score(part):  # sent before this part counts as done
                submit(smaller)

        try:
            for part in parts:
                submit(part)
            while True:
                changed.wait()
                changed.clear()
                with lock:
                    if errors:
                        raise errors[0]
                    if all(f.done() for f in futures):  # none running, so none to add parts
                        # A future is done before its callback has run: read a failure off the futures
                        # themselves, not `errors`, or a failed part would go missing from the answer.
                        failed = [f.exception() for f in futures if not f.cancelled()]
                        if first := next((e for e in failed if e is not None), None):
                            raise first
                        return
        except BaseException:
            stop.set()  # Ctrl-C or a failed part: this call's parts still waiting to retry give up now
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

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
        self._check_open()
        texts = _sendable(texts)
        _check_fields(self._classify_body(scenario, texts, top_k, truncate, extra))
        self._discover()
        answers: dict[int, dict[str, Any]] = {}
        # This call's own: set when it ends early, it stops its parts' retries, never another call's.
        stop = threading.Event()

        def body_of(part: list[str]) -> dict[str, Any]:
            return self._classify_body(scenario, part, top_k, truncate, extra)

        def score(part: _Part) -> list[_Part]:
            return self._score_part(body_of, part, answers, stop)

        todo = deque(_parts(0, texts, self.max_texts_per_request, self.max_body_bytes))
        while todo and (len(todo) == 1 or self.concurrency == 1):  # one at a time: no thread needed
            todo.extendleft(reversed(score(todo.popleft())))
        if todo:
            self._score_in_pool(score, todo, stop)
        return _merge([answers[start] for start in sorted(answers)], len(texts))

    def ready(self) -> bool:
        """Whether /readyz answers 200 now (no retries)."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False
        except RuntimeError:  # httpx's for a closed client
            self._check_open()
            raise


class AsyncLabelwiseClient(_Base):
    """asyncio client with the same behaviour (and arguments) as LabelwiseClient; use `async with`."""

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
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        connect_retry_s: float | None = 30.0,
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
            max_connections,
            connect_retry_s,
        )
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=self.timeout,
            headers=self.headers,
            limits=self.limits,
            transport=transport,
        )
        self._discovered = False  # asked even with max_texts_per_request given (see LabelwiseClient)
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
        tries = _Tries()
        while True:
            try:
                response = await self._http.request(method, path, **kwargs)
            except _RETRY_EXCEPTIONS as exc:
                await self._sleep(self._transport_wait(exc, method, path, tries))
            except httpx.HTTPError as exc:
                raise self._transport_failure(exc, method, path) from exc
            except RuntimeError:  # httpx's for a closed client: before the first request, or since
                self._check_open()
                raise
            else:
                body, wait = self._outcome(response, tries)
                if wait is None:
                    return body
                await self._sleep(wait)

    async def scenarios(self) -> list[ScenarioInfo]:
        """GET /v1/scenarios: what the server serves (it also tells the client its text limit)."""
        scenarios = self._scenarios_of(await self.request("GET", "/v1/scenarios"))
        self._discovered = True  # only once the answer is this API's: a bad_answer is raised each time
        return scenarios

    async def _discover(self) -> None:
        async with self._discover_lock:
            if self._discovered:
                return
            try:
                await self.scenarios()
            except ConnectionFailedError:
                raise
            except ClientError as exc:
                if exc.type == "bad_answer":
                    raise
                self._discovered = self._discovery_settled(exc)

    async def _classify_chunk(self, body: dict[str, Any], start: int) -> dict[str, Any]:
        """POST one chunk that starts at `start` of the caller's list."""
        try:
            answer = await self.request("POST", "/v1/classify", json=body)
        except ClientError as exc:
            self._raise_for_chunk(exc, len(body["texts"]), start)
        return self._checked_answer(answer, len(body["texts"]), start)

    async def _score_part(
        self,
        body_of: Callable[[list[str]], dict[str, Any]],
        part: _Part,
        answers: dict[int, Any],
        gate: asyncio.Semaphore,
    ) -> list[_Part]:
        """Scores one part into answers[start] once `gate` lets it; or the smaller parts to send
        instead, when the server's limit is lower than the part (refused, or learned since it was cut)."""
        start, texts = part
        async with gate:
            if len(texts) > self.max_texts_per_request:
                return self._split(start, texts, None)
            try:
                answers[start] = await self._classify_chunk(body_of(texts), start)
            except _TooMany as refused:
                return self._split(start, texts, refused)
        return []

    async def classify(
        self,
        scenario: str,
        texts: Sequence[str],
        top_k: int | None = None,
        truncate: bool = True,
        **extra: Any,
    ) -> ClassifyResult:
        """Labels with scores for every text, in order; chunks go up to `concurrency` at once."""
        self._check_open()
        texts = _sendable(texts)
        _check_fields(self._classify_body(scenario, texts, top_k, truncate, extra))
        await self._discover()
        # One gate for every part of this call, the smaller parts a refusal asks for included; a part
        # the server answered is never sent again.
        gate = asyncio.Semaphore(self.concurrency)
        answers: dict[int, dict[str, Any]] = {}

        def body_of(part: list[str]) -> dict[str, Any]:
            return self._classify_body(scenario, part, top_k, truncate, extra)

        async def score(part: _Part) -> None:
            for smaller in await self._score_part(body_of, part, answers, gate):
                group.create_task(score(smaller))

        try:
            # The first error cancels every other part (waiting for the gate or in flight), and is
            # raised once they are all done: nothing is left running on a client about to be closed.
            async with asyncio.TaskGroup() as group:
                for part in _parts(0, texts, self.max_texts_per_request, self.max_body_bytes):
                    group.create_task(score(part))
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        return _merge([answers[start] for start in sorted(answers)], len(texts))

    async def ready(self) -> bool:
        """Whether /readyz answers 200 now (no retries)."""
        try:
            return (await self._http.get("/readyz")).status_code == 200
        except httpx.HTTPError:
            return False
        except RuntimeError:  # httpx's for a closed client
            self._check_open()
            raise
