"""`labelwise bench`: the in-process ceiling, served figures, the seed baseline, peers and the scenario mix.

Everything runs on this machine, in one bounded command: it trains (or reuses) the bench scenarios,
measures the engine alone on all cores, starts `labelwise serve` on 127.0.0.1, drives it with a
closed-loop client in a separate process (wrk when installed, else the Python generator), does the
same for the seed baseline and for Infinity (when `make peers` installed it) on the same model,
stops what it started, and prints markdown tables and the JSON behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from .bench_models import PEER_MODELS, BenchModels, prepare_bench_models
from .bench_report import CEILING_TARGETS, merge_rounds, render_markdown, targets
from .ceiling import ResidentCeiling, all_cores, measure_ceiling_processes, server_threads
from .errors import BenchError, LoadTestError
from .load_drivers import resolve_driver, run_one_load
from .loadgen import LoadSpec, wait_ready
from .loopback import require_loopback
from .peers import (
    INFINITY_SPEC,
    INFINITY_VARIANTS,
    infinity_command,
    infinity_env,
    infinity_missing,
    prepare_infinity_models,
)
from .processes import (
    ServerProcess,
    python_cmd,
    require_free_port,
    start_server,
    stop_server,
    terminated_as_exit,
    wait_server_ready,
)
from .report_names import report_stem
from .request_shapes import API_KEY_ENV
from .sentences import real_texts_file

# The loads the issue names: (label, texts per request, concurrency).
SERVED_LOADS = (("1 text, c=8", 1, 8), ("1 text, c=32", 1, 32), ("32 texts, c=4", 32, 4))
BRACKETED_LOADS = frozenset(load for load, _bar in CEILING_TARGETS)  # measured with the ceiling around
PEER_LOADS = SERVED_LOADS[:2]  # the side-by-side table: one-text requests at c=8 and c=32
MIX_SIZES = (1, 4, 8)
MIX_LOAD = ("1 text, c=32", 1, 32)
# The servers besides the main one, on ports above its own: not its port, whose connections may still be
# in TIME_WAIT when the next one starts.
MEMORY_PORT_OFFSET = 3  # the one-scenario server whose memory is measured
FP32_PORT_OFFSET = 4  # the primary scenario's fp32 graph
MAX_PORT = 65535


class BenchOptions(BaseModel):
    """What `labelwise bench` measures and how long each step may take."""

    repository: Path = Field(default=Path("var/bench-repository"), description="Bench-only model repository.")
    out_dir: Path = Field(
        default=Path("var/bench"), description="Where the JSON, markdown and server logs go."
    )
    url: str | None = Field(
        default=None, description="Measure an already running server (loopback only) instead of starting one."
    )
    port: int = Field(
        default=8123,
        ge=1,
        le=MAX_PORT,
        description=f"Port of the labelwise server the bench starts; it also starts servers on port + "
        f"{MEMORY_PORT_OFFSET} and port + {FP32_PORT_OFFSET}.",
    )
    seed_port: int = Field(default=8124, ge=1, le=65535, description="Port of the seed baseline server.")
    threads: int | None = Field(
        default=None,
        ge=0,
        description="ORT (and torch) intra-op threads for the labelwise server and the seed; 0 = CPU cores. "
        "None: each system's own default, as a new user runs it (the ceiling always uses every core).",
    )
    duration_s: float = Field(default=10.0, gt=0, description="Measured seconds per load.")
    warmup_s: float = Field(default=2.0, ge=0, description="Seconds under load before each measurement.")
    ceiling_seconds_per_size: float = Field(
        default=2.0, gt=0, description="Engine-alone seconds per batch size."
    )
    ceiling_bracket_s: float = Field(
        default=3.0,
        ge=0,
        description="Engine-alone seconds just before and just after each load that has a served/ceiling "
        "target, at the ceiling's best batch size and way; the target compares against their mean (0: "
        "against the ceiling measured at the start of the round only).",
    )
    base_model: str = Field(default="minilm", description="Encoder the bench scenarios are trained from.")
    precision: str = Field(default="int8", description="Export precision served and measured.")
    n_lora: int = Field(default=4, ge=1, description="LoRA scenarios in the bench repository.")
    n_frozen: int = Field(default=4, ge=1, description="Frozen scenarios in the bench repository.")
    train_steps: int = Field(default=4, ge=1, description="Optimizer steps per bench scenario.")
    rebuild_models: bool = Field(default=False, description="Retrain the bench scenarios even if cached.")
    seed_baseline: bool = Field(default=True, description="Also measure the seed's transformers server.")
    scenario_mix: bool = Field(default=True, description="Also measure 1/4/8-scenario mixes.")
    same_precision: bool = Field(
        default=True,
        description="When serving int8: also serve the primary scenario's fp32 graph (1 text, c=8 and c=32), "
        "the same precision as Infinity's fp32 folder.",
    )
    memory_one_scenario: bool = Field(
        default=True,
        description="Also start a server with the primary scenario alone and measure its memory.",
    )
    ready_timeout_s: float = Field(default=240.0, gt=0, description="Bound on a started server's start-up.")
    attach_timeout_s: float = Field(default=15.0, gt=0, description="Bound on waiting for a --url server.")
    serve_overrides: dict[str, Any] = Field(default_factory=dict, description="Extra ServingConfig fields.")
    load_driver: Literal["auto", "wrk", "python"] = Field(
        default="auto", description="HTTP load client: wrk when on PATH (auto), or the Python generator."
    )
    wrk_threads: int = Field(
        default=1, ge=1, le=2, description="wrk threads (-t); each drives a share of the connections."
    )
    infinity: bool = Field(default=True, description="Also measure Infinity when `make peers` installed it.")
    infinity_variants: list[Literal["fp32", "int8"]] = Field(
        default=list(INFINITY_VARIANTS), description="Which Infinity model folders to serve."
    )
    peers_dir: Path = Field(default=Path("var/peers"), description="Where `make peers` put the peers' venvs.")
    peer_port: int = Field(
        default=8125, ge=1, le=65535, description="Port of the peer server the bench starts."
    )
    rounds: int = Field(
        default=1,
        ge=1,
        le=9,
        description="Head-to-head rounds: from the second on, the ceiling, labelwise (int8 and fp32) and "
        "Infinity (and the scenario mix) are measured again, one after the other; tables show each cell's "
        "median round and targets the median of each round's own ratio (the seed and memory: once).",
    )

    @field_validator("serve_overrides")
    @classmethod
    def _servable_overrides(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        """Checked as the started `labelwise serve` checks its config, before any bench model is trained
        (`max_batch_tokens=true` was read as 1 by the ceiling, and a field serve refuses failed the run only
        after the models were built). The repository and scenarios are the bench's own."""
        from model_repository.errors import validation_problems
        from serving import ServingConfig

        owned = sorted(set(overrides) & {"repository", "scenarios"})
        if owned:
            raise ValueError(f"{owned[0]} is the bench's own (the bench repository and its scenarios)")
        try:
            ServingConfig(repository=".", scenarios=[{"name": "bench", "alias": "production"}], **overrides)
        except ValidationError as exc:
            raise ValueError(validation_problems(exc)) from None
        return overrides

    @model_validator(mode="after")
    def _derived_ports_exist(self) -> BenchOptions:
        """Refused up front, not when the fp32 server fails to start after the main measurements."""
        offsets = [MEMORY_PORT_OFFSET] if self.memory_one_scenario else []
        if self.same_precision and self.precision != "fp32":
            offsets.append(FP32_PORT_OFFSET)  # the servers require_free_ports checks, no others
        top = self.port + max(offsets, default=0)
        if self.url is None and top > MAX_PORT:
            raise ValueError(
                f"--port {self.port}: the bench also starts servers on ports up to {top}, past {MAX_PORT}; "
                f"use a port up to {MAX_PORT - max(offsets)}"
            )
        return self


def run_bench(options: BenchOptions, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every step and return the report (also written as JSON and markdown under out_dir). A SIGTERM
    ends it through its `finally` blocks: every server it started is stopped (terminated_as_exit).

    A step that fails (a server that never gets ready, a load whose every request failed, the ceiling's
    child) is recorded in the report, which the next steps complete; the report is written anyway, then
    BenchError names the failed steps and where that partial report is."""
    with terminated_as_exit():
        return _run_bench(options, say)


def _run_bench(options: BenchOptions, say: Callable[[str], None]) -> dict[str, Any]:
    if options.url is not None:
        # Refuse a remote target, and give up on a server that is not up, before anything is trained.
        asyncio.run(wait_ready(require_loopback(options.url), options.attach_timeout_s))
    require_free_ports(options)
    threads = server_threads(options.threads)
    driver = resolve_driver(options.load_driver)
    t_start = time.monotonic()
    models = prepare_bench_models(
        options.repository,
        n_lora=options.n_lora,
        n_frozen=options.n_frozen,
        base_model=options.base_model,
        precision=options.precision,
        train_steps=options.train_steps,
        rebuild=options.rebuild_models,
        say=say,
    )
    texts_file = str(real_texts_file())
    from serving.engine.graph_rewrite import rewrite_enabled

    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": versions(),
        "model": {
            "base_model": models.base_model,
            "precision": models.precision,
            "primary_scenario": models.primary,
            "lora": models.lora,
            "frozen": models.frozen,
            "train_steps": models.train_steps,
        },
        "texts_file": texts_file,
        # Threads of the labelwise servers the bench starts; with --url, that server's own (not known here).
        "threads": None if options.url else threads,
        "url": options.url,
        "seed_threads": threads if options.seed_baseline else None,
        "duration_s": options.duration_s,
        "warmup_s": options.warmup_s,
        "load_driver": driver,
        "wrk_threads": options.wrk_threads if driver == "wrk" else None,
        # labelwise's CPU sessions (server and ceiling alike) unfuse SkipLayerNormalization unless turned off
        "ort_cpu_rewrite": rewrite_enabled(),
    }
    say(f"load driver: {driver}" + (f" ({options.wrk_threads} thread(s))" if driver == "wrk" else ""))
    options.out_dir.mkdir(parents=True, exist_ok=True)
    run = _Runner(options, texts_file, driver)
    try:
        report["ceiling"] = _step(report, "ceiling", say, ceiling, models, texts_file, options, say)
        if report["ceiling"] is not None:
            say(
                f"ceiling: {report['ceiling']['seq_per_s']} seq/s at batch "
                f"{report['ceiling']['best_batch_size']} ({report['ceiling']['variant']})"
            )
            if options.ceiling_bracket_s > 0:
                run.resident = _step(
                    report, "ceiling around loads", say, resident_ceiling, models, texts_file,
                    report["ceiling"], say,
                )  # fmt: skip
        labelwise = _step(report, "labelwise", say, measure_labelwise, models, threads, run, say)
        report["served"], report["scenario_mix"], report["serve_config"] = labelwise or (None, None, None)
        if options.url is None and options.same_precision and models.precision != "fp32":
            report["served_fp32"] = _step(
                report, "labelwise fp32", say, measure_labelwise_fp32, models, threads, run, say
            )
        if options.url is None and options.memory_one_scenario:
            report["memory_one_scenario"] = _step(
                report, "labelwise memory, one scenario", say, measure_one_scenario_memory, models, threads,
                run, say,
            )  # fmt: skip
        if options.seed_baseline:
            report["seed"] = _step(report, "seed baseline", say, measure_seed, models, threads, run, say)
        report["peers"], report["peer_notes"] = ([], [])
        if options.infinity:
            report["peers"], report["peer_notes"] = measure_infinity(models, run, say)
        if options.rounds > 1:
            head_to_head_rounds(report, models, threads, texts_file, run, say)
        else:
            report["targets"] = targets(report)
    except BaseException as exc:  # Ctrl-C, SIGTERM, a bug: what was measured until then is still written
        ended = f"ended by {type(exc).__name__}" + (f": {_first_line(exc)}" if str(exc) else "")
        report.setdefault("failed_steps", []).append({"step": "the rest of the bench", "error": ended})
        raise
    finally:
        run.close()
        report["bench_wall_s"] = round(time.monotonic() - t_start, 1)
        json_path = report_stem(options.out_dir, "bench-").with_suffix(".json")
        json_path.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
        report["json_path"] = str(json_path)
        markdown_path = json_path.with_suffix(".md")
        markdown_path.write_text(render_markdown(report), encoding="utf-8")
        if report.get("failed_steps"):
            say(f"partial report (some steps failed): {json_path} and {markdown_path}")
    if report.get("failed_steps"):
        failed = "; ".join(f"{f['step']}: {f['error']}" for f in report["failed_steps"])
        raise BenchError(f"{failed}. The partial report: {json_path} and {markdown_path}")
    return report


def _step(report: dict[str, Any], step: str, say: Callable[[str], None], measure: Callable[..., Any],
          *args: Any) -> Any:  # fmt: skip
    """measure(*args), or None when it fails: the failure is recorded in the report (what the step measures
    reads "not measured") and the bench goes on to its next step."""
    try:
        return measure(*args)
    except STEP_FAILURES as exc:
        say(f"{step}: failed: {_first_line(exc)}")
        report.setdefault("failed_steps", []).append({"step": step, "error": _first_line(exc)})
        return None


def require_free_ports(options: BenchOptions) -> None:
    """Every port the bench will start a server on is free now, before minutes of training and loads: a
    port taken later would end the bench without a report (BenchError naming it)."""
    ports = {"the seed baseline": options.seed_port} if options.seed_baseline else {}
    if options.infinity and infinity_missing(options.peers_dir) is None:
        ports["Infinity"] = options.peer_port
    if options.url is None:
        ports["labelwise serve"] = options.port
        if options.memory_one_scenario:
            ports["labelwise serve (one scenario)"] = options.port + MEMORY_PORT_OFFSET
        if options.same_precision and options.precision != "fp32":
            ports["labelwise serve (fp32)"] = options.port + FP32_PORT_OFFSET
    for name, port in ports.items():
        require_free_port(name, f"http://127.0.0.1:{port}")


def head_to_head_rounds(
    report: dict[str, Any],
    models: BenchModels,
    threads: int | None,
    texts_file: str,
    run: _Runner,
    say: Callable[[str], None],
) -> None:
    """Rounds 2..N of the head-to-head part (the ceiling, labelwise with its scenario mix, labelwise fp32,
    Infinity), then the report's medians (bench_report.merge_rounds).

    The host's speed drifts by a fifth within minutes (docs/benchmarks.md): a ratio of two figures taken
    minutes apart is off by as much. Each round measures the ceiling, labelwise and Infinity again, one
    after the other, and scores the targets on its own figures; the report keeps every round, and every
    round's peer notes, each named by its round."""
    options = run.options
    report["peer_notes"] = [f"round 1: {note}" for note in report.get("peer_notes") or []]
    views = [report]
    for number in range(2, options.rounds + 1):
        say(f"round {number} of {options.rounds}: the ceiling, labelwise and Infinity again")
        view = dict(report)  # the seed and memory: round 1's
        # A step that fails is recorded, and its figures of this round are "not measured" (None).
        step = f"round {number}:"
        view["ceiling"] = _step(report, f"{step} ceiling", say, ceiling, models, texts_file, options, say)
        if view["ceiling"] is not None:
            run.follow_ceiling(view["ceiling"], say)
        labelwise = _step(report, f"{step} labelwise", say, measure_labelwise, models, threads, run, say)
        view["served"], view["scenario_mix"] = (labelwise or (None, None, None))[:2]
        if report.get("served_fp32") is not None:
            view["served_fp32"] = _step(
                report, f"{step} labelwise fp32", say, measure_labelwise_fp32, models, threads, run, say
            )
        if options.infinity and any(p["results"] for p in report.get("peers") or []):
            view["peers"], notes = measure_infinity(models, run, say)
            report["peer_notes"] += [f"round {number}: {note}" for note in notes]
        views.append(view)
    report.update(merge_rounds(views))


def ceiling(models: BenchModels, texts_file: str, options: BenchOptions, say: Callable[[str], None]) -> dict:
    """The engine alone on every core, two ways; the higher is the ceiling, both are reported."""
    cores = all_cores()
    seconds = options.ceiling_seconds_per_size
    budget = _max_batch_tokens(options)  # the engine cuts batches by the replicas' token budget
    say(f"ceiling: serving engine alone on {models.primary}, 1 process x {cores} ORT threads")
    cmd = python_cmd(
        "-m", "loadtests.ceiling",
        "--repository", models.repository,
        "--scenario", models.primary,
        "--threads", str(cores),
        "--precision", models.precision,
        "--texts-file", texts_file,
        "--seconds-per-size", str(seconds),
        "--max-batch-tokens", str(budget),
    )  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise BenchError(f"the ceiling measurement failed: {out.stderr.strip()[-2000:]}")
    variants = [json.loads(out.stdout.strip().splitlines()[-1]) | {"variant": f"1 process x {cores} threads"}]
    if cores > 1:
        say(f"ceiling: {cores} processes x 1 ORT thread, at the same time")
        try:
            per_core = measure_ceiling_processes(
                cores, models.repository, models.primary, texts_file, models.precision,
                seconds_per_size=seconds, max_batch_tokens=budget,
            )  # fmt: skip
        except RuntimeError as exc:
            raise BenchError(f"the per-core ceiling measurement failed: {exc}") from exc
        variants.append(per_core | {"variant": f"{cores} processes x 1 thread"})
    best = max(variants, key=lambda v: v["seq_per_s"])
    return {**best, "cores": cores, "variants": variants}


def resident_ceiling(
    models: BenchModels, texts_file: str, best: dict[str, Any], say: Callable[[str], None]
) -> ResidentCeiling:
    """The ceiling's best way (processes x threads, batch size, token budget), loaded and kept waiting."""
    processes, threads = best.get("processes", 1), best["threads"]
    say(f"ceiling: keeping {processes} process(es) x {threads} thread(s) loaded, to measure around loads")
    try:
        return ResidentCeiling(
            processes, threads, models.repository, models.primary, texts_file, models.precision,
            best["best_batch_size"], best["max_batch_tokens"],
            tuple(int(size) for size in best["seq_per_s_by_batch_size"]),
        )  # fmt: skip
    except RuntimeError as exc:
        raise BenchError(f"the resident ceiling failed to start: {exc}") from exc


def _max_batch_tokens(options: BenchOptions) -> int:
    from serving import ServingConfig

    return int(options.serve_overrides.get("max_batch_tokens", ServingConfig().max_batch_tokens))


class _Runner:
    """Runs one load against a system with the bench's driver, texts and timings."""

    def __init__(self, options: BenchOptions, texts_file: str | None, driver: str) -> None:
        self.options, self.texts_file, self.driver = options, texts_file, driver
        self.resident: ResidentCeiling | None = None  # the ceiling's engines, for bracketed loads
        self.resident_failed: str | None = None  # why they are gone, when one of them died
        # What a labelwise server checks: its --serve-arg api_key, else LABELWISE_API_KEY (which the servers
        # the bench starts inherit, and which a --url server may have been given).
        key = options.serve_overrides.get("api_key") or os.environ.get(API_KEY_ENV)
        self.api_key = str(key) if key else None

    def close(self) -> None:
        if self.resident is not None:
            self.resident.close()
            self.resident = None

    def follow_ceiling(self, fresh: dict[str, Any], say: Callable[[str], None]) -> None:
        """Measure around this round's loads at the batch size this round's own ceiling found best (for the
        resident's processes x threads), not round 1's: one disturbed first ceiling (a batch size read
        low for 3 s) would otherwise skew the ceiling around every load of the run."""
        resident = self.resident
        if resident is None:
            return
        for variant in fresh["variants"]:
            if (variant.get("processes", 1), variant["threads"]) != (resident.processes, resident.threads):
                continue
            size = int(variant["best_batch_size"])
            if size != resident.batch_size and size in resident.warm_sizes:
                say(f"ceiling around loads: batch {resident.batch_size} -> {size}, this round's best")
                resident.batch_size = size

    def bracketed_load(
        self, url: str, scenarios: list[str], n_texts: int, concurrency: int, server: ServerProcess | None
    ) -> dict[str, Any]:
        """`load`, with the ceiling measured again just before and just after it (when the bench keeps the
        ceiling's engines), while `server` (the one loaded, when the bench started it) is paused:
        result["ceiling_now"] holds both and their mean, which the served/ceiling targets compare with.

        When a ceiling process dies, the ceiling is no longer measured around loads: this load and the next
        ones run without it, each with a note (the targets then compare with the round's first ceiling)."""
        if self.resident is None:
            result = self.load(url, scenarios, n_texts, concurrency)
            if self.resident_failed:
                _add_note(result, f"no ceiling around it: {self.resident_failed} (an earlier load)")
            return result
        resident, seconds = self.resident, self.options.ceiling_bracket_s

        def ceiling_now() -> float | None:
            try:
                with server.paused() if server is not None else contextlib.nullcontext():
                    return resident.measure(seconds)
            except BenchError as exc:
                self.resident_failed = _first_line(exc)
                self.close()
                return None

        before = ceiling_now()
        result = self.load(url, scenarios, n_texts, concurrency)
        after = ceiling_now() if before is not None else None
        if before is None or after is None:
            _add_note(result, f"no ceiling around it: {self.resident_failed}")
            return result
        mean = round((before + after) / 2, 2)
        result["ceiling_now"] = {
            "before": before,
            "after": after,
            "seq_per_s": mean,
            "batch_size": resident.batch_size,
            "server_paused": bool(server),
        }
        return result

    def load(
        self, url: str, scenarios: list[str], n_texts: int, concurrency: int, shape: str = "labelwise"
    ) -> dict[str, Any]:
        spec = LoadSpec(
            url=url,
            scenarios=scenarios,
            texts_per_request=n_texts,
            concurrency=concurrency,
            duration_s=self.options.duration_s,
            warmup_s=self.options.warmup_s,
            shape=shape,
            api_key=self.api_key if shape == "labelwise" else None,  # peers are not sent labelwise's key
        )
        result = run_one_load(
            spec, self.texts_file, self.driver, self.options.attach_timeout_s, self.options.wrk_threads
        )
        if result["requests"] == 0 and result["errors"] > 0:
            raise BenchError(
                f"every request to {url} failed ({n_texts} text(s) per request, c={concurrency}: "
                f"{result['error_kinds']}): see the server log"
            )
        if result["requests"] == 0:
            # No failure, just nothing finished within the measured window (a slow system, a short run).
            result["note"] = f"no answer within the {self.options.duration_s:g} s measured window"
        return result


def _add_note(result: dict[str, Any], note: str) -> None:
    """A note beside the load's figures (and the verdicts that read them), after any it has."""
    result["note"] = f"{result['note']}; {note}" if result.get("note") else note


def serve_config(models: BenchModels, threads: int | None, options: BenchOptions) -> dict[str, Any]:
    config: dict[str, Any] = {
        "repository": str(Path(models.repository).resolve()),
        "scenarios": [
            {"name": s, "alias": "production"} for s in models.mix(len(models.lora) + len(models.frozen))
        ],
        "precision": models.precision,
    }
    if threads is not None:  # else labelwise serve's own default
        config["ort_intra_op_threads"] = threads
    config.update(options.serve_overrides)
    return config


def _start_labelwise(
    config: dict[str, Any], options: BenchOptions, port: int, stem: str, say: Callable[[str], None]
) -> ServerProcess:
    """`labelwise serve` on 127.0.0.1:port with this config (written to out_dir/<stem>.yaml)."""
    import yaml

    config_path = options.out_dir / f"{stem}.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    url = f"http://127.0.0.1:{port}"
    cmd = python_cmd(
        "-m", "labelwise.cli", "serve", "--config", str(config_path),
        "--host", "127.0.0.1", "--port", str(port),
    )  # fmt: skip
    log = options.out_dir / f"labelwise-{stem}.log"
    say(f"labelwise: starting `labelwise serve` on {url} (log {log})")
    return start_server("labelwise serve", cmd, url, log)


def measure_one_scenario_memory(
    models: BenchModels, threads: int | None, run: _Runner, say: Callable[[str], None]
) -> dict[str, Any]:
    """The issue's memory figure: `labelwise serve` with the primary scenario alone, its process tree's PSS
    after the 1-text c=32 load (totals and per process). The main server holds all bench scenarios."""
    options = run.options
    config = {
        **serve_config(models, threads, options),
        "scenarios": [{"name": models.primary, "alias": "production"}],
    }
    server = _start_labelwise(config, options, options.port + MEMORY_PORT_OFFSET, "serve-one", say)
    try:
        waited = wait_server_ready(server, options.ready_timeout_s)
        say(
            f"labelwise (one scenario): ready after {waited:.0f}s; "
            f"{MIX_LOAD[0]} for {options.duration_s:.0f}s"
        )
        result = run.load(server.url, [models.primary], MIX_LOAD[1], MIX_LOAD[2])
        result["load"] = MIX_LOAD[0]
        result["memory"] = server.memory_mb()
        result["processes"] = server.memory_by_process()
        return result
    finally:
        say("labelwise (one scenario): stopping the server")
        stop_server(server)


def fp32_version(models: BenchModels, say: Callable[[str], None]) -> int:
    """A version of the primary scenario with an fp32 graph: the served one when it has it, else its fp32
    re-export (a new version whose parent is the served one; made once, found again by later runs)."""
    from model_repository import ModelRepository
    from training.export.reexport import reexport_version

    repo = ModelRepository(Path(models.repository))
    served = repo.resolve(models.primary, "production")
    for version in sorted(repo.list_versions(models.primary), key=lambda v: (v != served, -v)):
        manifest = repo.load_manifest(models.primary, version)
        if (version == served or manifest.parent_version == served) and manifest.export("fp32") is not None:
            return version
    say(f"bench models: exporting {models.primary} v{served} to fp32 (once)")
    return reexport_version(repo, models.primary, served, "fp32").version


def measure_labelwise_fp32(
    models: BenchModels, threads: int | None, run: _Runner, say: Callable[[str], None]
) -> list[dict[str, Any]]:
    """labelwise serving the primary scenario's fp32 graph: the serving path against Infinity's fp32 folder
    (the same weights, the same precision)."""
    options = run.options
    version = fp32_version(models, say)
    config = {
        **serve_config(models, threads, options),
        "scenarios": [{"name": models.primary, "alias": str(version)}],
        "precision": "fp32",
    }
    server = _start_labelwise(config, options, options.port + FP32_PORT_OFFSET, "serve-fp32", say)
    try:
        waited = wait_server_ready(server, options.ready_timeout_s)
        say(f"labelwise fp32: ready after {waited:.0f}s")
        return _loads_on(server, models.primary, PEER_LOADS, run, f"labelwise fp32 (v{version})", say)
    finally:
        say("labelwise fp32: stopping the server")
        stop_server(server)


def _loads_on(
    server: ServerProcess,
    scenario: str,
    loads: tuple[tuple[str, int, int], ...],
    run: _Runner,
    name: str,
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Each (label, texts per request, concurrency) load on one scenario, with the tree's memory after it."""
    results = []
    for label, n_texts, concurrency in loads:
        say(f"{name}: {label} for {run.options.duration_s:.0f}s")
        result = run.load(server.url, [scenario], n_texts, concurrency)
        result["load"] = label
        result["memory"] = server.memory_mb()
        results.append(result)
    return results


def measure_labelwise(
    models: BenchModels, threads: int | None, run: _Runner, say: Callable[[str], None]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any] | None]:
    options = run.options
    config = serve_config(models, threads, options)
    server: ServerProcess | None = None
    if options.url is None:
        url = f"http://127.0.0.1:{options.port}"
        server = _start_labelwise(config, options, options.port, "serve", say)
    else:
        url = require_loopback(options.url)
    try:
        if server is not None:
            waited = wait_server_ready(server, options.ready_timeout_s)
            say(f"labelwise: ready after {waited:.0f}s")
        served = []
        for label, n_texts, concurrency in SERVED_LOADS:
            say(f"labelwise: {label} on {models.primary} for {options.duration_s:.0f}s")
            if label in BRACKETED_LOADS:
                result = run.bracketed_load(url, [models.primary], n_texts, concurrency, server)
                if "ceiling_now" in result:
                    now = result["ceiling_now"]
                    say(f"ceiling around it: {now['before']} / {now['after']} seq/s")
                elif result.get("note"):
                    say(f"labelwise: {result['note']}")
            else:
                result = run.load(url, [models.primary], n_texts, concurrency)
            result["load"] = label
            if server is not None:
                result["memory"] = server.memory_mb()
            served.append(result)
        mix = []
        if options.scenario_mix:
            available = len(models.lora) + len(models.frozen)
            points = [models.mix(n) for n in MIX_SIZES if n <= available]
            if models.frozen:  # a frozen scenario alone: what its rows cost unmixed, beside the LoRA one
                points.insert(1, [models.frozen[0]])
            for scenarios in points:
                n = len(scenarios)
                say(f"labelwise: {MIX_LOAD[0]} spread over {n} scenario(s) ({', '.join(scenarios)})")
                result = run.load(url, scenarios, MIX_LOAD[1], MIX_LOAD[2])
                result["load"] = MIX_LOAD[0]
                result["n_scenarios"] = n
                result["strategies"] = {
                    "lora": sum(s in models.lora for s in scenarios),
                    "frozen": sum(s in models.frozen for s in scenarios),
                }
                if server is not None:
                    result["memory"] = server.memory_mb()
                mix.append(result)
        return served, mix, config if server is not None else None  # a --url server's config is its own
    finally:
        if server is not None:
            say("labelwise: stopping the server")
            stop_server(server)


def measure_seed(
    models: BenchModels, threads: int | None, run: _Runner, say: Callable[[str], None]
) -> list[dict[str, Any]]:
    from model_repository import ModelRepository

    options = run.options
    repo = ModelRepository(models.repository)
    version_dir = repo.version_path(models.primary, repo.resolve(models.primary, "production"))
    url = f"http://127.0.0.1:{options.seed_port}"
    cmd = python_cmd(
        "-m", "loadtests.baselines.seed_server", "--version-dir", str(version_dir),
        "--port", str(options.seed_port), "--threads", str(threads or 0),  # 0: torch's default
    )  # fmt: skip
    say(f"seed baseline: starting on {url} (log {options.out_dir / 'seed-server.log'})")
    server = start_server("seed baseline", cmd, url, options.out_dir / "seed-server.log")
    try:
        waited = wait_server_ready(server, options.ready_timeout_s)
        say(f"seed baseline: ready after {waited:.0f}s")
        return _loads_on(server, models.primary, SERVED_LOADS, run, "seed baseline", say)
    finally:
        say("seed baseline: stopping")
        stop_server(server)


# What a step's failure (a peer's too) can raise: the bench's errors (not ready, a failed load), a child past
# its bound.
STEP_FAILURES = (LoadTestError, subprocess.TimeoutExpired)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def measure_infinity(
    models: BenchModels, run: _Runner, say: Callable[[str], None]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Infinity (optimum engine) on the primary scenario: fp32 export and labelwise's int8 graph.

    A peer that is not installed, or that fails, is a note in the report, not a failed bench. A variant
    that fails is kept among the systems with `failed` and the loads it measured before, so that the
    best Infinity is not read from the others (bench_report.best_peer).
    """
    options = run.options
    missing = infinity_missing(options.peers_dir)
    if missing:
        say(f"infinity: skipped: {missing}")
        return [], [f"Infinity not measured: {missing}"]
    # Beside the bench scenarios (an underscore folder is not a scenario), so each repository has its own.
    peer_models = Path(models.repository) / PEER_MODELS / "infinity"
    try:
        folders = prepare_infinity_models(models.repository, models.primary, peer_models, say)
    except STEP_FAILURES as exc:
        say(f"infinity: skipped: {_first_line(exc)}")
        return [], [f"Infinity not measured: {_first_line(exc)}"]
    url = f"http://127.0.0.1:{options.peer_port}"
    systems, notes = [], []
    for variant in options.infinity_variants:
        name = f"Infinity 0.0.78 optimum {variant}"
        if variant not in folders:
            notes.append(f"{name} not measured: {models.primary} has no {variant} graph")
            continue
        log = options.out_dir / f"infinity-{variant}.log"
        say(f"infinity: starting {name} on {url} (log {log})")
        system: dict[str, Any] = {"system": name, "variant": variant, "spec": INFINITY_SPEC, "results": []}
        systems.append(system)
        try:
            server = _start_infinity(name, variant, folders[variant], models.primary, log, options)
        except STEP_FAILURES as exc:  # a server that cannot start is a note too
            why = _first_line(exc).removeprefix(f"{name}: ")
            say(f"infinity {variant}: not started: {why}")
            notes.append(f"{name} not measured: {why}")
            system["failed"] = why
            continue
        try:
            waited = wait_server_ready(server, options.ready_timeout_s)
            say(f"infinity {variant}: ready after {waited:.0f}s")
            for label, n_texts, concurrency in PEER_LOADS:
                say(f"infinity {variant}: {label} for {options.duration_s:.0f}s")
                result = run.load(url, [models.primary], n_texts, concurrency, shape="infinity")
                result["load"] = label
                result["memory"] = server.memory_mb()
                system["results"].append(result)
        except STEP_FAILURES as exc:
            # Not only BenchError: a peer that never gets ready raises ServerNotUpError (a TimeoutError),
            # a load generator past its bound subprocess.TimeoutExpired. Either is a note, not the end.
            say(f"infinity {variant}: failed: {_first_line(exc)}")
            notes.append(f"{name} failed: {_first_line(exc)} (log {log})")
            system["failed"] = _first_line(exc)
        finally:
            say(f"infinity {variant}: stopping")
            stop_server(server)
    return systems, notes


def _start_infinity(
    name: str, variant: str, folder: Path, scenario: str, log: Path, options: BenchOptions
) -> ServerProcess:
    """Infinity serving `folder` on the peer port; BenchError when it cannot start (its port is taken, its
    script cannot run)."""
    cmd = infinity_command(options.peers_dir, scenario, options.peer_port)
    try:
        return start_server(
            name, cmd, f"http://127.0.0.1:{options.peer_port}", log,
            env=infinity_env(options.peers_dir, variant), cwd=folder, ready_path="/health",
        )  # fmt: skip
    except OSError as exc:  # not executable, or the interpreter its #! line names is gone (a broken venv)
        raise BenchError(
            f"cannot run {cmd[0]} ({exc.strerror or exc}): the script or the interpreter its #! line names "
            "is missing or not executable; rerun `make peers`"
        ) from exc


def machine_info() -> dict[str, Any]:
    import psutil

    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from model_repository import code_revision

    out = {"python": sys.version.split()[0], "labelwise_commit": code_revision()[:12]}
    for name in (
        "onnxruntime",
        "ray",
        "tokenizers",
        "torch",
        "transformers",
        "fastapi",
        "uvicorn",
        "aiohttp",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out
