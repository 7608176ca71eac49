"""`labelwise bench --lora-modes merged,shared --lora-scenarios 1,4,8,16,32`: many LoRA scenarios, served.

For each mode and each N, a fresh `labelwise serve` on 127.0.0.1 hosts N MiniLM LoRA scenarios with
`lora_mode` set; the closed-loop load generator (its own process) sends the same total load
(1 text per request, 32 in flight) spread uniformly over the N scenarios; the report gives
throughput, p99 and the RSS of the server's process tree. A fresh server per point keeps RSS honest.

Bench scenarios: one MiniLM LoRA scenario is trained and published by the real pipeline (the cached
`bench-lora-0` of `labelwise bench`); the others (`lora-mix-NN`) are published through
`ModelRepository.new_version` with its files and a seeded random perturbation of its adapter and head
(lora.npz, head.npz). Their merged graph is the source's (same size, same cost per row): speed and
memory do not depend on the weights' values, accuracy is not measured here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from model_repository import ModelRepository, layout

from .bench_models import prepare_bench_models
from .ceiling import server_threads
from .errors import BenchError, LoadTestError
from .loadgen import LoadSpec, run_in_subprocess
from .processes import python_cmd, start_server, stop_server, terminated_as_exit, wait_server_ready
from .report_names import report_stem
from .sentences import real_texts_file

MIX_PREFIX = "lora-mix-"
# What a failed point raises: its server not ready, no answer, the load generator past its bound.
POINT_FAILURES = (LoadTestError, subprocess.TimeoutExpired)
TABLE_RANK = 8  # the multi-adapter graph's rank: serving's default lora_table_rank
_COPIED = (layout.TOKENIZER_DIR, layout.WEIGHTS_DIR, layout.ONNX_DIR)
_MANIFEST_KEEP = (
    "strategy",
    "base_model",
    "labels",
    "max_length_tokens",
    "metrics",
    "exports",
    "base_encoder",
    "head",
    "trainable_params",
    "total_params",
    "train_time_s",
    "training_config",
)


class LoraBenchOptions(BaseModel):
    """What the LoRA-mode benchmark measures; every point is one fresh server."""

    repository: Path = Field(default=Path("var/bench-repository"), description="Bench model repository.")
    out_dir: Path = Field(default=Path("var/bench-lora"), description="JSON, markdown and server logs.")
    modes: list[str] = Field(default=["merged", "shared"], description="lora_mode values to compare.")
    scenario_counts: list[int] = Field(default=[1, 4, 8, 16, 32], description="LoRA scenarios per point.")
    port: int = Field(default=8125, ge=1, le=65535, description="Port of the servers the bench starts.")
    threads: int | None = Field(
        default=None,
        ge=0,
        description="ORT intra-op threads of the replica; 0: CPU cores; None: serve's default.",
    )
    concurrency: int = Field(default=32, ge=1, description="Requests in flight (1 text each), all N mixed.")
    duration_s: float = Field(default=8.0, gt=0, description="Measured seconds per point.")
    warmup_s: float = Field(default=2.0, ge=0, description="Seconds under load before measuring.")
    ready_timeout_s: float = Field(default=240.0, gt=0, description="Bound on one server's start-up.")
    precision: str = Field(default="int8", description="Precision of the merged graphs and the shared graph.")


def _perturb(arrays: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {}
    for name, value in arrays.items():
        if value.dtype.kind == "f" and not name.endswith(".scaling"):
            scale = float(np.abs(value).mean()) or 1e-2
            value = (value + rng.normal(0.0, scale, value.shape)).astype(value.dtype)
        out[name] = value
    return out


def prepare_lora_scenarios(
    root: Path, n: int, precision: str = "int8", say: Callable[[str], None] = print
) -> list[str]:
    """n LoRA scenarios on MiniLM (cached) and the base's multi-adapter graph; returns their names."""
    models = prepare_bench_models(root, precision=precision, say=say)
    repo = ModelRepository(root)
    source = models.lora[0]
    src_version = repo.resolve(source, "production")
    manifest = repo.verify(source, src_version)
    if manifest.base_encoder is None:
        raise BenchError(f"{source} v{src_version} has no base encoder: rebuild with --rebuild-models")
    folder = layout.multi_adapter_folder(TABLE_RANK, precision)
    if not repo.has_base(manifest.base_encoder.key, folder):
        from training.multi_adapter import export_multi_adapter_base

        say(f"exporting the multi-adapter graph {manifest.base_encoder.key}/{folder} (once)")
        export_multi_adapter_base(repo, models.base_model, rank=TABLE_RANK, precisions=[precision], say=say)
    src = repo.version_path(source, src_version)
    names = [f"{MIX_PREFIX}{i:02d}" for i in range(n)]
    fields = {k: getattr(manifest, k) for k in _MANIFEST_KEEP}
    fields = {k: (v.model_dump(mode="json") if hasattr(v, "model_dump") else v) for k, v in fields.items()}
    fields["exports"] = [e.model_dump(mode="json") for e in manifest.exports]
    for i, name in enumerate(names):
        try:
            repo.resolve(name, "production")
            continue
        except Exception:
            pass
        rng = np.random.default_rng(i)
        with repo.new_version(name, **fields) as draft:
            for part in _COPIED:
                shutil.copytree(src / part, draft.path / part)
            for npz in (layout.LORA_FILE, manifest.head.path):  # type: ignore[union-attr]
                with np.load(src / npz) as arrays:
                    np.savez(draft.path / npz, **_perturb(dict(arrays), rng))
        assert draft.manifest is not None
        repo.set_alias(name, "production", draft.manifest.version)
        say(f"published {name} v{draft.manifest.version} (adapter and head of {source}, perturbed)")
    return names


def serve_config(options: LoraBenchOptions, mode: str, names: list[str]) -> dict[str, Any]:
    """The `labelwise serve` config of one point: these scenarios in this lora_mode."""
    config: dict[str, Any] = {
        "repository": str(options.repository.resolve()),
        "scenarios": [{"name": s, "alias": "production"} for s in names],
        "precision": options.precision,
        "lora_mode": mode,
    }
    threads = server_threads(options.threads)
    if threads is not None:  # else labelwise serve's own default
        config["ort_intra_op_threads"] = threads
    return config


def _point(
    options: LoraBenchOptions, mode: str, names: list[str], texts_file: str, say: Callable[[str], None]
) -> dict[str, Any]:
    import yaml

    tag = f"{mode}-{len(names)}"
    config_path = options.out_dir / f"serve-{tag}.yaml"
    config_path.write_text(yaml.safe_dump(serve_config(options, mode, names)), encoding="utf-8")
    url = f"http://127.0.0.1:{options.port}"
    cmd = python_cmd(
        "-m", "labelwise.cli", "serve", "--config", str(config_path), "--host", "127.0.0.1",
        "--port", str(options.port),
    )  # fmt: skip
    server = start_server(f"labelwise serve ({tag})", cmd, url, options.out_dir / f"serve-{tag}.log")
    try:
        ready_s = wait_server_ready(server, options.ready_timeout_s)
        idle = server.memory_mb()
        spec = LoadSpec(
            url=url,
            scenarios=names,
            texts_per_request=1,
            concurrency=options.concurrency,
            duration_s=options.duration_s,
            warmup_s=options.warmup_s,
        )
        result = run_in_subprocess(spec, texts_file, ready_timeout_s=30)
        require_answers(tag, result, options.duration_s, server.log_path)
        loaded = server.memory_mb()
    finally:
        stop_server(server)
    say(
        f"{tag}: {result['seq_per_s']} seq/s, p99 {result['p99_ms']} ms, RSS {loaded['rss_mb']} MB, "
        f"errors {result['errors']}"
    )
    return {
        "mode": mode,
        "n_scenarios": len(names),
        "ready_s": round(ready_s, 1),
        "seq_per_s": result["seq_per_s"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "errors": result["errors"],
        "rss_mb": loaded["rss_mb"],
        "pss_mb": loaded["pss_mb"],
        "rss_idle_mb": idle["rss_mb"],
    }


def require_answers(tag: str, result: dict[str, Any], duration_s: float, log_path: Path) -> None:
    """BenchError when no request of a point's load was answered: all failed, or none came back in time
    (a point without answers has no throughput to compare)."""
    if result["requests"] > 0:
        return
    if result["errors"] > 0:
        raise BenchError(f"{tag}: every request failed ({result['error_kinds']}); log {log_path}")
    raise BenchError(
        f"{tag}: no answer within the {duration_s:g} s measured window (none failed either: the server is "
        f"slower than that); raise --duration-s, or see the log {log_path}"
    )


def run_lora_bench(options: LoraBenchOptions, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Every (mode, N) point in turn; the report is also written as JSON and markdown under out_dir.

    A SIGTERM ends it through its `finally` blocks, as for `labelwise bench`: the server is stopped. A point
    that fails is recorded in the report, which the next points complete; the report is written anyway,
    then BenchError names the failed points and where that partial report is."""
    with terminated_as_exit():
        return _run_lora_bench(options, say)


def _run_lora_bench(options: LoraBenchOptions, say: Callable[[str], None]) -> dict[str, Any]:
    import os

    unknown = [m for m in options.modes if m not in ("merged", "shared")]
    if unknown:
        raise BenchError(f"--lora-modes: unknown modes {unknown} (known: merged, shared)")
    start = time.monotonic()
    options.out_dir.mkdir(parents=True, exist_ok=True)
    names = prepare_lora_scenarios(options.repository, max(options.scenario_counts), options.precision, say)
    texts_file = str(real_texts_file())
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    points: list[dict[str, Any]] = []
    try:
        for mode in options.modes:
            for n in options.scenario_counts:
                say(f"{mode}: {n} scenario(s), c={options.concurrency}, 1 text per request")
                try:
                    points.append(_point(options, mode, names[:n], texts_file, say))
                except POINT_FAILURES as exc:
                    error = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    error = error.removeprefix(f"{mode}-{n}: ")  # the table and message name the point
                    say(f"{mode}-{n}: failed: {error}")
                    points.append({"mode": mode, "n_scenarios": n, "error": error})
    finally:  # also when interrupted: the points measured until then
        report = {
            "started_at": started_at,
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
            "options": json.loads(options.model_dump_json()),
            "points": points,
            "targets": lora_targets(points),
            "bench_wall_s": round(time.monotonic() - start, 1),
        }
        json_path = report_stem(options.out_dir, "bench-lora-").with_suffix(".json")
        json_path.write_text(json.dumps(report, indent=2), encoding="utf-8")
        json_path.with_suffix(".md").write_text(render_lora_markdown(report), encoding="utf-8")
        report["json_path"] = str(json_path)
    failed = [p for p in points if "error" in p]
    if failed:
        raise BenchError(
            "; ".join(f"{p['mode']}-{p['n_scenarios']}: {p['error']}" for p in failed)
            + f". The partial report: {json_path} and {json_path.with_suffix('.md')}"
        )
    return report


def lora_targets(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Shared mode: ≥ 0.9x its 1-scenario throughput at 8, ≥ 0.8x at 32, RSS ≤ +10 MB per added scenario.
    A target whose point failed (no figures) is not measured: value None, met None."""
    shared = {p["n_scenarios"]: p for p in points if p["mode"] == "shared"}
    out: dict[str, Any] = {}
    if 1 not in shared:
        return out
    one = shared[1]
    for n, floor in ((8, 0.9), (32, 0.8)):
        if n in shared:
            rate, one_rate = shared[n].get("seq_per_s"), one.get("seq_per_s")
            ratio = rate / one_rate if rate and one_rate else None
            out[f"throughput_{n}_vs_1"] = {
                "ratio": None if ratio is None else round(ratio, 3),
                "target": floor,
                "met": None if ratio is None else ratio >= floor,
            }
    top = max(shared)
    if top > 1:
        # RSS as the target was set; PSS beside it (summed RSS counts pages Ray's processes share per process)
        for key in ("rss_mb", "pss_mb"):
            grown, base = shared[top].get(key), one.get(key)
            per = None if grown is None or base is None else (grown - base) / (top - 1)
            out[f"{key}_per_added_scenario"] = {
                "value": None if per is None else round(per, 2),
                "target": 10.0,
                "met": None if per is None else per <= 10.0,
            }
    return out


def render_lora_markdown(report: dict[str, Any]) -> str:
    lines = [
        "| mode | LoRA scenarios | seq/s | p50 ms | p99 ms | errors | server tree RSS MB | PSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in report["points"]:
        if "error" in p:
            lines.append(f"| {p['mode']} | {p['n_scenarios']} | not measured: {p['error']} | | | | | |")
            continue
        lines.append(
            f"| {p['mode']} | {p['n_scenarios']} | {p['seq_per_s']} | {p['p50_ms']} | {p['p99_ms']} | "
            f"{p['errors']} | {p['rss_mb']} | {p['pss_mb']} |"
        )
    for name, target in report["targets"].items():
        value = target.get("ratio", target.get("value"))
        verdict = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
        lines.append(f"\n- {name}: {value} (target {target['target']}, {verdict})")
    return "\n".join(lines) + "\n"


__all__ = ["LoraBenchOptions", "prepare_lora_scenarios", "render_lora_markdown", "run_lora_bench"]
