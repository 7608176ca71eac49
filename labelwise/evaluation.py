"""`labelwise evaluate`: score a published version's torch weights, or its exported graphs as served.

    version + rows (a labeled file, or its run's test/validation split: training.evaluation_rows)
      -> torch: the published torch model (training.torch_logits), on the cleaned texts
      -> fp32 | int8 | fp16: the serving engine in this process (serving.engine.load_scenario, then
         OnnxEngine.run on the RAW texts, in serving's batches): the version's recorded normalisation,
         its tokenizer, dynamic padding, and the graph a replica runs (own graph, shared base + numpy
         head, merged or shared LoRA) -- no Ray, no HTTP
      -> metrics, confusion_matrix.png, metrics.json (training.write_evaluation)

It lives here, above training and serving, because training may not import serving.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model_repository.errors import UsageError
from model_repository.passes import CPU_MAX_BATCH_TOKENS, GPU_MAX_BATCH_TOKENS

from .errors import EvaluationError

if TYPE_CHECKING:
    from model_repository import Manifest, ModelRepository

EVAL_PRECISIONS = ("torch", "fp32", "int8", "fp16")
LORA_MODES = ("merged", "shared")
# Reading the rows (datasets), the metrics (sklearn) and the confusion matrix (matplotlib): the training
# extra, which a serving-only install (the Docker image) lacks, whatever the precision scored.
ROWS_AND_METRICS = ("datasets", "sklearn", "matplotlib")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
log = logging.getLogger(__name__)


def available_precisions(manifest: Manifest) -> list[str]:
    """What --precision can score this version in: torch, then its exported graphs' precisions."""
    found = {e.precision for e in manifest.exports}
    if manifest.base_encoder is not None:
        found |= set(manifest.base_encoder.precisions)
    return ["torch"] + [p for p in ("fp32", "int8", "fp16") if p in found]


def check_precision(manifest: Manifest, precision: str, providers: list[str]) -> None:
    """UsageError naming what is available when this version or this machine cannot score `precision`."""
    have = available_precisions(manifest)
    who = f"{manifest.scenario} v{manifest.version}"
    if precision not in EVAL_PRECISIONS:
        raise UsageError(f"--precision {precision!r}: choose one of {', '.join(EVAL_PRECISIONS)}")
    if precision not in have:
        exported = "was published without ONNX graphs" if have == ["torch"] else "has no such graph"
        raise UsageError(
            f"--precision {precision}: {who} {exported}; available: {', '.join(have)} "
            "(`labelwise export` adds precisions as a child version)"
        )
    if precision == "fp16" and CUDA not in providers:
        raise UsageError(
            f"--precision fp16 needs ONNX Runtime's {CUDA} (serving runs fp16 only on a GPU), and this "
            f"ONNX Runtime offers {providers}; available here: {', '.join(p for p in have if p != 'fp16')}"
        )


def evaluate_version(
    repository: ModelRepository,
    scenario: str,
    *,
    data: Path | None = None,
    split: str | None = None,
    ref: str | int = "latest",
    precision: str = "torch",
    lora_mode: str = "merged",
    threads: int = 0,
    max_batch_tokens: int | None = None,
    output_dir: Path | None = None,
) -> dict[str, Any]:
    """Score one version on a labeled file or its run's split, in `precision`; metrics (and the files
    written: confusion_matrix.png, metrics.json under metrics['output_dir'])."""
    from .extras import require

    require("torch") if precision == "torch" else require("onnxruntime")
    for module in ROWS_AND_METRICS:  # now: not as a traceback once the rows are read
        require(module)
    from training import evaluation_rows, torch_logits, write_evaluation
    from training.evaluate import refuse_training_record

    refuse_training_record(output_dir)  # before the version loads and its rows are scored
    if lora_mode not in LORA_MODES:
        raise UsageError(f"--lora-mode {lora_mode!r}: choose merged or shared")
    version = repository.resolve(scenario, ref)
    manifest = repository.verify(scenario, version)
    if lora_mode != "merged" and manifest.strategy != "lora" and precision != "torch":
        # as serving does: a deployment's lora_mode leaves a version of another strategy as it is
        log.warning(
            "--lora-mode %s applies to LoRA versions: %s v%d is a %s version, scored as serving runs it "
            "in any mode (metrics.json records lora_mode null)",
            lora_mode,
            scenario,
            version,
            manifest.strategy,
        )
    providers: list[str] = []
    if precision != "torch":
        from serving.engine import available_providers

        providers = available_providers()
    check_precision(manifest, precision, providers)
    rows = evaluation_rows(manifest, data, split)
    started = time.perf_counter()
    extra: dict[str, Any] = {}
    variant = ""
    if precision == "torch":
        logits = torch_logits(repository, scenario, version, rows.rows.texts)
    else:
        if rows.rows.raw is None:
            raise EvaluationError(f"{rows.source}: the raw texts were not kept; the engine needs them")
        logits, extra = engine_logits(
            repository,
            manifest,
            rows.rows.raw,
            precision,
            lora_mode=lora_mode,
            threads=threads,
            max_batch_tokens=max_batch_tokens,
        )
        variant = _variant(manifest, precision, lora_mode, extra["max_batch_tokens"])
    return write_evaluation(
        manifest,
        rows,
        logits,
        precision=precision,
        seconds=time.perf_counter() - started,
        output_dir=output_dir,
        extra=extra,
        variant=variant,
        repository_root=repository.root,
    )


def _variant(manifest: Manifest, precision: str, lora_mode: str, max_batch_tokens: int) -> str:
    """How an engine run differs from the default, for its folder's name: `shared` (a LoRA version's
    shared graph), `mbt<N>` (a pass budget other than serving's); empty when it ran as by default."""
    parts = []
    if lora_mode != "merged" and manifest.strategy == "lora":
        parts.append(lora_mode)
    if max_batch_tokens != default_max_batch_tokens(precision):
        parts.append(f"mbt{max_batch_tokens}")
    return "-".join(parts)


def default_max_batch_tokens(precision: str) -> int:
    """serving's token budget per pass on the device a precision runs on (model_repository.passes)."""
    return GPU_MAX_BATCH_TOKENS if precision == "fp16" else CPU_MAX_BATCH_TOKENS


def table_rank(repository: ModelRepository, manifest: Manifest, precision: str) -> int:
    """The table rank of the multi-adapter graph a LoRA version is scored on in lora_mode shared: serving's
    default (training.publish.SHARED_TABLE_RANK, 8) when the adapter fits it and that graph is there, else
    the smallest published graph of the precision whose rank holds the adapter's (publish exports rank
    max(8, lora_r)); else the one publish would have exported, which the engine's refusal names."""
    from model_repository import layout
    from model_repository.multi_adapter import published_graphs, version_lora_rank
    from training.publish import SHARED_TABLE_RANK

    adapter = version_lora_rank(repository.version_path(manifest.scenario, manifest.version))
    if manifest.base_encoder is None or adapter is None:
        return SHARED_TABLE_RANK  # not a shared-mode version: the engine refuses it by name
    key = manifest.base_encoder.key
    default = layout.multi_adapter_folder(SHARED_TABLE_RANK, precision)
    if adapter <= SHARED_TABLE_RANK and repository.has_base(key, default):
        return SHARED_TABLE_RANK
    graphs = [g for g in published_graphs(repository, key) if layout.precision_of_folder(g) == precision]
    fits = [rank for g in graphs if (rank := layout.graph_rank(g) or 0) >= adapter]
    return min(fits, default=max(SHARED_TABLE_RANK, adapter))


def engine_logits(
    repository: ModelRepository,
    manifest: Manifest,
    texts: list[str],
    precision: str,
    *,
    lora_mode: str = "merged",
    threads: int = 0,
    max_batch_tokens: int | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Logits of RAW texts through the serving engine, as a replica computes them, in serving's batches
    (`max_batch_size` rows, cut into passes of at most `max_batch_tokens`: serving's default budget for
    the precision's device unless given); and how it ran (provider, graph kind, the pass budget). The
    budget matters for int8: its activation scales are per pass (model_repository.passes)."""
    from tqdm.auto import tqdm

    from serving.batching import BatchPolicy
    from serving.engine import (
        BaseEncoderCache,
        EngineSettings,
        MultiAdapterCache,
        OnnxEngine,
        Row,
        load_scenario,
    )

    providers = [CUDA, CPU] if precision == "fp16" else [CPU]
    shared = lora_mode == "shared" and manifest.strategy == "lora"
    # One precision, no fallback: the figures must be those of the graph asked for; in shared mode the
    # graph that holds the adapter's rank (a serving config sets lora_table_rank to it to serve it so).
    settings = EngineSettings(providers, [precision], threads, lora_mode=lora_mode)
    if shared:
        settings = replace(settings, lora_table_rank=table_rank(repository, manifest, precision))
    loaded = load_scenario(
        repository, manifest.scenario, manifest.version, settings, BaseEncoderCache(), MultiAdapterCache()
    )
    if max_batch_tokens is None:
        max_batch_tokens = default_max_batch_tokens(precision)
    # serving's batch: what a replica's batch slot hands the engine, cut into passes as a replica cuts it
    policy = BatchPolicy(max_batch_tokens=max_batch_tokens)
    engine = OnnxEngine(policy)
    out: list[np.ndarray] = []
    step = policy.max_batch_size
    for start in tqdm(
        range(0, len(texts), step), desc=f"scoring ({precision})", disable=len(texts) <= 4 * step
    ):
        chunk = texts[start : start + step]
        for i, result in enumerate(engine.run([Row(loaded, t) for t in chunk]).results):
            if isinstance(result, Exception):
                raise EvaluationError(
                    f"the serving engine failed on row {start + i}: {type(result).__name__}: {result}"
                ) from result
            assert result.logits is not None
            out.append(result.logits)
    logits = np.stack(out) if out else np.zeros((0, len(manifest.labels)), dtype=np.float32)
    # lora_mode is a LoRA version's: serving runs any other version as it always does (its own graph, or
    # the shared base + head) whatever the mode: null here, the graph it ran on in engine_group
    how = {
        "provider": loaded.provider,
        "engine_group": loaded.group_key[0],
        "lora_mode": lora_mode if manifest.strategy == "lora" else None,
    }
    if shared:
        how["lora_table_rank"] = settings.lora_table_rank
    if loaded.base_folder:  # frozen: the shared base's folder read (int8, all-int8, or fp32 when guarded)
        how["base_folder"] = loaded.base_folder
    return logits, {**how, "max_batch_tokens": max_batch_tokens}


__all__ = ["EVAL_PRECISIONS", "available_precisions", "check_precision", "engine_logits", "evaluate_version"]
