"""Load one published version into something that can classify: verify, open sessions, warm up.

Providers are chosen and checked in `providers.py`; the precision each replica tries is chosen here.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_repository import (
    AdapterEntry,
    AdapterMismatchError,
    GraphSpec,
    Manifest,
    ManifestError,
    ModelRepository,
    NumpyHead,
    RepositoryError,
    check_adapter,
    layout,
)
from model_repository.multi_adapter import lora_rank, published_graphs
from model_repository.repository import plain_base_folders

from ..errors import ModelLoadError
from .adapters import AdapterTable, MultiAdapterCache, SharedAdapterGraph, num_labels_of
from .providers import CPU, CUDA, available_providers, choose_providers
from .runner import OnnxGraph
from .tokenize import TextTokenizer

logger = logging.getLogger("labelwise.serving")


def precision_order(preference: str, providers: list[str]) -> list[str]:
    """Precisions to try in order: auto means fp16 on GPU, int8 on CPU, then fp32.

    fp16 asked for on a replica without the CUDA provider is refused: ONNX Runtime runs fp16 graphs
    on the CPU provider, but many times slower than int8 or fp32, which is never what was meant.
    """
    on_gpu = bool(providers) and providers[0] == CUDA
    if preference == "fp16" and not on_gpu:
        raise ModelLoadError(
            f"precision fp16 on a replica without a GPU (providers {providers}): fp16 graphs run many times "
            "slower on the CPU provider than int8 or fp32; set precision to auto, int8 or fp32, or give the "
            "replica a GPU (num_gpus > 0 with onnxruntime-gpu installed)"
        )
    if preference != "auto":
        return [preference, "fp32"] if preference != "fp32" else ["fp32"]
    order = ["fp16", "fp32"] if on_gpu else ["int8", "fp32"]
    logger.info(
        "precision auto: %s on %s (%s), falling back to fp32 for versions exported without it",
        order[0],
        providers[0] if providers else CPU,
        "GPU" if on_gpu else "CPU",
    )
    return order


@dataclass(frozen=True)
class EngineSettings:
    """What a replica decided about hardware: providers, precisions to try, threads."""

    providers: list[str]
    precisions: list[str]
    intra_op_threads: int = 0
    # merged: a LoRA version runs its own merged graph; shared: the base's multi-adapter graph
    lora_mode: str = "merged"
    lora_table_rank: int = 8


@dataclass
class LoadedScenario:
    """One version ready to serve. Immutable once built: a reload builds a new one and swaps it in."""

    name: str
    version: int
    manifest: Manifest
    tokenizer: TextTokenizer
    precision: str
    graph: OnnxGraph | None = None
    head: NumpyHead | None = None
    base_key: str | None = None
    base_folder: str = ""  # frozen: the base folder read (int8, all-int8, ...)
    base_graph: OnnxGraph | None = None
    tokenizer_sha: str = ""
    shared: SharedAdapterGraph | None = None  # lora_mode shared: the graph whose table holds our row
    adapter: AdapterEntry | None = None  # this version's own adapter and head (never another's)

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    @property
    def provider(self) -> str:
        """The execution provider this version's pass runs on (its own, base or shared graph)."""
        graph = self.graph or self.base_graph or (self.shared.graph if self.shared is not None else None)
        return graph.provider if graph is not None else ""

    @property
    def group_key(self) -> tuple:
        """Rows with the same key share one forward pass."""
        if self.shared is not None:
            return (
                "lora",
                id(self.shared),
                self.tokenizer_sha,
                self.tokenizer.max_length_tokens,
            )
        if self.head is not None:
            return (
                "base",
                self.base_key,
                self.base_folder,
                id(self.base_graph),  # a base exported again is another session: never one pass for both
                self.tokenizer_sha,
                self.tokenizer.max_length_tokens,
            )
        # The graph itself, not only (name, version): a version published again under its number loads as
        # another graph, and a row bound to the old one (just before the swap) must not run on the new one.
        return ("graph", self.name, self.version, id(self.graph))


class BaseEncoderCache:
    """Shared base encoders, one session per (key, folder) and graph checksum, opened once per replica.

    The folder is a precision (`int8`) or a variant of one (`all-int8`: see BaseEncoderRef.folders).
    The graph's sha256, the one `verify_base` just checked (never a later read of `base.json`, which a
    rebuild may have replaced meanwhile), is part of the key:
    a base exported again (docs/artifacts.md: move `_bases/<key>/int8` away and re-export) gets a new
    session for the versions loaded after it, while versions already serving keep the one they hold.
    The cache holds its sessions weakly: a base no loaded version holds any more (its scenarios removed,
    moved to another base, or the one version that opened it refused) is freed, not kept for good.
    """

    def __init__(self) -> None:
        self._graphs: dict[tuple[str, str], tuple[str, weakref.ref[OnnxGraph]]] = {}

    def get(
        self, repo: ModelRepository, key: str, folder: str, settings: EngineSettings, sha: str
    ) -> OnnxGraph:
        """The session of (key, folder) whose encoder has sha256 `sha` (verified by the caller), opened
        if need be; as MultiAdapterCache keys its graphs on the checksum verify_base returned."""
        cached = self._graphs.get((key, folder))
        graph = cached[1]() if cached is not None and cached[0] == sha else None
        if graph is None:
            path = repo.base_path(key, folder) / layout.ENCODER_FILE
            graph = OnnxGraph(path, settings.providers, settings.intra_op_threads)
            self._graphs[(key, folder)] = (sha, weakref.ref(graph))
        return graph


def load_scenario(
    repo: ModelRepository,
    name: str,
    version: int,
    settings: EngineSettings,
    bases: BaseEncoderCache,
    adapters: MultiAdapterCache | None = None,
) -> LoadedScenario:
    """Verify checksums, open the graph (or base + head), and run one warm-up row; raise ModelLoadError.

    With `lora_mode: shared` a LoRA version joins its base's multi-adapter table instead (the table
    is swapped only after the warm-up row passed); an adapter the graph cannot take is refused.
    """
    try:
        # A LoRA version runs its own graph or the multi-adapter one (verified where it is opened), never
        # the plain base encoder its manifest names: a base folder missing or being rebuilt must not
        # refuse it, nor be hashed for it (plain_base_folders: the rule repo.verify applies, too).
        manifest = repo.verify(name, version, bases=False)
        # base folder -> its base.json as verified: the session cache is keyed on the encoder's checksum in
        # it, never on a later read of base.json (a base rebuilt meanwhile would be opened unverified)
        base = manifest.base_encoder
        verified = {f: repo.verify_base(base.key, f) for f in plain_base_folders(manifest)} if base else {}
    except Exception as exc:
        raise ModelLoadError(f"{name} v{version} failed verification: {exc}") from exc
    folder = repo.version_path(name, version)
    try:
        tokenizer = TextTokenizer(
            folder / layout.TOKENIZER_DIR, manifest.max_length_tokens, manifest.text_normalization
        )
        tok_entry = manifest.files.get(layout.TOKENIZER_FILE)
        sha = tok_entry.sha256 if tok_entry else f"{name}-{version}"
        if settings.lora_mode == "shared" and manifest.strategy == "lora":
            # No merged graph is opened: a shared scenario costs its table row, not a session.
            loaded = LoadedScenario(name, version, manifest, tokenizer, precision="", tokenizer_sha=sha)
            _join_shared(repo, loaded, folder, settings, adapters or MultiAdapterCache())
        else:
            loaded = _open_model(repo, manifest, folder, settings, bases, tokenizer, verified)
            loaded.tokenizer_sha = sha
            _warm_up(loaded)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"{name} v{version} failed to load: {type(exc).__name__}: {exc}") from exc
    return loaded


def _open_model(
    repo: ModelRepository,
    manifest: Manifest,
    folder: Path,
    settings: EngineSettings,
    bases: BaseEncoderCache,
    tokenizer: TextTokenizer,
    verified: dict[str, dict],
) -> LoadedScenario:
    """The version's graph, or its head on the base encoder; `verified`: base folder -> the base.json
    load_scenario's verify_base returned (the checksums it checked)."""
    common = {
        "name": manifest.scenario,
        "version": manifest.version,
        "manifest": manifest,
        "tokenizer": tokenizer,
    }
    # Frozen scenarios share one base encoder pass; LoRA (merged) and full run their own graph.
    if manifest.strategy == "frozen" and manifest.head is not None and manifest.base_encoder is not None:
        for precision in settings.precisions:
            if precision in manifest.base_encoder.precisions:
                base_folder = manifest.base_encoder.folder(precision)
                key = manifest.base_encoder.key
                sha = _encoder_sha(verified[base_folder], f"base {key} {base_folder}")
                graph = bases.get(repo, key, base_folder, settings, sha)
                with np.load(folder / manifest.head.path) as npz:
                    head = NumpyHead(manifest.head.kind, dict(npz))  # ManifestError names what is missing
                return LoadedScenario(
                    **common,
                    # what the base folder holds: an int8 asked for may read the fp32 base (the int8 guard)
                    precision=layout.precision_of_folder(base_folder),
                    head=head,
                    base_graph=graph,
                    base_key=manifest.base_encoder.key,
                    base_folder=base_folder,
                )
    for precision in settings.precisions:
        record = manifest.export(precision)
        if record is not None and (folder / record.path).is_file():
            graph = OnnxGraph(folder / record.path, settings.providers, settings.intra_op_threads)
            return LoadedScenario(**common, precision=precision, graph=graph)
        candidate = folder / layout.graph_file(precision)
        if candidate.is_file():
            graph = OnnxGraph(candidate, settings.providers, settings.intra_op_threads)
            return LoadedScenario(**common, precision=precision, graph=graph)
    hint = ""
    if not manifest.exports:  # published with torch weights only (--export none): say how to serve it
        hint = (
            f"; it was published without an ONNX export: `labelwise export --scenario {manifest.scenario} "
            f"--version {manifest.version}` publishes its graphs as a new version"
        )
    raise ModelLoadError(
        f"{manifest.scenario} v{manifest.version}: no ONNX graph in precisions {settings.precisions} "
        f"(exports: {[e.precision for e in manifest.exports]}){hint}"
    )


def _encoder_sha(info: dict, what: str) -> str:
    """The encoder's sha256 in a base.json verify_base returned; ManifestError when it lists no encoder."""
    entry = info.get("files", {}).get(layout.ENCODER_FILE)
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        raise ManifestError(f"{what}: {layout.BASE_INFO_FILE} lists no {layout.ENCODER_FILE}")
    return entry["sha256"]


def _join_shared(
    repo: ModelRepository,
    loaded: LoadedScenario,
    folder: Path,
    settings: EngineSettings,
    adapters: MultiAdapterCache,
) -> None:
    """Check the adapter against the base's multi-adapter graph, warm up its row, swap the table in."""
    m = loaded.manifest
    who = f"{m.scenario} v{m.version}"
    entry = shared_adapter(m, folder)
    key = entry.base_key
    graph_folder = shared_graph_folder(repo, m, lora_rank(entry.lora), settings)
    n_labels = len(m.labels)

    def fits(spec: GraphSpec) -> None:
        # run by the cache on the graph's spec before it opens a session: a refused version opens none
        check_shared_adapter(spec, entry, m, graph_folder)

    try:
        shared = adapters.get(
            repo, key, graph_folder, settings.providers, settings.intra_op_threads, check=fits
        )
    except (RepositoryError, AdapterMismatchError) as exc:
        raise ModelLoadError(
            f"{who}: multi-adapter graph {key}/{graph_folder} failed verification: {exc}"
        ) from exc
    loaded.shared, loaded.adapter = shared, entry
    loaded.precision = layout.precision_of_folder(graph_folder)
    loaded.base_key = key

    def warm_up(table: AdapterTable, row: int) -> None:
        ids, mask = loaded.tokenizer.pad(loaded.tokenizer.encode_ids(["warm up"])[0])
        logits = shared.run(ids, mask, [((m.scenario, m.version), entry)], table)
        width = num_labels_of(table, row)
        if logits.shape[0] != 1 or width != n_labels or not np.all(np.isfinite(logits[0, :width])):
            raise ModelLoadError(
                f"{who}: warm-up on the multi-adapter graph gave logits of shape {logits.shape} "
                f"({width} labels in its table row, expected {n_labels}, finite)"
            )

    try:
        shared.install(m.scenario, m.version, entry, check=warm_up)
    except Exception:
        adapters.release(shared)  # a graph opened for this version alone is not kept open without it
        raise


def shared_adapter(manifest: Manifest, folder: Path) -> AdapterEntry:
    """The version's own adapter and head (lora.npz, head.npz in `folder`) as lora_mode shared feeds them;
    ModelLoadError when the version has none to feed."""
    who = f"{manifest.scenario} v{manifest.version}"
    if manifest.base_encoder is None or manifest.head is None or not (folder / layout.LORA_FILE).is_file():
        raise ModelLoadError(
            f"{who}: lora_mode shared needs base_encoder, head and lora.npz in the version "
            "(a DoRA adapter or a version exported without a head cannot share the base graph: serve it "
            "with lora_mode merged)"
        )
    with np.load(folder / layout.LORA_FILE) as lora, np.load(folder / manifest.head.path) as head:
        return AdapterEntry(who, manifest.base_encoder.key, manifest.head.kind, dict(lora), dict(head))


def check_shared_adapter(spec: GraphSpec, entry: AdapterEntry, manifest: Manifest, graph_folder: str) -> None:
    """ModelLoadError naming what the multi-adapter graph `graph_folder` (spec) cannot take in the version's
    adapter (targets, rank, layers, head), or a head whose label count is not the manifest's."""
    try:
        found = check_adapter(spec, entry)
    except AdapterMismatchError as exc:
        raise ModelLoadError(
            f"refused by the multi-adapter graph {entry.base_key}/{graph_folder}: {exc}"
        ) from exc
    if found != len(manifest.labels):
        raise ModelLoadError(
            f"{entry.name}: head.npz has {found} labels, the manifest {len(manifest.labels)}"
        )


def shared_graph_folder(
    repo: ModelRepository, manifest: Manifest, rank: int | None, settings: EngineSettings
) -> str:
    """The multi-adapter graph folder (`multi-lora-r<lora_table_rank>-<precision>`) a LoRA version of LoRA
    rank `rank` (None: not known here) joins in lora_mode shared: the first precision in order that the
    version may be served in and whose graph exists. ModelLoadError when none fits, naming the adapter's
    rank, the base's multi-adapter graphs and the setting or export that serves it."""
    assert manifest.base_encoder is not None
    key, table = manifest.base_encoder.key, settings.lora_table_rank
    tried = []
    for precision in settings.precisions:
        candidate = layout.multi_adapter_folder(table, precision)
        skip = not_for_this_version(manifest, precision)
        tried.append(f"{candidate} ({skip})" if skip else candidate)
        if skip is None and repo.has_base(key, candidate):
            if rank is None or rank <= table:
                return candidate
            break
    else:
        candidate = None
    who = f"{manifest.scenario} v{manifest.version}"
    if candidate is None:
        problem = f"no multi-adapter graph of rank {table} (lora_table_rank) for base {key!r} in {tried}"
        problem += f"; its adapter has LoRA rank {rank}" if rank else ""
    else:
        problem = (
            f"its adapter has LoRA rank {rank}, which exceeds the graph's table rank {table} "
            f"({candidate}: lora_table_rank)"
        )
    raise ModelLoadError(f"{who}: {problem}; {_shared_fix(repo, manifest, rank, settings)}")


def _shared_fix(repo: ModelRepository, manifest: Manifest, rank: int | None, settings: EngineSettings) -> str:
    """The base's multi-adapter graphs, and the setting or the export that serves a version from one."""
    assert manifest.base_encoder is not None
    key, table = manifest.base_encoder.key, settings.lora_table_rank
    existing = published_graphs(repo, key)
    usable = [  # graphs this version may be served from, in any precision
        folder
        for folder in existing
        if (layout.graph_rank(folder) or 0) >= (rank or 1)
        and not_for_this_version(manifest, layout.precision_of_folder(folder)) is None
    ]
    fits = [folder for folder in usable if layout.precision_of_folder(folder) in settings.precisions]
    # the smallest rank that holds the adapter, then the replica's precision order: the graph that rank
    # serves it from (published_graphs sorts by rank, then by name: fp32 before int8 on a CPU replica)
    fits.sort(
        key=lambda f: (layout.graph_rank(f) or 0, settings.precisions.index(layout.precision_of_folder(f)))
    )
    if fits:
        fit = layout.graph_rank(fits[0])
        fix = (
            f"set lora_table_rank: {fit} in the serving config (LABELWISE_LORA_TABLE_RANK={fit}) to serve it "
            f"from {fits[0]} (every LoRA scenario served shared then needs its base's rank-{fit} graph)"
        )
        if (rank or 1) <= table:
            # the replica's own table rank holds the adapter: only this base's graph of it is missing (and
            # the other LoRA scenarios may need exactly that table rank)
            fix += f"; or keep lora_table_rank {table} and export {_export_call(manifest, table)}"
    elif usable:  # one exists, in a precision not in the order (int8 asked for, the guard kept fp32 nodes)
        precision = layout.precision_of_folder(usable[0])
        fix = (
            f"serve it in {precision} from {usable[0]} (the serving config's `precision`; `labelwise "
            f"evaluate --precision {precision}`)"
        )
    else:
        need = max(table, rank or 0)
        fix = (
            f"export its base's rank-{need} graph (publishing or `labelwise export` of a LoRA version "
            f"exports rank max(8, lora_r); any rank: {_export_call(manifest, need)})"
        )
        if need > table:
            fix += f" and set lora_table_rank: {need}, or retrain with lora_r <= {table}"
    return (
        f"the base's multi-adapter graphs: {', '.join(existing) or 'none'}. To serve it shared, {fix}; "
        "or serve it with lora_mode merged"
    )


def _export_call(manifest: Manifest, rank: int) -> str:
    """The Python call that exports this version's base's multi-adapter graph of `rank`, as written: the
    base the version was trained on and, for a BERT pooler trained with the head, the head kind (its graph
    is the base's `-pre-pooler` one, which the plain call does not export)."""
    kind = manifest.head.kind if manifest.head is not None else None
    head = ', head_kind="bert_pooler"' if kind == "bert_pooler" else ""
    return (
        "training.multi_adapter.export_multi_adapter_base(ModelRepository(<repository>), "
        f"{manifest.base_model.id!r}, rank={rank}{head})"
    )


def not_for_this_version(manifest: Manifest, precision: str) -> str | None:
    """Why a version must not be served from the multi-adapter graph of `precision` (None: it may): it
    was not published in that precision, or its int8 export's guard kept nodes fp32 because every-MatMul
    int8 lost accuracy on its validation rows (the shared int8 graph quantises every base MatMul). As in
    merged mode, which serves only the graphs a version exported. A version that records no export at
    all is not filtered."""
    exported = {e.precision for e in manifest.exports}
    if exported and precision not in exported:
        return f"not exported in {precision}"
    record = manifest.export(precision)
    quantization = record.parity.quantization if record is not None and record.parity else None
    # `<choice> (<figures of every candidate>)`: the guard may have tried fallbacks and still published
    # every MatMul int8 (none did better), which is what the shared int8 graph runs
    if precision == "int8" and quantization and not quantization.startswith("every MatMul int8 ("):
        return "its int8 guard kept nodes fp32"
    return None


def _warm_up(loaded: LoadedScenario) -> None:
    ids, mask = loaded.tokenizer.pad(loaded.tokenizer.encode_ids(["warm up"])[0])
    if loaded.head is not None:
        logits = loaded.head(loaded.base_graph.run(ids, mask))  # type: ignore[union-attr]
    else:
        logits = loaded.graph.run(ids, mask)  # type: ignore[union-attr]
    if logits.shape != (1, len(loaded.labels)) or not np.all(np.isfinite(logits)):
        raise ModelLoadError(
            f"{loaded.name} v{loaded.version}: warm-up gave logits of shape {logits.shape}, "
            f"expected (1, {len(loaded.labels)}) finite values"
        )


__all__ = [
    "BaseEncoderCache",
    "EngineSettings",
    "LoadedScenario",
    "available_providers",
    "choose_providers",
    "load_scenario",
    "precision_order",
]
