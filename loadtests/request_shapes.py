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
