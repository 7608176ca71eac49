"""OnnxEngine: a batch of (scenario, text) rows -> tokenize once per group -> infer -> probabilities."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._scenario import LoadedScenario


@dataclass(frozen=True)
class Row:
    """One text of one request, bound to the scenario version that was serving when it arrived."""

    scenario: LoadedScenario
    text: str


@dataclass(frozen=True)
class RowResult:
    """Probabilities in the scenario's label order, and whether the text was truncated."""

    probs: np.ndarray
    truncated: bool


@dataclass(frozen=True)
class BatchStats:
    """What one forward pass cost, for the metrics."""

    rows: int
    tokens: int
    seconds: float
    group: str


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class OnnxEngine:
    """Runs mixed-scenario batches: frozen rows share one base-encoder pass, others their own graph."""

    def __init__(self, max_batch_tokens: int, on_pass: Callable[[BatchStats], None] | None = None) -> None:
        self.max_batch_tokens = max_batch_tokens
        self._on_pass = on_pass

    def classify(self, rows: list[Row]) -> list[RowResult]:
        results: list[RowResult | None] = [None] * len(rows)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            groups[row.scenario.group_key].append(i)
        for key, indices in groups.items():
            first = rows[indices[0]].scenario
            ids, truncated = first.tokenizer.encode_ids([rows[i].text for i in indices])
            logits = self._forward(first, ids, [rows[i].scenario for i in indices], key[0])
            for pos, i in enumerate(indices):
                results[i] = RowResult(softmax(logits[pos]), truncated[pos])
        return results  # type: ignore[return-value]

    def _forward(
        self, first: LoadedScenario, ids: list[list[int]], scenarios: list[LoadedScenario], group: str
    ) -> list[np.ndarray]:
        # Sorting by length keeps padding small; the token budget splits the group into micro-batches.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out: list[np.ndarray | None] = [None] * len(ids)
        for chunk in self._chunks(order, ids):
            input_ids, mask = first.tokenizer.pad([ids[i] for i in chunk])
            start = time.perf_counter()
            if first.head is not None:
                features = first.base_graph.run(input_ids, mask)  # type: ignore[union-attr]
                # Each row through its own scenario's head; rows of one scenario in one matmul.
                by_scenario: dict[int, list[int]] = defaultdict(list)
                for pos, i in enumerate(chunk):
                    by_scenario[id(scenarios[i])].append(pos)
                for positions in by_scenario.values():
                    head = scenarios[chunk[positions[0]]].head
                    logits = head(features[positions])  # type: ignore[misc]
                    for pos, row_logits in zip(positions, logits, strict=True):
                        out[chunk[pos]] = row_logits
            else:
                logits = first.graph.run(input_ids, mask)  # type: ignore[union-attr]
                for pos, i in enumerate(chunk):
                    out[i] = logits[pos]
            if self._on_pass is not None:
                self._on_pass(BatchStats(len(chunk), int(mask.size), time.perf_counter() - start, group))
        return out  # type: ignore[return-value]  # rows of different scenarios differ in width

    def _chunks(self, order: list[int], ids: list[list[int]]) -> list[list[int]]:
        chunks: list[list[int]] = []
        current: list[int] = []
        for i in order:
            # Sorted ascending, so the padded width of the chunk is this row's length.
            if current and (len(current) + 1) * len(ids[i]) > self.max_batch_tokens:
                chunks.append(current)
                current = []
            current.append(i)
        if current:
            chunks.append(current)
        return chunks
