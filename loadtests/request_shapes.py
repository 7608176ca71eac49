"""What a classify request looks like on each system the bench drives: path, body, readiness probe.

labelwise (and the seed baseline, which copies its API) take `{"scenario", "texts", "top_k"}` on
POST /v1/classify, behind `Authorization: Bearer <key>` when the server has an api_key; Infinity
takes `{"model", "input"}` on POST /classify and has GET /health.
Both load drivers (wrk and the Python generator) build their bodies from here, so every system
gets the same texts in the same order.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

BODY_POOL = 512  # distinct pre-encoded bodies per load: enough variety, no per-request JSON cost
API_KEY_ENV = "LABELWISE_API_KEY"  # a server's api_key, as `labelwise classify --api-key` reads it


def auth_headers(api_key: str | None) -> dict[str, str]:
    """What a server with an api_key checks on its /v1 routes (serving/api/routes.py); none without a key."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


@dataclass(frozen=True)
class RequestShape:
    """One system's classify call."""

    name: str
    path: str
    ready_path: str
    results_key: str  # the answer's list with one entry per text

    def body(self, scenario: str, texts: list[str]) -> dict[str, Any]:
        if self.name == "infinity":
            return {"model": scenario, "input": texts}
        return {"scenario": scenario, "texts": texts, "top_k": 1}


SHAPES = {
    "labelwise": RequestShape("labelwise", "/v1/classify", "/readyz", "results"),
    "infinity": RequestShape("infinity", "/classify", "/health", "data"),
}


def shape_named(name: str) -> RequestShape:
    try:
        return SHAPES[name]
    except KeyError:
        raise ValueError(f"unknown request shape {name!r}; known: {', '.join(SHAPES)}") from None


def build_bodies(
    shape: RequestShape, scenarios: list[str], texts: list[str], texts_per_request: int, seed: int = 0
) -> list[tuple[str, bytes]]:
    """Pre-encoded JSON bodies; scenarios alternate so that every scenario gets the same share."""
    if not texts:
        raise ValueError("no texts to send")
    rng = random.Random(seed)
    bodies = []
    for i in range(BODY_POOL):
        scenario = scenarios[i % len(scenarios)]
        chosen = [rng.choice(texts) for _ in range(texts_per_request)]
        bodies.append((scenario, json.dumps(shape.body(scenario, chosen)).encode()))
    return bodies


DEFAULT_WEIGHTS = "one=3,batch=1"


def parse_weights(spec: str) -> dict[str, int]:
    """'one=3,batch=1' -> {'one': 3, 'batch': 1}; unknown names or negative weights raise ValueError."""
    weights = {"one": 0, "batch": 0}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in weights:
            raise ValueError(f"expected one=N,batch=M, got {part!r} in {spec!r}")
        try:
            weights[name] = int(value)
        except ValueError as exc:
            raise ValueError(f"{name}={value!r} is not an integer") from exc
        if weights[name] < 0:
            raise ValueError(f"{name} must be >= 0, got {weights[name]}")
    if not any(weights.values()):
        raise ValueError(f"at least one weight must be positive, got {spec!r}")
    return weights


def results_of(payload: str | bytes, n_texts: int, results_key: str = "results") -> tuple[Any, str | None]:
    """(the answer, None) when a 200's body is a JSON object holding one result per text under
    results_key; (None, what is wrong) otherwise. The check every load generator makes of an answer."""
    try:
        answer = json.loads(payload)
    except ValueError:
        return None, "invalid JSON"
    results = answer.get(results_key) if isinstance(answer, dict) else None
    if not isinstance(results, list) or len(results) != n_texts:
        return None, "wrong result count"
    return answer, None


def answer_problem(text: str, body: dict[str, Any]) -> str | None:
    """Why a 200 to POST /v1/classify is not the answer to `body` (None when it is): results_of's check,
    then another scenario, no integer version, or a result that is not a non-empty list of {label, score}."""
    answer, problem = results_of(text, len(body["texts"]))
    if problem is not None:
        return f"{problem}: {text[:100]!r}"
    results = answer["results"]
    if answer.get("scenario") != body["scenario"] or not isinstance(answer.get("version"), int):
        return (
            f"scenario/version {answer.get('scenario')!r}/{answer.get('version')!r} for {body['scenario']!r}"
        )
    for row in results:
        if not (
            isinstance(row, list)
            and row
            and all(isinstance(r, dict) and {"label", "score"} <= set(r) for r in row)
        ):
            return f"a result is not a list of {{label, score}}: {str(row)[:100]}"
    return None
