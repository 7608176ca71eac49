"""Options shared by `labelwise train|compare|evaluate|tune|robustness`, and their logging set-up."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import typer

from model_repository.errors import LabelwiseError
from model_repository.layout import file_in_the_way, is_number, why_not_a_folder
from model_repository.storage import parse_root

ScenarioOpt = typer.Option(
    ..., "--scenario", "-s", help="Packaged scenario name (e.g. sentiment) or a scenario YAML."
)
BaseModelOpt = typer.Option(
    None,
    "--base-model",
    "-m",
    help="Hub id (offline cache), local folder, or 'minilm' (packaged MiniLM); default distilroberta-base.",
)
DataOpt = typer.Option(None, "--data", help="Train file (csv, jsonl, parquet); overrides the scenario's.")
ValDataOpt = typer.Option(
    None,
    "--validation-data",
    help="Validation file; default: with --data, validation.<ext> beside it (not the train file itself), "
    "else the scenario's; else a split of train.",
)
DataDirOpt = typer.Option(
    None,
    "--data-dir",
    envvar="LABELWISE_DATA_DIR",
    help="Folder of <scenario>/ data folders (default: ../shared/data beside the checkout).",
)
MaxTrainOpt = typer.Option(
    None, "--max-train-samples", help="Stratified cap on train rows (at least one row of every class)."
)
MaxEvalOpt = typer.Option(
    None, "--max-eval-samples", help="Stratified cap on validation rows (at least one row of every class)."
)
EpochsOpt = typer.Option(
    None,
    "--epochs",
    help="Training epochs, exactly (default: the scenario's, which its min_train_steps may raise on a "
    "small train set).",
)
MaxStepsOpt = typer.Option(
    None,
    "--max-steps",
    help="Train this many optimizer steps whatever --epochs says (every strategy); early stopping may end "
    "it sooner.",
)
BatchOpt = typer.Option(None, "--batch-size", help="Rows per training step.")
LrOpt = typer.Option(None, "--learning-rate", "--lr", help="Peak learning rate.")
MaxLenOpt = typer.Option(None, "--max-length", help="Truncation length in tokens.")
WeightsOpt = typer.Option(
    None,
    "--class-weights",
    help="auto | on | off (default: the scenario's). auto: on when the max/min class count ratio exceeds "
    "the scenario's imbalance_ratio (3 unless set), off with weighted sampling.",
)
SamplingOpt = typer.Option(
    None, "--weighted-sampling/--no-weighted-sampling", help="Class-balanced sampling."
)
SeedOpt = typer.Option(42, "--seed", help="Random seed.")
PatienceOpt = typer.Option(
    None,
    "--early-stopping-patience",
    help="Evaluations without macro-F1 gain (default: the scenario's for the strategy, else 2); 0 disables.",
)


def repository_path(value: str) -> Path:
    """--repository as typed: typer made "" into Path('.'), so `-r "$UNSET"` acted on the current folder.
    An empty (or blank) value is refused (exit 2)."""
    if not value.strip():
        raise typer.BadParameter("is empty: give the repository's folder or object-store URL")
    try:  # a URL is checked as one here: Path("s3://") is the folder "s3:", said not to exist
        root = parse_root(value)
    except LabelwiseError as exc:
        raise typer.BadParameter(str(exc)) from None
    # a file:// URL as the folder it names: Path() makes `file://localhost/x` into `file:/localhost/x`,
    # which is the folder /localhost/x
    return root if isinstance(root, Path) else Path(value)


def version_ref(value: str) -> str:
    """A version as typed (a number, an alias or 'latest'), read as promote's --version reads a number:
    surrounding spaces dropped (`-v " 1"` was refused as an alias name with spaces), and one below 1 refused
    (exit 2) naming the option or argument (it was looked up as "no version 0", exit 1). An alias is checked
    as typed, as promote's --alias is."""
    typed = value.strip()
    number = typed.removeprefix("-")
    if not is_number(number):
        return value
    if number != typed or not number.strip("0"):
        raise typer.BadParameter(f"{typed}: versions are numbered from 1")
    return typed


# --version of the commands that read one published version (evaluate, export, export-bench, robustness)
VersionOpt = typer.Option(
    "latest", "--version", "-v", parser=version_ref, help="Version number, alias or 'latest'."
)

RepoOpt = typer.Option(
    None,
    "--repository",
    "-r",
    parser=repository_path,
    envvar="LABELWISE_REPOSITORY",
    help="Model repository: a folder or s3://BUCKET/PREFIX (default ./var/model-repository).",
)
OutOpt = typer.Option(
    None,
    "--output-dir",
    "-o",
    help="Run folder (default runs/<scenario>/..., runs/ being $LABELWISE_RUNS_DIR when that is set).",
)
LoraROpt = typer.Option(None, "--lora-r", help="LoRA rank.")
LoraAlphaOpt = typer.Option(None, "--lora-alpha", help="LoRA alpha.")
LoraDropoutOpt = typer.Option(None, "--lora-dropout", help="LoRA dropout.")
LoraTargetsOpt = typer.Option(
    None, "--lora-target-modules", help="Comma-separated modules, e.g. query,value."
)
LoraPoolerOpt = typer.Option(
    None,
    "--lora-train-pooler/--lora-frozen-pooler",
    help="LoRA on BERT-like encoders: train the pooler with the head (as RoBERTa's head trains its "
    "dense layer) or keep the base's. Default: the scenario's setting.",
)


def require_training(*also: str) -> None:
    """The training extra's modules a command needs (torch, transformers, and `also`), checked before it
    does anything: an install without the extra (the Docker image's serving one) is told the pip command
    (MissingExtraError, exit 2), not shown a traceback from deep inside training."""
    from labelwise.extras import require

    for module in ("torch", "transformers", *also):
        require(module)


def refuse_missing_repository(repository: Path | None) -> None:
    """A local --repository (or LABELWISE_REPOSITORY, or the default root) that does not exist is a typo,
    or the wrong folder: refused (UsageError, exit 2) naming the path, as `repo list` and `serve` do,
    not reported as a scenario with no published version there. An object store is checked on opening."""
    from model_repository import UsageError, missing_local_root

    missing = missing_local_root(repository)
    if missing is not None:
        raise UsageError(f"--repository {missing} does not exist (the demo's is var/demo-repository)")
    # a file, or a device (/dev/null), was read as a repository with no scenarios: an empty list, exit 0
    if repository is not None and Path(repository).exists() and not Path(repository).is_dir():
        what = "is a file, not" if Path(repository).is_file() else "is not"
        raise UsageError(f"--repository {repository} {what} a folder of scenarios")


def refuse_unwritable_repository(repository: Path | None) -> None:
    """Before training that publishes: a local --repository (or LABELWISE_REPOSITORY, or the default root)
    where no version can be written (a file on its path, a folder not writable) is refused now (UsageError,
    exit 2), not after the run, when the trained model would have nowhere to go."""
    from model_repository import UsageError, default_root, unwritable_local_root

    problem = unwritable_local_root(repository)
    if problem is not None:
        where = repository if repository is not None else default_root()
        raise UsageError(f"model repository {where}: {problem}; nothing was trained")


def refuse_unusable_output_dir(
    output_dir: Path | None, flag: str = "--output-dir", repository: Path | bool | None = False
) -> None:
    """--output-dir (or a folder above it) that is a file is refused now (UsageError, exit 2), naming it:
    it failed as `error: NotADirectoryError` (exit 1) once the run had loaded its data and model, or, for
    evaluate, after the scoring. `flag`: the option as the user typed it (results' --out).

    repository: the command's --repository (None: LABELWISE_REPOSITORY or the default root; False: the
    command reads none). A folder at or inside that local repository is refused too: a run folder there
    (`-o var/model-repository/spam/3`) deleted the version's weights/ and left its own files beside them,
    and a version is write-once (it then failed `repo verify`, and serving refused it)."""
    from model_repository import UsageError

    if output_dir is None:
        return
    why = why_not_a_folder(output_dir)
    if why is not None:
        raise UsageError(f"{flag} {why}")
    if repository is not False:
        root = _local_root_holding(output_dir, repository)
        if root is not None:
            raise UsageError(
                f"{flag} {output_dir} is inside the model repository {root}: what is written there would "
                "change published versions, which are write-once; give a folder outside it"
            )


def refuse_repository_in_run_folder(
    output_dir: Path | None, repository: Path | None, runs_inside: Callable[[str], bool] | None = None
) -> None:
    """A local model repository (`repository`, None: LABELWISE_REPOSITORY or the default root) at or inside
    a folder of a run folder that the run deletes (training.trainer.RUN_FOLDER_CLEARED: weights/,
    tensorboard/, checkpoints/) is refused (UsageError, exit 2) before it trains: the run deleted the
    repository with it, every published version in it. The converse of refuse_unusable_output_dir's
    refusal of a run folder inside the repository. Without --output-dir the run gets a new folder.

    runs_inside: None, --output-dir is the run folder (train); else the run folders are the folders in
    --output-dir whose names it accepts (compare's one per strategy, tune's trials and best run)."""
    from model_repository import UsageError
    from training.trainer import RUN_FOLDER_CLEARED

    root = _local_root(repository) if output_dir is not None else None
    if root is None or output_dir is None:
        return
    if runs_inside is None:
        runs = [output_dir]
    else:  # the run folder the repository would be in, if any: by the paths as given, or links followed
        names = set()
        for resolve in (os.path.abspath, os.path.realpath):
            folder, outer = Path(resolve(root)), Path(resolve(output_dir))
            if outer in folder.parents:
                names.add(folder.relative_to(outer).parts[0])
        runs = [output_dir / name for name in sorted(names) if runs_inside(name)]
    for run in runs:
        for cleared in (run / name for name in RUN_FOLDER_CLEARED):
            if _at_or_inside(root, cleared):  # links followed: a weights/ that links elsewhere too
                where = "is" if _at_or_inside(cleared, root) else "is inside"
                whose = f"a run in --output-dir {output_dir}" if runs_inside is None else f"the run in {run}"
                raise UsageError(
                    f"the model repository {root} {where} {cleared}, which {whose} deletes, every published "
                    f"version with it; give another --output-dir, or keep the repository outside {cleared}"
                )


def _local_root(repository: Path | None) -> Path | None:
    """The local repository root (`repository`, None: default_root()); None for an object store."""
    from model_repository import default_root

    try:
        root = parse_root(repository) if repository is not None else default_root()
    except LabelwiseError:  # an unusable LABELWISE_REPOSITORY is the repository's own check to refuse
        return None
    return root if isinstance(root, Path) else None


def _at_or_inside(folder: Path, outer: Path) -> bool:
    """Whether `folder` is `outer` or lies inside it (links followed)."""
    real_folder, real_outer = Path(os.path.realpath(folder)), Path(os.path.realpath(outer))
    return real_folder == real_outer or real_outer in real_folder.parents


def _local_root_holding(folder: Path, repository: Path | None) -> Path | None:
    """The local repository root (`repository`, None: default_root()) when `folder` is it or lies inside it
    (links followed); None otherwise, and for an object store."""
    root = _local_root(repository)
    return root if root is not None and _at_or_inside(folder, root) else None


def output_file(value: str, flag: str) -> Path:
    """An output file's option as typed (`flag`: classify's --output, results' --docs), as a Path. A path
    that names a folder (ending in /, /. or /..) is refused (UsageError, exit 2), naming the flag: typer's
    Path drops the slash, so `-o out.jsonl/` wrote the file out.jsonl where the user named a folder."""
    from model_repository import UsageError

    if value and os.path.basename(value) in ("", ".", ".."):
        raise UsageError(f"{flag} {value} names a folder, not a file: give the path of the file to write")
    return Path(value)


def refuse_unusable_output_file(path: Path, flag: str) -> None:
    """An output file (results' --docs) that is a folder, or lies under a file, is refused now (UsageError,
    exit 2), naming it: it failed as `error: NotADirectoryError` / `IsADirectoryError` (exit 1) once the
    work was done."""
    from model_repository import UsageError

    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder: give the file to write, e.g. {path / 'results.md'}")
    blocking = file_in_the_way(path.parent)
    if blocking is not None:
        raise UsageError(f"{flag} {path} is inside {blocking}, which is a file, not a folder")


def given_on_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether the user typed option `name` (not its default, nor an environment variable's value)."""
    # By name: typer ships its own copy of click, whose ParameterSource is not click's.
    return getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"


def typed_flags(ctx: typer.Context, flags: dict[str, str]) -> list[str]:
    """Of `flags` (parameter name -> flag as typed, e.g. "threads" -> "--threads"), the ones the user
    typed, in the dict's order: what a refusal of flags the chosen mode would ignore names."""
    return [flag for name, flag in flags.items() if given_on_command_line(ctx, name)]


def applies_and_pronoun(flags: list[str]) -> tuple[str, str]:
    """("applies", "it") for one flag, ("apply", "them") for several: the words such a refusal agrees."""
    return ("applies", "it") if len(flags) == 1 else ("apply", "them")


def setup_logging() -> None:
    """Our progress at INFO; libraries (e.g. onnxruntime's quantizer logs per tensor) only at WARNING."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("training").setLevel(logging.INFO)
