"""Stacked adapter and head tables for the multi-adapter graph, from lora.npz / head.npz. numpy only.

Serving builds these tables without torch: one row per hosted LoRA scenario, in the order of the
`adapter_index` values it feeds. Array names follow docs/artifacts.md:

- lora.npz  ``<proj>.A [n, r, in]``, ``<proj>.B [n, out, r]``, ``<proj>.scaling [n]``, ``<proj>.layers [n]``
  over the n layers that carry the projection (missing layers get zero blocks)
- head.npz  roberta: ``dense_weight [H, H]``, ``dense_bias [H]``, ``out_proj_weight [C, H]``,
  ``out_proj_bias [C]``; linear: ``weight [C, H]``, ``bias [C]``

Graph inputs (the tables) are the same names prefixed ``lora.`` / ``head.`` and stacked on a new
leading adapter axis; LoRA scaling is folded into B, ranks are zero-padded to the graph's rank
(a zero block adds exactly nothing), label rows are zero-padded to the widest scenario and masked
by ``head.num_labels``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import AdapterMismatchError
from .heads import FIRST_TOKEN_MLP, HEAD_ARRAYS
from .layout import LORA_FILE, graph_rank

if TYPE_CHECKING:
    from .repository import ModelRepository

# Arrays whose first axis is the label axis: padded to the widest scenario.
_LABEL_AXIS = {"out_proj_weight", "out_proj_bias", "weight", "bias"}
NUM_LABELS_INPUT = "head.num_labels"
ADAPTER_INDEX_INPUT = "adapter_index"


@dataclass(frozen=True)
class GraphSpec:
    """What a multi-adapter graph was built for; every adapter fed to it must match. Stored in base.json."""

    base_key: str
    architecture: str
    head_kind: str
    num_layers: int
    hidden_size: int
    rank: int
    # projection path inside a layer (e.g. "attention.self.query") -> (in_features, out_features)
    projections: dict[str, tuple[int, int]] = field(default_factory=dict)
    token_inputs: tuple[str, ...] = ("input_ids", "attention_mask")

    def to_json(self) -> dict[str, Any]:
        return {
            "base_key": self.base_key,
            "architecture": self.architecture,
            "head_kind": self.head_kind,
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "rank": self.rank,
            "projections": {k: list(v) for k, v in self.projections.items()},
            "token_inputs": list(self.token_inputs),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> GraphSpec:
        try:
            return cls(
                base_key=str(raw["base_key"]),
                architecture=str(raw["architecture"]),
                head_kind=str(raw["head_kind"]),
                num_layers=int(raw["num_layers"]),
                hidden_size=int(raw["hidden_size"]),
                rank=int(raw["rank"]),
                projections={str(k): (int(v[0]), int(v[1])) for k, v in raw["projections"].items()},
                token_inputs=tuple(raw["token_inputs"]),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise AdapterMismatchError(
                f"multi-adapter graph spec is incomplete or malformed: {exc!r}"
            ) from exc

    def input_names(self) -> list[str]:
        """Graph inputs in order: tokens, adapter_index, LoRA tables, head tables."""
        names = [*self.token_inputs, ADAPTER_INDEX_INPUT]
        for proj in self.projections:
            names += [f"lora.{proj}.A", f"lora.{proj}.B"]
        names += [f"head.{n}" for n in HEAD_ARRAYS[self.head_kind]] + [NUM_LABELS_INPUT]
        return names


@dataclass(frozen=True)
class AdapterEntry:
    """One LoRA scenario version as serving reads it from the repository."""

    name: str  # e.g. "reviews v3", for messages
    base_key: str
    head_kind: str
    lora: Mapping[str, np.ndarray]
    head: Mapping[str, np.ndarray]


def adapted_projections(entry: AdapterEntry) -> list[str]:
    """The projection paths (e.g. `attention.self.query`) an adapter's lora.npz holds arrays for."""
    return sorted({k.rsplit(".", 1)[0] for k in entry.lora})


def lora_rank(lora: Mapping[str, np.ndarray]) -> int:
    """An adapter's LoRA rank: the widest `<proj>.A` [layers, r, in] of its lora.npz (0: it holds none)."""
    return max(
        (int(np.shape(v)[1]) for k, v in lora.items() if k.endswith(".A") and np.ndim(v) == 3), default=0
    )


def version_lora_rank(version_folder: Path) -> int | None:
    """The LoRA rank of the lora.npz in a version folder (lora_rank); None when it has none."""
    path = version_folder / LORA_FILE
    if not path.is_file():
        return None
    with np.load(path) as lora:
        return lora_rank(dict(lora))


def published_graphs(repository: ModelRepository, key: str) -> list[str]:
    """The multi-adapter graph folders published for a base (their base.json written), by rank then name."""
    names = [n for n in repository.base_folders(key) if graph_rank(n) is not None]
    return sorted((n for n in names if repository.has_base(key, n)), key=lambda n: (graph_rank(n), n))


def check_adapter(spec: GraphSpec, entry: AdapterEntry) -> int:
    """Raise AdapterMismatchError naming what differs; return the adapter's number of labels."""
    who = entry.name
    if entry.base_key != spec.base_key:
        raise AdapterMismatchError(
            f"adapter {who}: trained on base {entry.base_key!r}, "
            f"the multi-adapter graph is for {spec.base_key!r}"
        )
    if entry.head_kind != spec.head_kind:
        raise AdapterMismatchError(
            f"adapter {who}: head kind {entry.head_kind!r}, the graph takes {spec.head_kind!r}"
        )
    projections = adapted_projections(entry)
    # A subset of the graph's projections is fine: the others get zero blocks, which add nothing.
    outside = [p for p in projections if p not in spec.projections]
    if outside or not projections:
        raise AdapterMismatchError(
            f"adapter {who}: LoRA targets {projections}, the graph adapts {sorted(spec.projections)}"
            + (f" (not {outside})" if outside else "")
        )
    for proj in projections:
        d_in, d_out = spec.projections[proj]
        for part in ("A", "B", "scaling", "layers"):
            if f"{proj}.{part}" not in entry.lora:
                raise AdapterMismatchError(f"adapter {who}: lora.npz lacks array {proj}.{part!r}")
        a, b = entry.lora[f"{proj}.A"], entry.lora[f"{proj}.B"]
        layers = np.asarray(entry.lora[f"{proj}.layers"]).reshape(-1).tolist()
        # A subset of layers is fine (the others get a zero block, which adds nothing).
        if len(set(layers)) != len(layers) or not all(0 <= x < spec.num_layers for x in layers):
            raise AdapterMismatchError(
                f"adapter {who}: {proj} is adapted in layers {layers}, the graph has layers "
                f"0..{spec.num_layers - 1}"
            )
        if a.ndim != 3 or b.ndim != 3 or a.shape[0] != len(layers) or b.shape[0] != len(layers):
            raise AdapterMismatchError(
                f"adapter {who}: {proj}.A {a.shape} / {proj}.B {b.shape} "
                "are not [layers, r, in] / [layers, out, r]"
            )
        scaling = np.asarray(entry.lora[f"{proj}.scaling"])
        if scaling.size != len(layers):  # one scale a layer: a short array was broadcast to every layer
            raise AdapterMismatchError(
                f"adapter {who}: {proj}.scaling holds {scaling.size} value(s) for {len(layers)} layers"
            )
        rank = a.shape[1]
        if a.shape[2] != d_in or b.shape[1] != d_out or b.shape[2] != rank:
            raise AdapterMismatchError(
                f"adapter {who}: {proj}.A {a.shape} / {proj}.B {b.shape} do not fit the graph's "
                f"{proj} ({d_in} in, {d_out} out)"
            )
        if rank > spec.rank:
            raise AdapterMismatchError(
                f"adapter {who}: LoRA rank {rank} on {proj} exceeds the graph's table rank {spec.rank}; "
                f"serve it from a multi-adapter graph of rank >= {rank}: set the serving setting "
                f"lora_table_rank to that rank (LABELWISE_LORA_TABLE_RANK; publishing a LoRA version of "
                f"rank {rank} exports multi-lora-r{rank}-<precision>), or retrain with lora_r <= {spec.rank}"
            )
    missing = [n for n in HEAD_ARRAYS[spec.head_kind] if n not in entry.head]
    if missing:
        raise AdapterMismatchError(f"adapter {who}: head.npz lacks arrays {missing}")
    h = spec.hidden_size
    head = entry.head
    if spec.head_kind in FIRST_TOKEN_MLP:
        if head["dense_weight"].shape != (h, h) or head["dense_bias"].shape != (h,):
            raise AdapterMismatchError(
                f"adapter {who}: head dense is {head['dense_weight'].shape}, expected ({h}, {h})"
            )
        out_w, out_b = head["out_proj_weight"], head["out_proj_bias"]
    else:
        out_w, out_b = head["weight"], head["bias"]
    if out_w.ndim != 2 or out_w.shape[1] != h or out_b.shape != (out_w.shape[0],):
        raise AdapterMismatchError(
            f"adapter {who}: head output weight {out_w.shape} / bias {out_b.shape} do not fit hidden size {h}"
        )
    return int(out_w.shape[0])


def build_tables(
    spec: GraphSpec, entries: Sequence[AdapterEntry], dtype: Any = np.float32
) -> dict[str, np.ndarray]:
    """Every table input of the graph, row i = entries[i]. Raises AdapterMismatchError before building."""
    if not entries:
        raise AdapterMismatchError("at least one adapter is needed to build the tables")
    num_labels = [check_adapter(spec, e) for e in entries]
    width = max(num_labels)
    n, r = len(entries), spec.rank
    tables: dict[str, np.ndarray] = {}
    for proj, (d_in, d_out) in spec.projections.items():
        a_tab = np.zeros((n, spec.num_layers, r, d_in), dtype=dtype)
        b_tab = np.zeros((n, spec.num_layers, d_out, r), dtype=dtype)
        for i, e in enumerate(entries):
            if f"{proj}.A" not in e.lora:
                continue  # a projection this adapter leaves alone: zero blocks
            a = np.asarray(e.lora[f"{proj}.A"], dtype=np.float32)
            b = np.asarray(e.lora[f"{proj}.B"], dtype=np.float32)
            scaling = np.asarray(e.lora[f"{proj}.scaling"], dtype=np.float32).reshape(-1, 1, 1)
            layers = np.asarray(e.lora[f"{proj}.layers"], dtype=np.int64).reshape(-1)
            rank = a.shape[1]
            a_tab[i, layers, :rank] = a
            b_tab[i, layers, :, :rank] = b * scaling
        tables[f"lora.{proj}.A"], tables[f"lora.{proj}.B"] = a_tab, b_tab
    for name in HEAD_ARRAYS[spec.head_kind]:
        rows = [np.asarray(e.head[name], dtype=np.float32) for e in entries]
        if name in _LABEL_AXIS:
            rows = [np.pad(x, [(0, width - x.shape[0])] + [(0, 0)] * (x.ndim - 1)) for x in rows]
        tables[f"head.{name}"] = np.stack(rows).astype(dtype)
    tables[NUM_LABELS_INPUT] = np.asarray(num_labels, dtype=np.int64)
    return tables


def table_bytes(tables: Mapping[str, np.ndarray]) -> int:
    return int(sum(t.nbytes for t in tables.values()))
