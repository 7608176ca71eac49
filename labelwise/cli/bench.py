"""`labelwise bench`: one bounded benchmark run on this machine (loadtests/bench.py does the work)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from model_repository.errors import UsageError, validation_problems
from model_repository.passes import MAX_INTRA_OP_THREADS

# What `--lora-modes` reads: loadtests/bench_lora.py starts its own servers (its own config), drives them
# with the Python load generator, once. Any other option given with it is refused rather than dropped.
LORA_OPTIONS = frozenset(
    {"lora_modes", "lora_scenarios", "duration_s", "warmup_s", "threads", "quick", "repository", "out_dir",
     "port", "json_only"}
)  # fmt: skip
# Options fields whose option is not --field-name.
_FLAG_OF_FIELD = {
    "serve_overrides": "--serve-arg",
    "modes": "--lora-modes",
    "scenario_counts": "--lora-scenarios",
}


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_command)


def _serve_args(items: list[str]) -> dict[str, object]:
    import yaml

    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(
                f"--serve-arg {item!r}: expected FIELD=VALUE, e.g. batch_wait_timeout_s=0.002"
            )
        out[key.strip()] = yaml.safe_load(value)
    return out


def bench_command(
    ctx: typer.Context,
    url: str | None = typer.Option(
        None, help="Measure a server already running on 127.0.0.1 (serving the bench scenarios) instead."
    ),
    duration_s: float = typer.Option(10.0, help="Measured seconds per load (each after a warm-up)."),
    warmup_s: float = typer.Option(2.0, help="Warm-up seconds before each measured load."),
    threads: int | None = typer.Option(
        None,
        min=0,
        max=MAX_INTRA_OP_THREADS,
        help="ORT/torch intra-op threads for the labelwise server and the seed; 0 = cores. "
        "Unset: each system's own default (the ceiling always uses every core).",
    ),
    quick: bool = typer.Option(False, "--quick", help="3 s loads, 1 s warm-ups: a smoke run, noisy figures."),
    seed_baseline: bool = typer.Option(True, "--seed/--no-seed", help="Measure the seed baseline too."),
    scenario_mix: bool = typer.Option(True, "--mix/--no-mix", help="Measure 1/4/8-scenario mixes too."),
    same_precision: bool = typer.Option(
        True, "--fp32/--no-fp32", help="Also serve the primary scenario's fp32 graph (vs Infinity fp32)."
    ),
    memory_one_scenario: bool = typer.Option(
        True, "--memory/--no-memory", help="Also measure the memory of a server holding one scenario."
    ),
    rebuild_models: bool = typer.Option(False, help="Retrain the bench scenarios even when cached."),
    repository: Path = typer.Option(Path("var/bench-repository"), help="Bench-only model repository."),
    out_dir: Path = typer.Option(Path("var/bench"), help="JSON, markdown and server logs go here."),
    port: int = typer.Option(8123, help="Port for the labelwise server the bench starts."),
    serve_arg: list[str] = typer.Option(
        [], "--serve-arg", help="Extra ServingConfig field for the started server, FIELD=VALUE (repeatable)."
    ),
    attach_timeout_s: float = typer.Option(15.0, help="With --url: how long to wait for /readyz."),
    json_only: bool = typer.Option(False, "--json", help="Print only the JSON report."),
    load_driver: str = typer.Option(
        "auto", help="HTTP load client: auto (wrk when on PATH, `make wrk`), wrk, or python."
    ),
    wrk_threads: int = typer.Option(
        1, min=1, max=2, help="wrk threads (-t); 1 leaves the cores to the servers."
    ),
    infinity: bool = typer.Option(
        True, "--infinity/--no-infinity", help="Also measure Infinity when `make peers` installed it."
    ),
    infinity_variants: str = typer.Option(
        "fp32,int8", help="Infinity model folders: fp32 (optimum export), int8 (labelwise's int8 graph)."
    ),
    peers_dir: Path = typer.Option(Path("var/peers"), help="Where `make peers` put the peers' venvs."),
    rounds: int = typer.Option(
        1,
        min=1,
        max=9,
        help="Head-to-head rounds: the ceiling, labelwise and Infinity measured again in each; tables and "
        "targets take each figure's median round (the host's speed drifts within minutes).",
    ),
    lora_modes: str | None = typer.Option(
        None,
        help="Instead of the main bench: compare lora_mode values (e.g. merged,shared) over many MiniLM "
        "LoRA scenarios (loadtests/bench_lora.py).",
    ),
    lora_scenarios: str = typer.Option("1,4,8,16,32", help="With --lora-modes: LoRA scenario counts."),
) -> None:
    """Measure the engine-alone ceiling, the served figures, the seed baseline and scenario mixes."""
    from rich.console import Console

    if lora_modes is not None:
        what = "--lora-modes (it starts its own servers, with the Python load generator, once)"
        _refuse_unread_options(ctx, LORA_OPTIONS, what)
        _bench_lora(
            lora_modes, lora_scenarios, repository, out_dir, port, threads, quick, duration_s, warmup_s,
            json_only,
        )  # fmt: skip
        return
    _refuse_unread_options(ctx, set(ctx.params) - {"lora_scenarios"}, "the bench without --lora-modes")

    from loadtests.bench import BenchOptions, run_bench
    from loadtests.loopback import require_loopback

    console = Console(stderr=True, highlight=False)
    if url is not None:
        require_loopback(url)  # NotLoopbackError: exit 2 before anything starts
    options = _options(
        BenchOptions,
        url=url,
        duration_s=3.0 if quick else duration_s,
        warmup_s=1.0 if quick else warmup_s,
        ceiling_seconds_per_size=1.0 if quick else 2.0,
        threads=threads,
        seed_baseline=seed_baseline,
        scenario_mix=scenario_mix,
        same_precision=same_precision,
        memory_one_scenario=memory_one_scenario,
        rebuild_models=rebuild_models,
        repository=repository,
        out_dir=out_dir,
        port=port,
        serve_overrides=_serve_args(serve_arg),
        attach_timeout_s=attach_timeout_s,
        load_driver=_choice(load_driver, ("auto", "wrk", "python"), "--load-driver"),
        wrk_threads=wrk_threads,
        infinity=infinity,
        infinity_variants=[
            _choice(v.strip(), ("fp32", "int8"), "--infinity-variants") for v in infinity_variants.split(",")
        ],
        peers_dir=peers_dir,
        rounds=rounds,
    )
    from loadtests.bench_report import render_markdown

    _run_and_print(run_bench, options, "bench", render_markdown, json_only, console)


def _refuse_unread_options(ctx: typer.Context, read: set[str] | frozenset[str], what: str) -> None:
    """UsageError (exit 2) naming each option given, on the command line or through its env var, that
    `what` does not read: a flag that would silently change nothing."""
    given = ("COMMANDLINE", "ENVIRONMENT")  # by name: typer's Context has its own (vendored) click enum
    unread = [
        "/".join(p.opts + p.secondary_opts)
        for p in ctx.command.params
        if p.name not in read and getattr(ctx.get_parameter_source(p.name or ""), "name", None) in given
    ]
    if unread:
        raise UsageError(f"{what} does not use {', '.join(unread)}: drop them")


def _options(model: Any, **fields: Any) -> Any:
    """model(**fields); a value pydantic refuses (out of range, a port past 65535) is one UsageError line
    naming its option (exit 2), not a traceback."""
    from pydantic import ValidationError

    try:
        return model(**fields)
    except ValidationError as exc:
        raise UsageError(
            validation_problems(exc, name=lambda loc: _flag(str(loc[0])) if loc else "")
        ) from None


def _flag(field: str) -> str:
    return _FLAG_OF_FIELD.get(field, "--" + field.replace("_", "-"))


def _choice(value: str, allowed: tuple[str, ...], option: str) -> str:
    if value not in allowed:
        raise typer.BadParameter(f"{option} {value!r}: choose one of {', '.join(allowed)}")
    return value


def _bench_lora(
    modes: str,
    counts: str,
    repository: Path,
    out_dir: Path,
    port: int,
    threads: int | None,
    quick: bool,
    duration_s: float,
    warmup_s: float,
    json_only: bool,
) -> None:
    from rich.console import Console

    from loadtests.bench_lora import LoraBenchOptions, render_lora_markdown, run_lora_bench

    console = Console(stderr=True, highlight=False)
    try:
        scenario_counts = [int(c) for c in counts.split(",") if c.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"expected comma-separated integers, got {counts!r}") from exc
    options = _options(
        LoraBenchOptions,
        repository=repository,
        out_dir=out_dir / "lora",
        modes=[m.strip() for m in modes.split(",") if m.strip()],
        scenario_counts=scenario_counts,
        port=port,
        threads=threads,
        duration_s=3.0 if quick else duration_s,
        warmup_s=1.0 if quick else warmup_s,
    )
    _run_and_print(run_lora_bench, options, "bench-lora", render_lora_markdown, json_only, console)


def _run_and_print(run: Any, options: Any, tag: str, render: Any, json_only: bool, console: Any) -> None:
    """Run one benchmark; print its markdown (unless --json-only) and its JSON report."""
    from rich.markup import escape

    # escaped: a message names paths (--out-dir, a log), where Rich would read `[...]` as markup
    report = run(options, say=lambda msg: console.print(f"[cyan]\\[{tag}][/cyan] {escape(msg)}"))
    if not json_only:
        typer.echo(render(report))
        typer.echo(f"JSON: {report['json_path']}")
    typer.echo(json.dumps(report, indent=None if not json_only else 2))
