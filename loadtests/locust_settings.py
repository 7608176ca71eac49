"""The locustfile's settings, each from its option when given, else its LABELWISE_LOCUST_* variable, else its
default; read by the locustfile at Locust's init and by loadtests/run.py before it waits for the server.

Nothing here imports Locust: it monkey-patches the standard library with gevent on import.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from .errors import LoadTestOptionError
from .request_shapes import DEFAULT_WEIGHTS, parse_weights
from .sentences import load_sentences

DEFAULT_TEXTS_PER_REQUEST = 32
_T = TypeVar("_T")


@dataclass(frozen=True)
class LocustSettings:
    scenarios: list[str]  # none: every scenario GET /v1/scenarios lists
    texts_per_request: int
    texts_file: str  # "": the packaged loadtests/sentences.txt
    texts: list[str]
    weights: dict[str, int]


def scenario_names(listed: str) -> list[str]:
    """'spam, sentiment' -> ['spam', 'sentiment']: a space after a comma is not part of a name."""
    return [name.strip() for name in listed.split(",") if name.strip()]


def setting(source: str, read: Callable[[], _T]) -> _T:
    """read(), or a LoadTestOptionError naming the option or variable the value came from."""
    try:
        return read()
    except (OSError, ValueError, csv.Error) as exc:
        raise LoadTestOptionError(f"{source}: {exc}") from None


def _given(flag: str, option: str | int | None, environ: Mapping[str, str]) -> tuple[str, str | None]:
    """(where the value came from, the value): the option when given, else its variable when set (an
    overridden variable is not read, so a bad one is no reason to refuse the run)."""
    if option is not None and option != "":
        return flag, str(option)
    variable = f"LABELWISE_LOCUST_{flag.removeprefix('--').replace('-', '_').upper()}"
    return variable, environ.get(variable)


def resolve_settings(
    *,
    scenarios: str = "",
    texts_per_request: int | None = None,
    texts_file: str = "",
    weights: str = "",
    environ: Mapping[str, str] = os.environ,
) -> LocustSettings:
    """The settings a run uses; a value that cannot be used raises LoadTestOptionError naming its source."""
    _, listed = _given("--scenarios", scenarios, environ)
    source, count = _given("--texts-per-request", texts_per_request, environ)
    n_texts = setting(source, lambda: int(count)) if count is not None else DEFAULT_TEXTS_PER_REQUEST
    if n_texts < 1:
        raise LoadTestOptionError(f"{source} must be >= 1, got {n_texts}")
    source, path = _given("--texts-file", texts_file, environ)
    texts = setting(source, lambda: load_sentences(path or None))
    source, spec = _given("--weights", weights, environ)
    return LocustSettings(
        scenarios=scenario_names(listed or ""),
        texts_per_request=n_texts,
        texts_file=path or "",
        texts=texts,
        weights=setting(source, lambda: parse_weights(spec if spec is not None else DEFAULT_WEIGHTS)),
    )
