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

import time
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
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


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
    from training import evaluation_rows, torch_logits, write_evaluation

    if lora_mode not in LORA_MODES:
        raise UsageError(f"--lora-mode {lora_mode!r}: choose merged or shared")
    version = repository.resolve(scenario, ref)
    manifest = repository.verify(scenario, version)
    providers: list[str] = []
    if precision != "torch":
        from serving.engine import available_providers

        providers = available_providers()
    check_precision(manifest, precision, providers)
    rows = evaluation_rows(manifest, data, split)
    started = time.perf_counter()
    extra: dict[str, Any] = {}
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
    return write_evaluation(
        manifest,
        rows,
        logits,
        precision=precision,
        seconds=time.perf_counter() - started,
        output_dir=output_dir,
        extra=extra,
    )


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
    # One precision, no fallback: the figures must be those of the graph asked for.
    settings = EngineSettings(providers, [precision], threads, lora_mode=lora_mode)
    loaded = load_scenario(
        repository, manifest.scenario, manifest.version, settings, BaseEncoderCache(), MultiAdapterCache()
    )
    if max_batch_tokens is None:
        max_batch_tokens = GPU_MAX_BATCH_TOKENS if precision == "fp16" else CPU_MAX_BATCH_TOKENS
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
    how = {"provider": loaded.provider, "engine_group": loaded.group_key[0], "lora_mode": lora_mode}
    if loaded.base_folder:  # frozen: the shared base's folder read (int8, all-int8, or fp32 when guarded)
        how["base_folder"] = loaded.base_folder
    return logits, {**how, "max_batch_tokens": max_batch_tokens}


__all__ = ["EVAL_PRECISIONS", "available_precisions", "check_precision", "engine_logits", "evaluate_version"]
