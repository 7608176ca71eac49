"""LoRA scenarios on one base share one multi-adapter graph (`lora_mode: shared`) and one forward pass.

A replica opens the graph once per (base key, table rank, precision) and keeps an immutable
`AdapterTable`: the stacked adapter and head tensors the graph takes as inputs, one row per hosted
scenario. Load and promote build a new table and swap one reference, so a pass reads one consistent
table and in-flight passes finish on the old one. Every row carries its own version's adapter: a row
whose version is not in the table it reads (bound just before a promote) gets its adapter appended
for that pass only, so nothing is dropped and no row is ever answered with another adapter's weights.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model_repository import (
    ADAPTER_INDEX_INPUT,
    NUM_LABELS_INPUT,
    AdapterEntry,
    GraphSpec,
    ModelRepository,
    build_tables,
    layout,
)

from ..errors import ModelLoadError
from .runner import OnnxGraph

logger = logging.getLogger("labelwise.serving")

_ORT_FLOAT = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


AdapterKey = tuple[str, int]  # (scenario, version)


@dataclass(frozen=True)
class AdapterTable:
    """The graph's table inputs, row i = one scenario version; never mutated once built."""

    tables: Mapping[str, np.ndarray]
    row_of: Mapping[AdapterKey, int] = field(default_factory=dict)
    # entries[i]: the adapter in row i (a version published again under its number has the same key and
    # another adapter)
    entries: Sequence[AdapterEntry] = ()

    def row_holding(self, key: AdapterKey, entry: AdapterEntry) -> int | None:
        """The row of `key` when it holds `entry` itself; None when the table has no such row."""
        i = self.row_of.get(key)
        return i if i is not None and self.entries[i] is entry else None

    @property
    def rows(self) -> int:
        return len(self.row_of)

    @property
    def nbytes(self) -> int:
        return int(sum(t.nbytes for t in self.tables.values()))


def _concat_tables(
    first: Mapping[str, np.ndarray], second: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Rows of second after rows of first; label axes (the one after the adapter axis) padded to the wider."""
    out = {}
    for name, a in first.items():
        b = second[name]
        if a.ndim >= 2 and a.shape[1:] != b.shape[1:] and name.startswith("head."):
            width = max(a.shape[1], b.shape[1])
            a = np.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2))
            b = np.pad(b, [(0, 0), (0, width - b.shape[1])] + [(0, 0)] * (b.ndim - 2))
        out[name] = np.concatenate([a, b])
    return out


class SharedAdapterGraph:
    """One multi-adapter session and the table its passes read; `install` swaps the table atomically."""

    def __init__(
        self, path: Path, spec: GraphSpec, folder: str, providers: list[str], intra_op_threads: int
    ) -> None:
        self.graph = OnnxGraph(path, providers, intra_op_threads)
        self.spec = spec
        self.folder = folder  # e.g. multi-lora-r8-fp32, for messages and metrics
        types = {i.name: i.type for i in self.graph.session.get_inputs()}
        # An fp16 graph (GPU) takes fp16 tables; the phase-1 export writes fp32 and int8 (fp32 tables).
        self.table_dtype = _ORT_FLOAT.get(types.get(f"lora.{next(iter(spec.projections))}.A", ""), np.float32)
        self._entries: dict[str, tuple[int, AdapterEntry]] = {}
        self._lock = threading.Lock()  # writers only; a pass reads self.table once, without it
        self.table: AdapterTable | None = None
        # Dropped from its cache with no row left: takes no new row (that would be a second session for
        # the base once the cache opens it again); rows bound to it still run, with their own adapters.
        self.released = False

    def _build(self, entries: Sequence[tuple[AdapterKey, AdapterEntry]]) -> AdapterTable:
        tables = build_tables(self.spec, [e for _k, e in entries], dtype=self.table_dtype)
        row_of = {key: i for i, (key, _e) in enumerate(entries)}
        return AdapterTable(tables, row_of, [e for _k, e in entries])

    def install(
        self,
        name: str,
        version: int,
        entry: AdapterEntry,
        check: Callable[[AdapterTable, int], None] | None = None,
    ) -> AdapterTable:
        """Put (name, version) in the row of name, check the new table, then swap it in; return it.

        If check raises, the table in service is untouched.
        """
        with self._lock:
            if self.released:
                raise ModelLoadError(
                    f"{entry.name}: the multi-adapter graph {self.folder} was released (its last scenario "
                    "left) while this version joined it; loading it again opens the graph again"
                )
            entries = {**self._entries, name: (version, entry)}
            ordered = [((n, v), e) for n, (v, e) in sorted(entries.items())]
            table = self._build(ordered)
            if check is not None:
                check(table, table.row_of[(name, version)])
            self._entries = entries
            self.table = table  # one reference assignment: a pass sees the old table or the new one
        return table

    def remove(self, name: str) -> None:
        """Drop a scenario's row (an unloaded scenario); rows already bound to it still run (see run)."""
        with self._lock:
            if name not in self._entries:
                return
            entries = {k: v for k, v in self._entries.items() if k != name}
            ordered = [((n, v), e) for n, (v, e) in sorted(entries.items())]
            self._entries = entries
            self.table = self._build(ordered) if ordered else None

    def release_if_empty(self) -> bool:
        """Mark the graph released when it hosts no row (checked and marked under the writers' lock, so
        no install slips in between); whether it is released."""
        with self._lock:
            self.released = self.released or not self._entries
            return self.released

    def run(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        rows: Sequence[tuple[AdapterKey, AdapterEntry]],
        table: AdapterTable | None = None,
    ) -> np.ndarray:
        """Logits [rows, widest label count] in one session call; row i uses rows[i]'s own adapter."""
        table = table if table is not None else self.table
        index: list[int] = []
        extra: dict[int, int] = {}  # id of an adapter not in the table -> its appended row
        extra_entries: list[tuple[AdapterKey, AdapterEntry]] = []
        base = table.rows if table is not None else 0
        for key, entry in rows:
            i = table.row_holding(key, entry) if table is not None else None
            if i is None:  # bound to a version the table no longer (or not yet) holds, or to another adapter
                # under its number (the version published again: a row bound to the old one keeps it)
                if id(entry) not in extra:
                    extra[id(entry)] = base + len(extra_entries)
                    extra_entries.append((key, entry))
                i = extra[id(entry)]
            index.append(i)
        if extra_entries:
            added = self._build(extra_entries).tables
            tables = _concat_tables(table.tables, added) if table is not None else added
        else:
            tables = table.tables  # type: ignore[union-attr]
        feeds = {**tables, ADAPTER_INDEX_INPUT: np.asarray(index, dtype=np.int64)}
        return self.graph.run(input_ids, attention_mask, extra=feeds)

    @property
    def hosted(self) -> dict[str, int]:
        return {name: version for name, (version, _e) in self._entries.items()}


class MultiAdapterCache:
    """Multi-adapter graphs, one per (base key, table rank, precision) and graph checksum, opened once per
    replica. A graph exported again (its folder replaced, base.json naming another sha256) is opened anew
    for the versions loaded after it; versions already on the old one keep it (as BaseEncoderCache). A graph
    whose last row leaves (`release`) leaves the cache too: an idle session is a whole base encoder."""

    def __init__(self) -> None:
        self._graphs: dict[tuple[str, str], tuple[str, SharedAdapterGraph]] = {}
        self._lock = threading.Lock()

    def get(
        self,
        repo: ModelRepository,
        key: str,
        folder: str,
        providers: list[str],
        intra_op_threads: int,
        check: Callable[[GraphSpec], object] | None = None,
    ) -> SharedAdapterGraph:
        """The graph of (key, folder), opened if need be. `check` refuses by raising, on the spec of the
        graph handed out, before any session is opened: an adapter the graph cannot take opens nothing."""
        with self._lock:
            sha = repo.base_info(key, folder)["files"][layout.MULTI_ADAPTER_FILE]["sha256"]
            cached = self._graphs.get((key, folder))
            if cached is not None and cached[0] == sha:
                if check is not None:
                    check(cached[1].spec)
            else:
                info = repo.verify_base(key, folder)  # checksums first, as for any version
                spec = GraphSpec.from_json(info["info"]["spec"])
                if check is not None:
                    check(spec)
                path = repo.base_path(key, folder) / layout.MULTI_ADAPTER_FILE
                graph = SharedAdapterGraph(path, spec, folder, providers, intra_op_threads)
                verified = info["files"][layout.MULTI_ADAPTER_FILE]["sha256"]
                self._graphs[(key, folder)] = (verified, graph)
                logger.info("opened multi-adapter graph %s/%s (rank %d)", key, folder, spec.rank)
            return self._graphs[(key, folder)][1]

    def release(self, graph: SharedAdapterGraph, name: str | None = None) -> None:
        """Drop name's row from graph (None: none); a graph left with no row leaves the cache, so its
        session is freed once no version holds it. It is not closed: a pass on it finishes, and a row
        bound to it still runs (SharedAdapterGraph.run)."""
        with self._lock:  # the cache never hands out a graph being released
            if name is not None:
                graph.remove(name)
            if not graph.release_if_empty():
                return
            for slot, (_sha, held) in list(self._graphs.items()):
                if held is graph:
                    del self._graphs[slot]
                    logger.info("released multi-adapter graph %s/%s: no scenario left on it", *slot)


def num_labels_of(table: AdapterTable, row: int) -> int:
    return int(table.tables[NUM_LABELS_INPUT][row])


__all__ = [
    "AdapterTable",
    "MultiAdapterCache",
    "SharedAdapterGraph",
    "num_labels_of",
]
