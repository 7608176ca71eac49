"""Options shared by `labelwise train|compare|evaluate|tune|robustness`, and their logging set-up."""

from __future__ import annotations

import logging

import typer

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
    None,
    "--data-dir",
    envvar="LABELWISE_DATA_DIR",
    help="Folder of <scenario>/ data folders (default: ../shared/data beside the checkout).",
)
MaxTrainOpt = typer.Option(None, "--max-train-samples", help="Stratified cap on train rows.")
MaxEvalOpt = typer.Option(None, "--max-eval-samples", help="Stratified cap on validation rows.")
EpochsOpt = typer.Option(
    None,
    "--epochs",
    help="Training epochs, exactly (default: the scenario's, which its min_train_steps may raise on a "
    "small train set).",
)
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
    None,
    "--early-stopping-patience",
    help="Evaluations without macro-F1 gain (default: the scenario's for the strategy, else 2); 0 disables.",
)
RepoOpt = typer.Option(
    None,
    "--repository",
    "-r",
    envvar="LABELWISE_REPOSITORY",
    help="Model repository root (default ./var/model-repository).",
)
OutOpt = typer.Option(None, "--output-dir", "-o", help="Run folder (default runs/<scenario>/...).")
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


def setup_logging() -> None:
    """Our progress at INFO; libraries (e.g. onnxruntime's quantizer logs per tensor) only at WARNING."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("training").setLevel(logging.INFO)
