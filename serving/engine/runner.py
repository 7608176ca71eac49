"""Run a batch: (scenario version, text) rows -> tokenize once per group -> ONNX Runtime -> probabilities.

Rows that can share a forward pass form a group (`LoadedScenario.group_key`): a full or merged-LoRA
version runs its own graph, frozen scenarios on one base share one base-encoder pass and then each
row's numpy head, and shared-LoRA scenarios on one base share one multi-adapter pass. The batching
policy (`serving.batching.BatchPolicy`) cuts each group into passes under the token budget.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..batching import BatchPolicy
from ..errors import ScoresNotFiniteError
from ..optional import require
from .graph_rewrite import cpu_disabled_optimizers, cpu_session_path
from .providers import check_session_providers, device_of

if TYPE_CHECKING:
    from .loader import LoadedScenario


@dataclass(frozen=True)
class Row:
    """One text of one request, bound to the scenario version that was serving when it arrived."""

    scenario: LoadedScenario
    text: str
    # Token ids (truncated, unpadded) and whether they were cut, when the caller tokenized already (a
    # replica does, on arrival, so that the batch slots can group rows by length); None: `run` does.
    ids: list[int] | None = field(default=None, compare=False, repr=False)
    truncated: bool = False


@dataclass(frozen=True)
class RowResult:
    """Probabilities (and the logits they came from) in the scenario's label order, whether the text was
    truncated, and how many tokens it took (special tokens included, after truncation)."""

    probs: np.ndarray
    truncated: bool
    logits: np.ndarray | None = None
    tokens: int = 0


@dataclass(frozen=True)
class BatchStats:
    """What one forward pass cost, for the metrics."""

    rows: int
    tokens: int
    seconds: float
    group: str
    scenarios: int = 1  # distinct scenario versions whose rows shared this pass


@dataclass(frozen=True)
class BatchOutcome:
    """One result (or the exception that failed it) per row, in order, and what each pass cost."""

    results: list[RowResult | Exception]
    passes: list[BatchStats] = field(default_factory=list)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def session_setup(ort: Any, providers: list[str], intra_op_threads: int) -> tuple[Any, dict[str, Any]]:
    """The SessionOptions and the extra InferenceSession arguments every serving session is built with."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    # No spin-waiting between passes: the replica's own event loop and tokenizer run on the same
    # cores as the ORT pool, and spinning pool threads steal them. Measured on the 2-core box with
    # the int8 MiniLM graph under load: 2 spinning threads gave 54 seq/s at batch 1 and 115 at
    # batch 8, against 100 and 193 without spinning (1 thread: 95 and 182).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # One request stream per replica: inter-op parallelism only adds thread contention.
    options.inter_op_num_threads = 1
    extra: dict[str, Any] = {}
    if providers[0] == "CPUExecutionProvider":
        # No CPU memory arena: the pass workers run one session from several threads at once, and on
        # the shared arena they slowed each other down. Measured on the 2-core box (int8 MiniLM, passes
        # of 8 sorted rows, 2 threads, one session): 20.4-21.8 thousand tokens/s in most 4 s runs with
        # the arena against 23.8-24.4 without it, and 23.3-24.6 with a session per thread; one thread
        # alone ran the same either way (12.0-12.8 against 12.1-12.7).
        options.enable_cpu_mem_arena = False
        # Layer norms stay unfused on CPU (graph_rewrite.py): ORT must not fuse them again.
        if disabled := cpu_disabled_optimizers():
            extra["disabled_optimizers"] = disabled
    return options, extra


class OnnxGraph:
    """One ONNX Runtime session, checked to run on the providers asked for; feeds only declared inputs.

    Every pass goes through IO binding: the batch's inputs are copied to the session's device once,
    the output is allocated there and fetched once. On CUDA, large constant inputs (the multi-adapter
    tables, rebuilt only when a scenario is loaded) are copied once and kept on the device. The same
    path runs on the CPU provider, where binding a numpy input copies nothing.
    """

    # Inputs at least this large that the caller passes again unchanged (the same array object) stay
    # on the device between passes; token ids and the adapter index are smaller and new every pass.
    _KEEP_ON_DEVICE_BYTES = 64 * 1024
    _KEPT_MAX = 256

    def __init__(
        self, path: Path, providers: list[str], intra_op_threads: int, io_binding: bool = True
    ) -> None:
        ort = require("onnxruntime")
        options, extra = session_setup(ort, providers, intra_op_threads)
        self.path = path
        # On the CPU provider, from the graph with SkipLayerNormalization unfused (graph_rewrite.py).
        on_cpu = providers[0] == "CPUExecutionProvider"
        with cpu_session_path(path) if on_cpu else contextlib.nullcontext((str(path), 0)) as loaded:
            source, self.unfused_layer_norms = loaded
            self.session = ort.InferenceSession(source, sess_options=options, providers=providers, **extra)
        # ORT falls back to the CPU provider with a warning when CUDA cannot start: refuse instead.
        self.providers: list[str] = list(self.session.get_providers())
        check_session_providers(self.providers, providers, f"{path.parent.name}/{path.name}")
        self.device = device_of(self.providers)
        self.io_binding = io_binding
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_name = self.session.get_outputs()[0].name
        self._ort = ort
        self._kept: dict[int, tuple[Any, Any]] = {}  # id(array) -> (weak ref to array, OrtValue)
        self._kept_lock = threading.Lock()

    @property
    def provider(self) -> str:
        """The provider the session runs on first (where its kernels run when they can)."""
        return self.providers[0]

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, extra: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """The first output; `extra` feeds further inputs (the multi-adapter graph's tables and index)."""
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, **(extra or {})}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        unknown = [n for n in self.input_names if n not in feeds]
        if unknown:
            raise ValueError(f"{self.path}: graph wants inputs {unknown} that serving cannot provide")
        if not self.io_binding:
            out = self.session.run([self.output_name], {n: feeds[n] for n in self.input_names})[0]
            return np.asarray(out, dtype=np.float32)
        # One binding per pass: concurrent batches (max_concurrent_batches > 1) never share one.
        binding = self.session.io_binding()
        for name in self.input_names:
            value = np.ascontiguousarray(feeds[name])
            kept = self._on_device(value) if self.device != "cpu" else None
            if kept is not None:
                binding.bind_ortvalue_input(name, kept)
            else:
                binding.bind_cpu_input(name, value)
        binding.bind_output(self.output_name, self.device)
        if self.device != "cpu":
            binding.synchronize_inputs()
        self.session.run_with_iobinding(binding)
        out = binding.copy_outputs_to_cpu()[0]
        # An fp16 graph exported with fp16 outputs: softmax and scores are computed in fp32.
        return np.asarray(out, dtype=np.float32)

    def _on_device(self, value: np.ndarray) -> Any | None:
        """A device copy of a large input passed again unchanged, made on its first pass; else None."""
        if value.nbytes < self._KEEP_ON_DEVICE_BYTES:
            return None
        with self._kept_lock:
            hit = self._kept.get(id(value))
            if hit is not None and hit[0]() is value:
                return hit[1]
            # Forget copies of arrays that are gone (a table swapped out by a load or a promote).
            self._kept = {k: v for k, v in self._kept.items() if v[0]() is not None}
            if len(self._kept) >= self._KEPT_MAX:
                return None
            device_value = self._ort.OrtValue.ortvalue_from_numpy(value, self.device, 0)
            self._kept[id(value)] = (weakref.ref(value), device_value)
            return device_value


class OnnxEngine:
    """Runs mixed-scenario batches: each group of rows that can share a pass, in token-budgeted passes."""

    def __init__(self, policy: BatchPolicy | None = None) -> None:
        self.policy = policy or BatchPolicy()

    def classify(self, rows: list[Row]) -> list[RowResult | Exception]:
        """One result per row, in order (see `run`)."""
        return self.run(rows).results

    def run(self, rows: list[Row]) -> BatchOutcome:
        """One result per row, in order; a row that failed carries its exception instead. A pass that
        fails fails its own rows (not those of the group's other passes), a frozen head that fails only
        its scenario's rows, so one broken scenario never fails the rows of another that shared the
        batch."""
        results: list[RowResult | Exception | None] = [None] * len(rows)
        passes: list[BatchStats] = []
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            groups[row.scenario.group_key].append(i)
        for key, indices in groups.items():
            try:
                first = rows[indices[0]].scenario
                ids, truncated = _group_ids([rows[i] for i in indices])
                scenarios = [rows[i].scenario for i in indices]
                logits = self._forward(first, ids, scenarios, key[0], passes)
                for pos, i in enumerate(indices):
                    row_logits = logits[pos]
                    if isinstance(row_logits, Exception):
                        results[i] = row_logits
                        continue
                    # The logits, not the probabilities: one -inf logit still gives finite ones, and
                    # raw_scores would answer it as null where the schema promises a number.
                    results[i] = (
                        RowResult(softmax(row_logits), truncated[pos], row_logits, len(ids[pos]))
                        if np.isfinite(row_logits).all()
                        else _not_finite(rows[i].scenario, row_logits)
                    )
            except Exception as exc:  # handed to each row of the group, logged by the batcher
                exc.add_note(_named([rows[i].scenario for i in indices]))
                for i in indices:
                    results[i] = exc
        return BatchOutcome(results, passes)  # type: ignore[arg-type]

    def _forward(
        self,
        first: LoadedScenario,
        ids: list[list[int]],
        scenarios: list[LoadedScenario],
        group: str,
        passes: list[BatchStats],
    ) -> list[np.ndarray | Exception]:
        """Per row, its logits or the exception that failed its pass."""
        run_pass = _PASSES[group]
        out: list[np.ndarray | Exception | None] = [None] * len(ids)
        for chunk in self.policy.micro_batches([len(row) for row in ids]):
            input_ids, mask = first.tokenizer.pad([ids[i] for i in chunk])
            start = time.perf_counter()
            chunk_scenarios = [scenarios[i] for i in chunk]
            try:
                logits = run_pass(first, input_ids, mask, chunk_scenarios)
            except Exception as exc:  # this pass's rows only: the group's other passes ran, or may run
                exc.add_note(_named(chunk_scenarios))
                for i in chunk:
                    out[i] = exc
                continue
            for pos, i in enumerate(chunk):
                out[i] = logits[pos]
            mixed = len({id(s) for s in chunk_scenarios})  # a version published again under its number: 2
            passes.append(BatchStats(len(chunk), int(mask.size), time.perf_counter() - start, group, mixed))
        return out  # type: ignore[return-value]  # rows of different scenarios differ in width


def _named(scenarios: list[LoadedScenario]) -> str:
    """The versions a failed pass or group ran, for the log line that reports it (the batcher's): ORT's own
    message names a graph node, not which of many scenarios broke."""
    names = sorted({f"{s.name} v{s.version}" for s in scenarios})
    return f"scenario{'s' if len(names) > 1 else ''} {', '.join(names)}"


def _not_finite(scenario: LoadedScenario, logits: np.ndarray) -> ScoresNotFiniteError:
    return ScoresNotFiniteError(
        f"scenario {scenario.name!r} version {scenario.version} gave non-finite scores ({logits.tolist()}): "
        "its graph or weights are broken"
    )


def _group_ids(rows: list[Row]) -> tuple[list[list[int]], list[bool]]:
    """Token ids and truncation flags of a group's rows: as given where every row came tokenized, else
    each row cleaned as its own version was trained, then the group tokenized in one call."""
    if all(row.ids is not None for row in rows):
        return [row.ids for row in rows], [row.truncated for row in rows]  # type: ignore[misc]
    texts = [row.scenario.tokenizer.normalize(row.text) for row in rows]
    return rows[0].scenario.tokenizer.encode_ids(texts, normalized=True)


def _graph_pass(
    first: LoadedScenario, input_ids: np.ndarray, mask: np.ndarray, _scenarios: list[LoadedScenario]
) -> list[np.ndarray]:
    """A scenario's own graph (full, or LoRA merged): logits directly."""
    return list(first.graph.run(input_ids, mask))  # type: ignore[union-attr]


def _shared_base_pass(
    first: LoadedScenario, input_ids: np.ndarray, mask: np.ndarray, scenarios: list[LoadedScenario]
) -> list[np.ndarray | Exception]:
    """One base-encoder pass for rows of every frozen scenario, then each row's own numpy head."""
    features = first.base_graph.run(input_ids, mask)  # type: ignore[union-attr]
    out: list[np.ndarray | Exception | None] = [None] * len(scenarios)
    by_scenario: dict[int, list[int]] = defaultdict(list)
    for pos, scenario in enumerate(scenarios):
        by_scenario[id(scenario)].append(pos)
    for positions in by_scenario.values():  # rows of one scenario in one matmul
        try:
            logits = scenarios[positions[0]].head(features[positions])  # type: ignore[misc]
        except Exception as exc:  # a bad head fails its own rows, not the pass
            exc.add_note(_named([scenarios[positions[0]]]) + "'s head")
            logits = [exc] * len(positions)
        for pos, row_logits in zip(positions, logits, strict=True):
            out[pos] = row_logits
    return out  # type: ignore[return-value]


def _shared_lora_pass(
    first: LoadedScenario, input_ids: np.ndarray, mask: np.ndarray, scenarios: list[LoadedScenario]
) -> list[np.ndarray]:
    """LoRA rows of every scenario on one base in one multi-adapter run, each with its own adapter."""
    rows = [((s.name, s.version), s.adapter) for s in scenarios]
    logits = first.shared.run(input_ids, mask, rows)  # type: ignore[union-attr,arg-type]
    # Columns past a row's label count are the -inf padding of wider scenarios: never scored.
    return [logits[pos, : len(s.labels)] for pos, s in enumerate(scenarios)]


# group kind (LoadedScenario.group_key[0]) -> how one pass of that group runs
_PASSES = {"graph": _graph_pass, "base": _shared_base_pass, "lora": _shared_lora_pass}


__all__ = [
    "BatchOutcome",
    "BatchStats",
    "OnnxEngine",
    "OnnxGraph",
    "Row",
    "RowResult",
    "session_setup",
    "softmax",
]
