"""What `labelwise train|compare|tune` run besides training's own API: option parsing and train-then-publish.

training (and torch behind it) is imported inside each function, never at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model_repository import Manifest, ModelRepository
    from training import TrainConfig, TrainedModel


def default_export() -> str:
    """fp32,int8 (and fp16 where torch sees a CUDA GPU) when the export extra (optimum, onnx) is
    installed, else none."""
    from training import export_available
    from training.publish import default_precisions

    return ",".join(default_precisions()) if export_available() else "none"


def export_precisions(value: str | None) -> list[str]:
    """A comma list such as 'fp32,int8' as a list; 'none' gives [], None, '' or blanks the default export.

    Checked here, before any training: an unknown precision, or an export this checkout cannot run, is
    refused at once rather than after the run it would have published (UnknownPrecisionError,
    TrainingError)."""
    # blanks as '' (`--export " "` published a version with no graph, where `--export ""` had the default)
    value = value if value and value.strip() else default_export()
    if value.strip().lower() in ("", "none"):
        return []
    from training import export_available
    from training.errors import TrainingError

    if not export_available():
        raise TrainingError(
            f"--export {value}: ONNX export is not installed in this checkout (the export extra); "
            "publish with --export none"
        )
    from training.export.precisions import parse_precisions

    return parse_precisions(value, flag="--export")


# A TrainConfig field's option where it is not the field with dashes: what a refusal of the value names
# (make_train_config's `flags`), not the field (`--epochs -1` was refused as num_train_epochs).
_FLAG_OF_FIELD = {
    "num_train_epochs": "--epochs",
    "max_train_epochs": "--epochs",
    "max_length_tokens": "--max-length",
    "class_weighting": "--class-weights",
    "adversarial_epsilon": "--epsilon",
    "train_path": "--data",
    "validation_path": "--validation-data",
}


def flag_of(field: str) -> str:
    """The command-line option a TrainConfig field (or override) is given as: `--epochs` for
    num_train_epochs."""
    return _FLAG_OF_FIELD.get(field, "--" + field.replace("_", "-"))


def train_overrides(**kwargs: Any) -> dict[str, Any]:
    """TrainConfig overrides from command-line values: None means not given; a comma list of LoRA
    target modules becomes a list (early-stopping patience 0 disables it: TrainConfig). Epochs given on
    the command line are the epochs run: they are also the cap on what a scenario's min_train_steps may
    add (which raised `--epochs 2` on a 1,000-row sample of the packaged scenarios to 19 epochs)."""
    out = {k: v for k, v in kwargs.items() if v is not None}
    # only a valid count is the cap too: `--epochs -1` was refused twice, once as max_train_epochs
    if "num_train_epochs" in out and out["num_train_epochs"] > 0:
        out.setdefault("max_train_epochs", out["num_train_epochs"])
    if "lora_target_modules" in out:
        out["lora_target_modules"] = [m.strip() for m in out["lora_target_modules"].split(",") if m.strip()]
    return out


def refuse_unused_flags(
    strategy: str,
    *,
    adversarial: str | None = None,
    pgd_steps: int | None = None,
    lora_r: int | None = None,
    lora_alpha: int | None = None,
    lora_dropout: float | None = None,
    lora_target_modules: str | None = None,
    lora_train_pooler: bool | None = None,
) -> None:
    """Refuse (UsageError, exit 2), before any training, a flag the user gave that the run would ignore:
    a LoRA setting with --strategy full|frozen, --pgd-steps without --adversarial pgd. None means not
    given (a scenario's own LoRA defaults are never refused), as TrainConfig refuses --qlora without lora
    and --epsilon without --adversarial."""
    from model_repository import UsageError

    if strategy in ("full", "frozen"):
        pooler = "--lora-train-pooler" if lora_train_pooler else "--lora-frozen-pooler"
        lora = {
            "--lora-r": lora_r,
            "--lora-alpha": lora_alpha,
            "--lora-dropout": lora_dropout,
            "--lora-target-modules": lora_target_modules,
            pooler: lora_train_pooler,
        }
        given = [flag for flag, value in lora.items() if value is not None]
        if given:
            verb, them = ("applies", "it") if len(given) == 1 else ("apply", "them")
            raise UsageError(
                f"{', '.join(given)} {verb} to the lora strategy only (--strategy {strategy} trains no "
                f"adapters): drop {them}, or train with --strategy lora"
            )
    if pgd_steps is not None and adversarial in (None, "none", "fgm"):
        raise UsageError(
            f"--pgd-steps is set but adversarial is {adversarial or 'none'}: it applies to --adversarial pgd "
            "only; add --adversarial pgd, or drop --pgd-steps"
        )


def refuse_publish_flags(given: list[str], needs: str, fix: str) -> None:
    """Refuse (UsageError, exit 2), before any training, flags that only act on a published version when
    the command publishes nothing; `given` lists only the flags the user passed (never their defaults).
    `{them}` in fix reads "it" or "them"."""
    from model_repository import UsageError

    if given:
        verb, them = ("needs", "it") if len(given) == 1 else ("need", "them")
        raise UsageError(f"{'/'.join(given)} {verb} {needs}: {fix.format(them=them)}")


@dataclass
class TrainingOutcome:
    """A finished run: the trained model, and either the published manifest or the saved weights' size."""

    config: TrainConfig
    result: TrainedModel
    manifest: Manifest | None = None
    weights_bytes: int | None = None

    def where(self) -> str:
        """Where the run's model went, in words."""
        if self.manifest is not None:
            return f"published {self.manifest.scenario} v{self.manifest.version}"
        return f"not published; weights ({self.weights_bytes:,} bytes) in {self.config.output_dir}/weights"


def run_training(
    config: TrainConfig,
    repository: ModelRepository | None = None,
    *,
    publish: bool = True,
    export: str | None = None,
    alias: str | None = None,
) -> TrainingOutcome:
    """Train config; publish to repository (exporting the `export` precisions, then pointing alias at
    the new version) or, without publish, save the weights under the run folder."""
    from model_repository import (
        ModelRepository,
        ObjectStoreError,
        RepositoryError,
        UsageError,
        check_alias_name,
    )
    from training import publish_run, save_weights, train

    precisions = export_precisions(export) if publish else []
    if publish and alias:  # before training: a bad alias name costs no run
        check_alias_name(alias)
        if not precisions:  # nor an alias no replica could load (promote refuses a version without graphs)
            raise UsageError(
                f"--alias {alias} with --export none: a version without ONNX graphs cannot serve, so no "
                "alias may point at it; export (e.g. --export fp32,int8), or publish without --alias and run "
                "`labelwise export` before `labelwise promote`"
            )
    repo = repository if repository is not None or not publish else ModelRepository()
    if publish and alias:  # nor an alias whose file cannot be written (a file where its folder goes)
        try:
            repo.check_alias_writable(config.scenario.name, alias)
        except RepositoryError as exc:
            raise UsageError(f"--alias {alias}: {exc}; nothing was trained") from exc
    result = train(config)
    if not publish:
        size = save_weights(result, Path(config.output_dir) / "weights")
        return TrainingOutcome(config, result, weights_bytes=size)
    assert repo is not None
    try:
        manifest = publish_run(result, repo, export_precisions=precisions, alias=alias)
    # the repository's disk, folder or object store failed (read-only credentials pass the store's opening
    # check and fail at the first write): the run is not thrown away with it
    except (OSError, ObjectStoreError) as exc:
        kept = Path(config.output_dir) / "weights"
        save_weights(result, kept)
        raise RepositoryError(
            f"publishing {config.scenario.name}/{config.strategy} to {repo.root} failed "
            f"({type(exc).__name__}: {exc}); nothing was published, and the trained weights are kept "
            f"in {kept}"
        ) from exc
    return TrainingOutcome(config, result, manifest=manifest)
