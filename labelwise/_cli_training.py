"""`labelwise train|compare|evaluate`: training is imported inside each command, never at start-up."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

_console = Console()

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
    None, "--validation-data", help="Validation file; default: the scenario's, else a split."
)
DataDirOpt = typer.Option(
    None, "--data-dir", help="Folder of <scenario>/ data folders (default $LABELWISE_DATA_DIR)."
)
MaxTrainOpt = typer.Option(None, "--max-train-samples", help="Stratified cap on train rows.")
MaxEvalOpt = typer.Option(None, "--max-eval-samples", help="Stratified cap on validation rows.")
EpochsOpt = typer.Option(None, "--epochs", help="Training epochs (default: the scenario's).")
MaxStepsOpt = typer.Option(None, "--max-steps", help="Stop after this many optimizer steps.")
BatchOpt = typer.Option(None, "--batch-size", help="Rows per training step.")
LrOpt = typer.Option(None, "--learning-rate", "--lr", help="Peak learning rate.")
MaxLenOpt = typer.Option(None, "--max-length", help="Truncation length in tokens.")
WeightsOpt = typer.Option(
    None, "--class-weights", help="auto | on | off (auto: on when max/min class ratio > 3)."
)
SamplingOpt = typer.Option(
    None, "--weighted-sampling/--no-weighted-sampling", help="Class-balanced sampling."
)
SeedOpt = typer.Option(42, "--seed", help="Random seed.")
PatienceOpt = typer.Option(
    2, "--early-stopping-patience", help="Evaluations without macro-F1 gain; 0 disables."
)
RepoOpt = typer.Option(
    None, "--repository", "-r", help="Model repository root (default $LABELWISE_REPOSITORY)."
)
OutOpt = typer.Option(None, "--output-dir", "-o", help="Run folder (default runs/<scenario>/...).")
LoraROpt = typer.Option(None, "--lora-r", help="LoRA rank.")
LoraAlphaOpt = typer.Option(None, "--lora-alpha", help="LoRA alpha.")
LoraDropoutOpt = typer.Option(None, "--lora-dropout", help="LoRA dropout.")
LoraTargetsOpt = typer.Option(
    None, "--lora-target-modules", help="Comma-separated modules, e.g. query,value."
)


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("compare")(compare_command)
    app.command("evaluate")(evaluate_command)


def _setup_logging() -> None:
    # Our progress at INFO; libraries (e.g. onnxruntime's quantizer logs per tensor) only at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("training").setLevel(logging.INFO)


def _default_export() -> str:
    from training import export_available

    return "fp32,int8" if export_available() else "none"


def _precisions(value: str | None) -> list[str]:
    value = value or _default_export()
    return [] if value.strip().lower() in ("", "none") else [p.strip() for p in value.split(",") if p.strip()]


def _overrides(**kwargs: Any) -> dict[str, Any]:
    out = {k: v for k, v in kwargs.items() if v is not None}
    if "lora_target_modules" in out:
        out["lora_target_modules"] = [m.strip() for m in out["lora_target_modules"].split(",") if m.strip()]
    if out.get("early_stopping_patience") == 0:
        out["early_stopping_patience"] = None
    return out


def _fail(exc: Exception) -> typer.Exit:
    _console.print(f"[red]error:[/red] {exc}", soft_wrap=True)  # one line: easy to grep in CI logs
    return typer.Exit(2)


def train_command(
    scenario: str = ScenarioOpt,
    strategy: str = typer.Option(..., "--strategy", help="full | frozen | lora"),
    base_model: str | None = BaseModelOpt,
    data: Path | None = DataOpt,
    validation_data: Path | None = ValDataOpt,
    data_dir: Path | None = DataDirOpt,
    max_train_samples: int | None = MaxTrainOpt,
    max_eval_samples: int | None = MaxEvalOpt,
    epochs: float | None = EpochsOpt,
    max_steps: int | None = MaxStepsOpt,
    batch_size: int | None = BatchOpt,
    learning_rate: float | None = LrOpt,
    max_length: int | None = MaxLenOpt,
    class_weights: str | None = WeightsOpt,
    weighted_sampling: bool | None = SamplingOpt,
    seed: int = SeedOpt,
    early_stopping_patience: int = PatienceOpt,
    lora_r: int | None = LoraROpt,
    lora_alpha: int | None = LoraAlphaOpt,
    lora_dropout: float | None = LoraDropoutOpt,
    lora_target_modules: str | None = LoraTargetsOpt,
    qlora: bool = typer.Option(False, "--qlora", help="4-bit base for lora (CUDA + bitsandbytes only)."),
    adversarial: str | None = typer.Option(
        None, "--adversarial", help="fgm | pgd: adversarial training on the embeddings (needs --epsilon)."
    ),
    epsilon: float | None = typer.Option(None, "--epsilon", help="L2 radius of the embedding perturbation."),
    pgd_steps: int | None = typer.Option(None, "--pgd-steps", help="PGD ascent steps (default 3)."),
    repository: Path | None = RepoOpt,
    output_dir: Path | None = OutOpt,
    export: str | None = typer.Option(
        None, "--export", help="ONNX precisions to export before publishing, e.g. fp32,int8; 'none' skips."
    ),
    alias: str | None = typer.Option(
        None, "--alias", help="Point this alias (e.g. production) at the new version."
    ),
    publish: bool = typer.Option(True, "--publish/--no-publish", help="Publish to the model repository."),
) -> None:
    """Fine-tune one scenario with one strategy and publish it to the model repository."""
    _setup_logging()
    from model_repository import ModelRepository, RepositoryError
    from training import TrainingError, make_train_config, publish_run, save_weights, train

    try:
        config = make_train_config(
            scenario,
            strategy,
            base_model=base_model,
            data=data,
            validation_data=validation_data,
            data_dir=data_dir,
            output_dir=output_dir,
            **_overrides(
                max_train_samples=max_train_samples,
                max_eval_samples=max_eval_samples,
                num_train_epochs=epochs,
                max_steps=max_steps,
                batch_size=batch_size,
                learning_rate=learning_rate,
                max_length_tokens=max_length,
                class_weighting=class_weights,
                weighted_sampling=weighted_sampling,
                seed=seed,
                early_stopping_patience=early_stopping_patience,
                lora_r=lora_r,
                lora_alpha=lora_alpha,
                lora_dropout=lora_dropout,
                lora_target_modules=lora_target_modules,
                qlora=qlora or None,
                adversarial=adversarial,
                adversarial_epsilon=epsilon,
                pgd_steps=pgd_steps,
            ),
        )
        precisions = _precisions(export) if publish else []
        result = train(config)
        if publish:
            manifest = publish_run(
                result, ModelRepository(repository), export_precisions=precisions, alias=alias
            )
            where = f"published {manifest.scenario} v{manifest.version}"
        else:
            size = save_weights(result, Path(config.output_dir) / "weights")
            where = f"not published; weights ({size:,} bytes) in {config.output_dir}/weights"
    except (TrainingError, RepositoryError) as exc:
        raise _fail(exc) from exc
    m = result.metrics
    _console.print(
        f"[green]done[/green] {config.scenario.name}/{config.strategy}: accuracy {m['accuracy']:.4f}, "
        f"macro-F1 {m['macro_f1']:.4f}, {result.train_time_s:.0f} s, "
        f"trainable {result.trainable_params:,} of {result.total_params:,} params; "
        f"{where}; run folder {config.output_dir}"
    )


def compare_command(
    scenario: str = ScenarioOpt,
    base_model: str | None = BaseModelOpt,
    strategies: str = typer.Option("full,frozen,lora", "--strategies", help="Comma-separated strategies."),
    data: Path | None = DataOpt,
    validation_data: Path | None = ValDataOpt,
    data_dir: Path | None = DataDirOpt,
    max_train_samples: int | None = MaxTrainOpt,
    max_eval_samples: int | None = MaxEvalOpt,
    epochs: float | None = EpochsOpt,
    max_steps: int | None = MaxStepsOpt,
    batch_size: int | None = BatchOpt,
    max_length: int | None = MaxLenOpt,
    class_weights: str | None = WeightsOpt,
    seed: int = SeedOpt,
    early_stopping_patience: int = PatienceOpt,
    output_dir: Path | None = OutOpt,
    repository: Path | None = typer.Option(None, "--repository", "-r", help="Also publish each run here."),
    export: str = typer.Option("none", "--export", help="ONNX precisions when publishing; 'none' skips."),
) -> None:
    """Train full, frozen and LoRA on the same data; write comparison.md and comparison.png."""
    _setup_logging()
    from model_repository import ModelRepository, RepositoryError
    from training import TrainingError, compare_strategies, comparison_markdown

    try:
        rows, out = compare_strategies(
            scenario,
            strategies=tuple(s.strip() for s in strategies.split(",") if s.strip()),
            output_dir=output_dir,
            repository=ModelRepository(repository) if repository else None,
            export_precisions=_precisions(export) if repository else None,
            base_model=base_model,
            data=data,
            validation_data=validation_data,
            data_dir=data_dir,
            **_overrides(
                max_train_samples=max_train_samples,
                max_eval_samples=max_eval_samples,
                num_train_epochs=epochs,
                max_steps=max_steps,
                batch_size=batch_size,
                max_length_tokens=max_length,
                class_weighting=class_weights,
                seed=seed,
                early_stopping_patience=early_stopping_patience,
            ),
        )
    except (TrainingError, RepositoryError) as exc:
        raise _fail(exc) from exc
    _console.print(comparison_markdown(rows, scenario))
    _console.print(f"wrote {out / 'comparison.md'} and {out / 'comparison.png'}")


def evaluate_command(
    scenario: str = typer.Option(..., "--scenario", "-s", help="Scenario name in the repository."),
    data: Path = typer.Option(..., "--data", help="Labeled file (csv, jsonl, parquet) to score."),
    version: str = typer.Option("latest", "--version", "-v", help="Version number, alias or 'latest'."),
    repository: Path | None = RepoOpt,
    output_dir: Path | None = OutOpt,
) -> None:
    """Score a published version on a labeled file: metrics and a confusion matrix PNG."""
    _setup_logging()
    from model_repository import ModelRepository, RepositoryError
    from training import TrainingError, evaluate_published

    try:
        metrics = evaluate_published(
            ModelRepository(repository), scenario, data, ref=version, output_dir=output_dir
        )
    except (TrainingError, RepositoryError) as exc:
        raise _fail(exc) from exc
    table = Table("label", "precision", "recall", "F1", "support")
    for name, row in metrics["per_class"].items():
        table.add_row(
            name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"])
        )
    _console.print(table)
    _console.print(
        f"{scenario} v{metrics['version']} on {data}: accuracy {metrics['accuracy']:.4f}, "
        f"macro-F1 {metrics['macro_f1']:.4f} over {metrics['n_samples']} rows"
    )
    _console.print(f"confusion matrix and metrics.json in {metrics['output_dir']}")
