"""`labelwise doctor`: what the engine will use here: providers, threads, precision per scenario, GPU."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import typer

from labelwise.extras import require


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_command)


def gpus() -> list[str]:
    """'name, memory' per GPU from nvidia-smi; empty when there is none (or no driver)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def diagnose(args: dict[str, Any], cores: int | None = None) -> dict[str, Any]:
    """The engine's choices for a ServingConfig's fields, as a replica of a local `labelwise serve` would
    make them on `cores` cores (None: the cores this process may use), sized by serve's own plan (nothing
    is served)."""
    from pydantic import ValidationError

    from labelwise.file_scoring import settings_problem
    from labelwise.server import engine_choice, plan_local_sizing, replica_sizing
    from model_repository import ModelRepository, missing_local_root, parse_root
    from model_repository.errors import UsageError
    from serving import ServingConfig
    from serving.engine import EngineSettings, available_providers, installed_ort
    from serving.engine.loader import not_for_this_version
    from serving.local_ray import local_cores

    require("onnxruntime")
    try:
        config = ServingConfig(**args)
    except ValidationError as exc:  # a config file's field, or a LABELWISE_* variable, that is wrong
        raise UsageError(f"invalid serving settings: {settings_problem(exc)}") from None
    # Serve's sizing, not the raw config's: its threads follow the cores it may use (affinity, quota).
    cores = local_cores() if cores is None else cores
    plan_local_sizing(dict(args), config, cores)
    report: dict[str, Any] = {
        "onnxruntime_packages": installed_ort(),
        "providers_available": available_providers(),
        "gpus": gpus(),
        "num_gpus": config.num_gpus,
        "cpu_cores": cores,
        "replica_sizing": replica_sizing(config),
    }
    if len(report["onnxruntime_packages"]) > 1:
        report["problem"] = "onnxruntime and onnxruntime-gpu are both installed: keep only one"
    try:
        providers, precisions = engine_choice(config)
    except Exception as exc:  # the refusal a replica would raise at start, shown instead of raised
        report["refused"] = str(exc)
        return report
    report["providers"] = providers
    report["intra_op_threads"] = config.ort_threads
    report["precision_order"] = precisions
    missing = missing_local_root(config.repository)
    if missing is not None:  # `labelwise serve` refuses it (exit 2): not an empty repository to report
        report["refused"] = f"repository {missing} does not exist: nothing to serve"
        return report
    local = parse_root(config.repository)
    if isinstance(local, Path) and not local.is_dir():  # refused by `labelwise serve` too
        report["refused"] = f"repository {local} is a file, not a folder of scenarios: nothing to serve"
        return report
    repo = ModelRepository(config.repository)
    report["leftover_drafts"] = leftover_drafts(repo)
    names = [s.name for s in config.scenarios] if config.scenarios else repo.list_scenarios()
    aliases = {s.name: s.alias for s in config.scenarios or ()}
    shared = EngineSettings(providers, precisions, lora_mode="shared", lora_table_rank=config.lora_table_rank)
    graphs: dict[tuple[str, str], Any] = {}  # shared graphs verified so far (base key, folder) -> base.json
    scenarios = {}
    for name in names:
        alias = aliases.get(name, config.default_alias)
        try:
            version = repo.resolve(name, alias)
            manifest = repo.load_manifest(name, version)
        except Exception as exc:
            scenarios[name] = f"not servable with alias {alias!r}: {exc}"
            continue
        # as a replica's loader does: a file changed since publishing, a base folder moved aside, a folder
        # copied from another version (verified by the number the alias names, not the one its manifest says)
        try:
            repo.verify(name, version)
        except Exception as exc:
            scenarios[name] = f"v{version}: refused at load: {exc}"
            continue
        have = [e.precision for e in manifest.exports]
        if manifest.strategy == "frozen" and manifest.base_encoder is not None:
            have = list(manifest.base_encoder.precisions)
        joins_shared = manifest.strategy == "lora" and config.lora_mode == "shared"
        if joins_shared:
            read, chosen = _shared_graph(repo, manifest, shared, graphs)
            scenarios[name] = f"v{manifest.version} lora (shared): " + (
                f"{chosen} from {read} (exported: {', '.join(have) or 'none'})" if chosen else read
            )
        else:
            chosen = next((p for p in precisions if p in have), None)
            scenarios[name] = (
                f"v{manifest.version} {manifest.strategy}: {chosen} (exported: {', '.join(have) or 'none'})"
                if chosen
                else f"v{manifest.version}: none of {precisions} exported (has {have}); refused at load"
            )
        wanted = precisions[0]
        kept_apart = not_for_this_version(manifest, wanted) if joins_shared and wanted in have else None
        if chosen and chosen != wanted and kept_apart:
            # exported in it, and refused the shared graph of it (its int8 guard): exporting it again runs
            # the same guard on the same rows
            scenarios[name] += (
                f"; not {wanted}: {kept_apart}, and the shared {wanted} graph quantises every MatMul of the "
                f"base (exporting {wanted} again keeps them fp32 again); lora_mode merged serves its own "
                f"{wanted} graph"
            )
        elif chosen and chosen != wanted:
            # e.g. a GPU replica asking for fp16 given a version trained and exported on a CPU machine
            scenarios[name] += (
                f"; not {wanted}: `labelwise export -s {name} -v {manifest.version} -p {wanted}` "
                + ("adds it, with its base's multi-adapter graph, " if joins_shared else "adds it ")
                + "as a new version"
            )
    report["scenarios"] = scenarios
    return report


def leftover_drafts(repo: Any) -> list[Any]:
    """Drafts interrupted publishes left (kill -9, a lost node), often hundreds of MB each; an object-store
    repository's are in its local cache. Publishing removes those over a day old itself."""
    from model_repository import ObjectStoreRepository
    from model_repository.repository import find_drafts

    return find_drafts(repo.cache.root if isinstance(repo, ObjectStoreRepository) else repo.root)


def _age(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _shared_graph(
    repo: Any, manifest: Any, settings: Any, graphs: dict[tuple[str, str], Any]
) -> tuple[str, str | None]:
    """(the multi-adapter graph `<base key>/<folder>` lora_mode shared serves a LoRA version from, its
    precision), chosen by the loader's own rules; (why it is refused at load, None) when none fits."""

    from model_repository import GraphSpec, RepositoryError, layout
    from model_repository.multi_adapter import version_lora_rank
    from serving.engine.loader import check_shared_adapter, shared_adapter, shared_graph_folder
    from serving.errors import ModelLoadError

    base = manifest.base_encoder
    if base is None or manifest.head is None or layout.LORA_FILE not in manifest.files:
        return (
            f"refused at load: no base_encoder, head or {layout.LORA_FILE} (serve it with lora_mode merged)",
            None,
        )
    # an object store's version is in the local cache once served: its rank is read there (None: not yet)
    version_folder = repo.version_path(manifest.scenario, manifest.version)
    rank = version_lora_rank(version_folder)
    try:
        folder = shared_graph_folder(repo, manifest, rank, settings)
        # verified (its checksums) as the replica's MultiAdapterCache does before it reads the spec: a graph
        # whose bytes changed is refused at load, whatever its base.json says; once a graph, as the replica's
        # cache verifies each graph once however many scenarios share it (`graphs`: verified so far)
        if (base.key, folder) not in graphs:
            graphs[base.key, folder] = repo.verify_base(base.key, folder)
        info = graphs[base.key, folder]
        if rank is not None:  # the adapter is here: checked against the graph's spec, as the loader does
            spec = GraphSpec.from_json(info.get("info", {}).get("spec", {}))
            check_shared_adapter(spec, shared_adapter(manifest, version_folder), manifest, folder)
    except (ModelLoadError, RepositoryError) as exc:
        return f"refused at load: {exc}", None
    return f"{base.key}/{folder}", layout.precision_of_folder(folder)


def doctor_command(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Serve config to diagnose, as `labelwise serve --config` (default: the chart's "
        "helm/labelwise/files/serve-config.yaml when present, else ServingConfig's defaults).",
    ),
    # str, not Path: typer makes "" into Path('.'), which would diagnose the current folder.
    repository: str | None = typer.Option(
        None,
        "--repository",
        "-r",
        envvar="LABELWISE_REPOSITORY",
        help="Model repository (a folder or s3://BUCKET/PREFIX), in place of the config's (default: the "
        "config's, else ./var/model-repository); the variable only where the config sets none, as "
        "`labelwise serve`.",
    ),
    ingress_mode: str | None = typer.Option(None, help="As `labelwise serve --ingress-mode`."),
    direct_ingress: bool = typer.Option(
        True,
        "--direct-ingress/--proxy",
        help="As `labelwise serve`: direct ingress (its default) needs a fixed num_replicas; --proxy "
        "diagnoses a serve behind Serve's proxy (autoscaling allowed).",
    ),
) -> None:
    """Print what the engine will use here: providers, threads, precision per scenario, GPU name and memory.

    Reads the config as a local `labelwise serve` with the same options does, and refuses (exit 2) what
    it refuses before starting. Exits 2 when a replica with this config would refuse to start (e.g. CUDA
    asked for and absent). Each scenario's version is verified (its files hashed) as a replica loads it.
    """
    from pydantic import ValidationError

    from labelwise.file_scoring import settings_problem
    from labelwise.server import REPLICA_REFUSAL
    from model_repository.errors import EXIT_USAGE, UsageError

    from .serve import plan_from_options

    try:
        plan = plan_from_options(
            ctx, repository, config, ingress_mode=ingress_mode, direct_ingress=direct_ingress
        )
    except UsageError as exc:
        if isinstance(exc.__cause__, ValidationError):  # doctor's one-line wording of it
            raise UsageError(f"invalid serving settings: {settings_problem(exc.__cause__)}") from None
        raise
    report = diagnose(plan.args)
    packages = ", ".join(f"{name} {version}" for name, version in report["onnxruntime_packages"].items())
    typer.echo(f"onnxruntime packages: {packages or 'none'}")
    typer.echo(f"providers available: {', '.join(report['providers_available'])}")
    typer.echo(f"GPUs: {'; '.join(report['gpus']) or 'none visible (nvidia-smi)'}")
    typer.echo(f"num_gpus per replica: {report['num_gpus']:g}; CPU cores: {report['cpu_cores']}")
    if "problem" in report:
        typer.echo(f"problem: {report['problem']}")
    if "refused" in report:
        typer.echo(f"error: {REPLICA_REFUSAL}: {report['refused']}", err=True)
        raise typer.Exit(EXIT_USAGE)  # as `labelwise serve` refuses the same settings before Ray starts
    typer.echo(f"providers used: {', '.join(report['providers'])}")
    typer.echo(f"ORT intra-op threads: {report['intra_op_threads']} ({report['replica_sizing']})")
    typer.echo(f"precision order: {' > '.join(report['precision_order'])}")
    for name, what in report["scenarios"].items():
        typer.echo(f"  {name}: {what}")
    if not report["scenarios"]:
        typer.echo("  (no scenario in the repository)")
    drafts = report["leftover_drafts"]
    if drafts:
        from model_repository.repository import STALE_DRAFT_S

        total = sum(d.size_bytes for d in drafts)
        typer.echo(f"leftover drafts (publishes that never finished): {len(drafts)}, {total / 1e6:.1f} MB")
        for draft in drafts:
            typer.echo(f"  {draft.path}: {draft.size_bytes / 1e6:.1f} MB, {_age(draft.age_s)} old")
        typer.echo(
            "  remove one with `rm -rf <path>` once no publish is running on any machine sharing the "
            f"repository; a publish to its scenario or base removes those over {STALE_DRAFT_S / 3600:g} h old"
        )
