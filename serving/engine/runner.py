"""OnnxEngine: a batch of (scenario, text) rows -> tokenize once per group -> infer -> probabilities."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .loader import LoadedScenario


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
    scenarios: int = 1  # distinct scenario versions whose rows shared this pass


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class OnnxEngine:
    """Runs mixed-scenario batches: frozen rows share one base-encoder pass, others their own graph."""

    def __init__(self, max_batch_tokens: int, on_pass: Callable[[BatchStats], None] | None = None) -> None:
        self.max_batch_tokens = max_batch_tokens
        self._on_pass = on_pass

    def classify(self, rows: list[Row]) -> list[RowResult | Exception]:
        """One result per row, in order; a row that failed carries its exception instead. A pass that
        fails fails its group's rows, a frozen head that fails only its scenario's rows, so one broken
        scenario never fails the rows of another that shared the batch."""
        results: list[RowResult | Exception | None] = [None] * len(rows)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            groups[row.scenario.group_key].append(i)
        for key, indices in groups.items():
            try:
                first = rows[indices[0]].scenario
                ids, truncated = first.tokenizer.encode_ids([rows[i].text for i in indices])
                logits = self._forward(first, ids, [rows[i].scenario for i in indices], key[0])
                for pos, i in enumerate(indices):
                    row_logits = logits[pos]
                    failed = isinstance(row_logits, Exception)
                    results[i] = row_logits if failed else RowResult(softmax(row_logits), truncated[pos])
            except Exception as exc:  # handed to each row of the group, logged by the caller
                for i in indices:
                    results[i] = exc
        return results  # type: ignore[return-value]

    def _forward(
        self, first: LoadedScenario, ids: list[list[int]], scenarios: list[LoadedScenario], group: str
    ) -> list[np.ndarray]:
        # Sorting by length keeps padding small; the token budget splits the group into micro-batches.
        # Each kind of group (own graph, frozen heads on a base, LoRA on a base) is one entry in _PASSES.
        run_pass = self._PASSES[group]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out: list[np.ndarray | None] = [None] * len(ids)
        for chunk in self._chunks(order, ids):
            input_ids, mask = first.tokenizer.pad([ids[i] for i in chunk])
            start = time.perf_counter()
            chunk_scenarios = [scenarios[i] for i in chunk]
            logits = run_pass(first, input_ids, mask, chunk_scenarios)
            for pos, i in enumerate(chunk):
                out[i] = logits[pos]
            if self._on_pass is not None:
                mixed = len({(s.name, s.version) for s in chunk_scenarios})
                seconds = time.perf_counter() - start
                self._on_pass(BatchStats(len(chunk), int(mask.size), seconds, group, mixed))
        return out  # type: ignore[return-value]  # rows of different scenarios differ in width

    @staticmethod
    def _graph_pass(
        first: LoadedScenario, input_ids: np.ndarray, mask: np.ndarray, _scenarios: list[LoadedScenario]
    ) -> list[np.ndarray]:
        """A scenario's own graph (full, or LoRA merged): logits directly."""
        return list(first.graph.run(input_ids, mask))  # type: ignore[union-attr]

    @staticmethod
    def _shared_base_pass(
        first: LoadedScenario, input_ids: np.ndarray, mask: np.ndarray, scenarios: list[LoadedScenario]
    ) -> list[np.ndarray | Exception]:
        """One base-encoder pass for rows of every frozen scenario, then each row's own numpy head."""
        features = first.base_graph.run(input_ids, mask)  # type: ignore[union-attr]
        out: list[np.ndarray | None] = [None] * len(scenarios)
        by_scenario: dict[int, list[int]] = defaultdict(list)
        for pos, scenario in enumerate(scenarios):
            by_scenario[id(scenario)].append(pos)
        for positions in by_scenario.values():  # rows of one scenario in one matmul
            try:
                logits = scenarios[positions[0]].head(features[positions])  # type: ignore[misc]
            except Exception as exc:  # a bad head fails its own rows, not the pass
                logits = [exc] * len(positions)
            for pos, row_logits in zip(positions, logits, strict=True):
                out[pos] = row_logits
        return out  # type: ignore[return-value]

    @staticmethod
    def _shared_lora_pass(
        first: LoadedScenario, input_ids: np.ndarray, mask: np.ndarray, scenarios: list[LoadedScenario]
    ) -> list[np.ndarray]:
        """LoRA rows of every scenario on one base in one multi-adapter run, each with its own adapter."""
        rows = [((s.name, s.version), s.adapter) for s in scenarios]
        logits = first.shared.run(input_ids, mask, rows)  # type: ignore[union-attr,arg-type]
        # Columns past a row's label count are the -inf padding of wider scenarios: never scored.
        return [logits[pos, : len(s.labels)] for pos, s in enumerate(scenarios)]

    _PASSES = {"graph": _graph_pass, "base": _shared_base_pass, "lora": _shared_lora_pass}

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
