"""`labelwise serve|promote`: labelwise.server and labelwise.catalog do the work; ray loads only to serve."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from labelwise.catalog import UNREADABLE, promote
from labelwise.server import (
    ServePlan,
    plan_server,
    refuse_what_replicas_refuse,
    run_server,
    serve_on_cluster,
)
from model_repository import (
    ModelRepository,
    RepositoryError,
    UsageError,
    is_object_store,
    missing_local_root,
    parse_root,
)

from .options import refuse_missing_repository, repository_path

logger = logging.getLogger("labelwise")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
    app.command("promote")(promote_command)


def serve_command(
    ctx: typer.Context,
    # str, not Path: typer makes "" into Path('.'), which would serve the current folder.
    repository: str | None = typer.Option(
        None,
        "--repository",
        "-r",
        envvar="LABELWISE_REPOSITORY",
        help="Model repository (a folder or s3://BUCKET/PREFIX), in place of the config's; the variable only "
        "where the config sets none, like every LABELWISE_* variable.",
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Serve config (a `serve deploy` file or flat ServingConfig fields); default: the chart's "
        "helm/labelwise/files/serve-config.yaml when present, else ServingConfig's defaults.",
    ),
    host: str | None = typer.Option(None, help="Address the HTTP proxy binds (default: the config's)."),
    port: int | None = typer.Option(None, help="HTTP port (default: the config's, else 8000)."),
    ingress_mode: str | None = typer.Option(
        None, help="combined or separate (default: the config's, else combined)."
    ),
    direct_ingress: bool = typer.Option(
        True,
        "--direct-ingress/--proxy",
        help="direct: the ingress replica answers HTTP on host:port itself (Ray Serve's direct ingress, "
        "no proxy hop; measured faster, see docs/benchmarks.md); proxy: Serve's HTTP proxy forwards to "
        "the replicas (what a cluster runs). Direct with num_replicas N: the N replicas share the port "
        "(SO_REUSEPORT); it needs a fixed num_replicas.",
    ),
    address: str | None = typer.Option(
        None,
        "--address",
        help="Deploy onto this running Ray cluster instead of starting a local one, and return once the "
        "app runs (it keeps running there): ray://HOST:10001 (Ray Client), HOST:6379 (the GCS, from a "
        "node of the cluster) or auto. Always Serve's proxy; host and port apply when Serve is not "
        "running there yet.",
    ),
    proxy_location: str | None = typer.Option(
        None,
        help="With --address: EveryNode, HeadOnly or Disabled, in any case (where Serve runs its HTTP "
        "proxies); default: the Serve config's proxy_location, else EveryNode.",
    ),
) -> None:
    """Start a local Ray on loopback and serve every configured scenario until Ctrl-C (or, with
    --address, deploy them onto a running cluster)."""
    plan = plan_from_options(
        ctx,
        repository,
        config,
        ingress_mode=ingress_mode,
        host=host,
        port=port,
        direct_ingress=direct_ingress and address is None,
        local=address is None,
    )
    if address is not None:
        status = serve_on_cluster(plan, address, proxy_location=proxy_location)
        typer.echo("\n".join(status.lines()))
        return
    _require_local_repository(plan)
    # The replicas run here: what one would refuse at start (CUDA or fp16 without them) is refused now,
    # in doctor's words, not after Ray started them.
    refuse_what_replicas_refuse(plan.config)
    from serving.local_ray import full_head_requested, keep_unused_modules_out

    if not full_head_requested():
        keep_unused_modules_out()  # this process only serves: no pandas (serving.local_ray)
    run_server(
        plan.args,
        plan.host,
        plan.port,
        app_name=plan.app_name,
        route_prefix=plan.route_prefix,
        direct_ingress=plan.direct_ingress,
        ingress_replicas=plan.ingress_replicas,
    )


def plan_from_options(
    ctx: typer.Context,
    repository: str | None,
    config: Path | None,
    *,
    ingress_mode: str | None = None,
    host: str | None = None,
    port: int | None = None,
    direct_ingress: bool = True,
    local: bool = True,
) -> ServePlan:
    """`labelwise serve`'s options read into its checked plan (plan_server), which `labelwise doctor`
    reads the same way, so that doctor's verdict is serve's: an empty --repository is refused, and
    LABELWISE_REPOSITORY (the option's variable) fills the repository only where the config names none."""
    if repository is not None and not repository.strip():
        raise UsageError(
            "--repository is empty: pass a folder or an object-store URL (omit it for the config's, else "
            "./var/model-repository)"
        )
    fallback = None
    # By name: typer ships its own copy of click, whose ParameterSource is not click's.
    if (
        repository is not None
        and getattr(ctx.get_parameter_source("repository"), "name", None) == "ENVIRONMENT"
    ):
        # LABELWISE_REPOSITORY fills the field only where the config file sets none, as every LABELWISE_*
        # variable does (the Docker image sets it; a mounted config's wins).
        repository, fallback = None, str(Path(repository))
    return plan_server(
        config,
        repository=Path(repository) if repository is not None else None,
        repository_fallback=fallback,
        ingress_mode=ingress_mode,
        host=host,
        port=port,
        direct_ingress=direct_ingress,
        local=local,
    )


def _require_local_repository(plan: ServePlan) -> None:
    """A local repository folder that does not exist (or is a file) is a typo (or the wrong folder: the
    demo publishes to var/demo-repository), not an empty repository to serve: refused (exit 2) before Ray
    starts. A listed scenario that does not resolve there is named in a warning, not refused: replicas
    poll their aliases, so one published later is served then (docs/serving.md, "Hot reload")."""
    root = plan.config.repository
    missing = missing_local_root(root)
    if missing is not None:
        raise UsageError(
            f"repository {missing} does not exist: nothing to serve (publish with `labelwise train`, or "
            "pass --repository; the demo's is var/demo-repository)"
        )
    if is_object_store(root):
        return
    folder = Path(parse_root(root))
    if not folder.is_dir():
        raise UsageError(f"repository {folder} is a file, not a folder of scenarios: pass --repository")
    repo = ModelRepository(folder)
    for spec in plan.config.scenarios or ():
        try:
            repo.resolve(spec.name, spec.alias)
        except (RepositoryError, ValueError, KeyError, TypeError) as exc:  # as the replicas' poll catches
            logger.warning(
                "scenario %s: cannot resolve %r in %s (%s: %s); served once it resolves there, /readyz "
                "answers 503 until then",
                spec.name,
                spec.alias,
                folder,
                type(exc).__name__,
                exc,
            )


def promote_command(
    scenario: str = typer.Option(..., "--scenario", "-s", help="Scenario name."),
    version: int = typer.Option(..., "--version", "-v", min=1, help="Version to point the alias at."),
    alias: str = typer.Option("production", "--alias", "-a", help="Alias to switch."),
    repository: Path | None = typer.Option(
        None,
        "--repository",
        "-r",
        parser=repository_path,
        envvar="LABELWISE_REPOSITORY",
        help="Model repository: a folder or s3://BUCKET/PREFIX (default ./var/model-repository).",
    ),
) -> None:
    """Point an alias at a version (verified first); serving replicas pick it up on their next poll."""
    refuse_missing_repository(repository)
    before = promote(ModelRepository(repository), scenario, version, alias)
    if before is None:
        moved = f"-> {version} (new)"
    elif before == UNREADABLE:
        moved = f"-> {version} (its alias file was unreadable: rewritten)"
    else:
        moved = f"{before} -> {version}"
    typer.echo(f"{scenario}: {alias} {moved}")
