"""`labelwise train|compare|evaluate`: training is imported inside each command, never at start-up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from labelwise.training_runs import (
    export_precisions,
    flag_of,
    refuse_publish_flags,
    refuse_unused_flags,
    run_training,
    train_overrides,
)
from model_repository.passes import MAX_INTRA_OP_THREADS

from .options import (
    BaseModelOpt,
    BatchOpt,
    DataDirOpt,
    DataOpt,
    EpochsOpt,
    LoraAlphaOpt,
    LoraDropoutOpt,
    LoraPoolerOpt,
    LoraROpt,
    LoraTargetsOpt,
    LrOpt,
    MaxEvalOpt,
    MaxLenOpt,
    MaxStepsOpt,
    MaxTrainOpt,
    OutOpt,
    PatienceOpt,
    RepoOpt,
    SamplingOpt,
    ScenarioOpt,
    SeedOpt,
    ValDataOpt,
    VersionOpt,
    WeightsOpt,
    applies_and_pronoun,
    given_on_command_line,
    refuse_missing_repository,
    refuse_repository_in_run_folder,
    refuse_unusable_output_dir,
    refuse_unwritable_repository,
    repository_path,
    require_training,
    setup_logging,
    typed_flags,
)

# soft_wrap: a line piped or redirected to a file is not cut at 80 columns. Names and paths that go into a
# line are escape()d: Rich reads `[...]` in them as markup (a label "[spam]" printed as nothing).
_console = Console(soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("compare")(compare_command)
    app.command("evaluate")(evaluate_command)


def train_command(
    ctx: typer.Context,
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
    early_stopping_patience: int | None = PatienceOpt,
    lora_r: int | None = LoraROpt,
    lora_alpha: int | None = LoraAlphaOpt,
    lora_dropout: float | None = LoraDropoutOpt,
    lora_target_modules: str | None = LoraTargetsOpt,
    lora_train_pooler: bool | None = LoraPoolerOpt,
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
    setup_logging()
    refuse_unusable_output_dir(output_dir, repository=repository)
    require_training()
    refuse_repository_in_run_folder(output_dir, repository)
    refuse_unused_flags(
        strategy,
        adversarial=adversarial,
        pgd_steps=pgd_steps,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        lora_target_modules=lora_target_modules,
        lora_train_pooler=lora_train_pooler,
    )
    if not publish:  # what only a published version uses, given with --no-publish: refused, not dropped
        unused = [flag for flag, value in (("--alias", alias), ("--export", export)) if value is not None]
        if given_on_command_line(ctx, "repository"):  # not LABELWISE_REPOSITORY: set for every command
            unused.append("--repository")
        refuse_publish_flags(unused, "a published version", "--no-publish publishes none; drop {them}")
    from model_repository import ModelRepository
    from training import make_train_config
    from training.metrics import epoch_summary

    config = make_train_config(
        scenario,
        strategy,
        base_model=base_model,
        data=data,
        validation_data=validation_data,
        data_dir=data_dir,
        output_dir=output_dir,
        flags=flag_of,
        **train_overrides(
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
            lora_train_pooler=lora_train_pooler,
            qlora=qlora or None,
            adversarial=adversarial,
            adversarial_epsilon=epsilon,
            pgd_steps=pgd_steps,
        ),
    )
    if publish:
        refuse_unwritable_repository(repository)
    outcome = run_training(config, ModelRepository(repository), publish=publish, export=export, alias=alias)
    result = outcome.result
    m = result.metrics
    _console.print(
        f"[green]done[/green] {escape(config.scenario.name)}/{config.strategy}: validation ({m['n_samples']} "
        f"rows) accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}, "
        f"{escape(epoch_summary(result.log_history))}, {result.train_time_s:.0f} s, "
        f"trainable {result.trainable_params:,} of {result.total_params:,} params; "
        f"{escape(outcome.where())}; run folder {escape(str(config.output_dir))}" + _restart_text(result)
    )


def _restart_text(result: Any) -> str:
    """What the done line says of collapse restarts (training/trainer.py), if the run had any."""
    from training.trainer import learning_rates_tried

    if not result.metrics.get("collapse_restarts"):
        return ""
    *collapsed, lr = learning_rates_tried(result)
    tried = ", ".join(f"{x:g}" for x in collapsed)
    if result.metrics.get("collapsed"):
        return f"\n[red]collapsed[/red] at lr {tried} and {lr:g}: no better than the majority answer"
    return f"\n[yellow]collapsed[/yellow] at lr {tried}: kept the run trained again at lr {lr:g}"


def compare_command(
    ctx: typer.Context,
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
    early_stopping_patience: int | None = PatienceOpt,
    output_dir: Path | None = OutOpt,
    repository: Path | None = typer.Option(
        None,
        "--repository",
        "-r",
        parser=repository_path,
        help="Also publish each run here: a folder or s3://BUCKET/PREFIX.",
    ),
    export: str = typer.Option("none", "--export", help="ONNX precisions when publishing; 'none' skips."),
) -> None:
    """Train full, frozen and LoRA on the same data; write comparison.md and comparison.png."""
    setup_logging()
    refuse_unusable_output_dir(output_dir, repository=repository)
    require_training()
    from model_repository import ModelRepository
    from model_repository.errors import UsageError
    from training import STRATEGIES, compare_strategies

    chosen = tuple(dict.fromkeys(s.strip() for s in strategies.split(",") if s.strip()))  # once each
    if not chosen:
        raise UsageError(f"--strategies {strategies!r}: name at least one of {', '.join(STRATEGIES)}")
    refuse_repository_in_run_folder(output_dir, repository, runs_inside=chosen.__contains__)
    _refuse_unwritable_comparison(output_dir, chosen)
    if repository is None and given_on_command_line(ctx, "export"):  # its default 'none' is never refused
        refuse_publish_flags(
            ["--export"], "--repository/-r", "without it nothing is published; add -r, or drop --export"
        )
    if repository is not None:
        refuse_unwritable_repository(repository)
    _rows, out = compare_strategies(
        scenario,
        strategies=chosen,
        output_dir=output_dir,
        repository=ModelRepository(repository) if repository else None,
        export_precisions=export_precisions(export) if repository else None,
        base_model=base_model,
        data=data,
        validation_data=validation_data,
        data_dir=data_dir,
        flags=flag_of,  # to make_train_config, with the overrides
        **train_overrides(
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
    # as written to comparison.md (its title names the base, the rows and the token limit), plain: Markdown
    typer.echo((out / "comparison.md").read_text(encoding="utf-8").rstrip("\n"))
    typer.echo(f"wrote {out / 'comparison.md'} and {out / 'comparison.png'}")


def _refuse_unwritable_comparison(output_dir: Path | None, strategies: tuple[str, ...]) -> None:
    """A strategy's run folder in --output-dir that is a file, or a comparison file that is a folder, is
    refused (UsageError, exit 2) before any strategy trains: it failed as `error: NotADirectoryError` once
    the strategies before it had trained, or as `IsADirectoryError` naming no option.

    So is the run folder of a strategy this comparison does not train (an earlier `--strategies full,lora`
    into the same folder, now `--strategies lora`): it was left beside the new comparison, one folder mixing
    two runs. It is refused rather than deleted: it may hold the only copy of trained weights."""
    from model_repository import UsageError
    from model_repository.layout import why_not_a_folder
    from training import STRATEGIES

    if output_dir is None:
        return
    for strategy in strategies:
        why = why_not_a_folder(output_dir / strategy)
        if why is not None:
            raise UsageError(f"--output-dir {output_dir}: {why}, where the {strategy} run goes")
    for name in ("comparison.md", "comparison.json", "comparison.png"):
        if (output_dir / name).is_dir():
            raise UsageError(
                f"--output-dir {output_dir}: {output_dir / name} is a folder, where the comparison writes "
                f"{name}; remove it or give another --output-dir"
            )
    # train_config.json: what every run writes into its folder first (training.trainer._start_run_folder)
    earlier = [
        s for s in STRATEGIES if s not in strategies and (output_dir / s / "train_config.json").is_file()
    ]
    if earlier:
        _, them = applies_and_pronoun(earlier)
        runs = "an earlier run" if len(earlier) == 1 else "earlier runs"
        raise UsageError(
            f"--output-dir {output_dir} holds {runs} of {', '.join(earlier)} "
            f"({', '.join(str(output_dir / s) for s in earlier)}), which --strategies {','.join(strategies)} "
            f"does not train: the new comparison would sit beside {them} as if it compared {them}; remove "
            f"{them}, add {','.join(earlier)} to --strategies, or give another --output-dir"
        )


def evaluate_command(
    ctx: typer.Context,
    scenario: str = typer.Option(..., "--scenario", "-s", help="Scenario name in the repository."),
    data: Path | None = typer.Option(None, "--data", help="Labeled file (csv, jsonl, parquet) to score."),
    split: str | None = typer.Option(
        None,
        "--split",
        help="Instead of --data: test (the scenario's held-out test split, never trained on) or "
        "validation (the rows the run validated on).",
    ),
    precision: str = typer.Option(
        "torch",
        "--precision",
        help="torch: the published torch weights; fp32 | int8 | fp16: the exported graph, scored through "
        "the serving engine in this process (raw texts, as served).",
    ),
    lora_mode: str = typer.Option(
        "merged",
        "--lora-mode",
        help="LoRA versions in fp32/int8/fp16: merged graph or shared (as served); refused with torch.",
    ),
    threads: int = typer.Option(
        0,
        "--threads",
        min=0,
        max=MAX_INTRA_OP_THREADS,
        help="fp32/int8/fp16: ONNX Runtime threads (0: its default); refused with torch.",
    ),
    max_batch_tokens: int | None = typer.Option(
        None,
        "--max-batch-tokens",
        min=16,
        help="fp32/int8/fp16: the token budget per pass, as the deployment's max_batch_tokens (default: "
        "serving's, 256 on CPU, 65536 for fp16). int8 logits depend on the rows sharing a pass. Refused "
        "with torch.",
    ),
    version: str = VersionOpt,
    repository: Path | None = RepoOpt,
    output_dir: Path | None = OutOpt,
    json_output: bool = typer.Option(False, "--json", help="Print the metrics as one JSON object."),
) -> None:
    """Score a published version on a labeled file or its test/validation split: metrics, confusion matrix."""
    setup_logging()
    refuse_unusable_output_dir(output_dir, repository=repository)
    from labelwise.evaluation import EVAL_PRECISIONS, evaluate_version
    from model_repository import ModelRepository
    from model_repository.errors import UsageError

    if (data is None) == (split is None):
        raise UsageError("give either --data FILE or --split test|validation")
    if split is not None and split not in ("test", "validation"):
        raise UsageError(f"--split {split!r}: choose test or validation")
    if precision not in EVAL_PRECISIONS:
        raise UsageError(f"--precision {precision!r}: choose one of {', '.join(EVAL_PRECISIONS)}")
    if precision == "torch":  # the engine's settings: torch_logits reads none of them
        engine_only = {
            "lora_mode": "--lora-mode",
            "threads": "--threads",
            "max_batch_tokens": "--max-batch-tokens",
        }
        given = typed_flags(ctx, engine_only)
        if given:
            verb, them = applies_and_pronoun(given)
            default = "" if given_on_command_line(ctx, "precision") else " (the default)"
            raise UsageError(
                f"{', '.join(given)} {verb} to the exported graphs only (--precision fp32, int8 or fp16, "
                f"scored through the serving engine): --precision torch{default} scores the published torch "
                f"weights, which read no engine settings. Drop {them}, or give --precision fp32|int8|fp16"
            )
    refuse_missing_repository(repository)
    metrics = evaluate_version(
        ModelRepository(repository),
        scenario,
        data=data,
        split=split,
        ref=version,
        precision=precision,
        lora_mode=lora_mode,
        threads=threads,
        max_batch_tokens=max_batch_tokens,
        output_dir=output_dir,
    )
    if json_output:
        typer.echo(json.dumps(metrics, default=str))
        return
    # a long label (ATIS's `atis_flight#atis_airfare`) folds onto more lines rather than losing its end
    table = Table(Column("label", overflow="fold"), "precision", "recall", "F1", "support")
    for name, row in metrics["per_class"].items():
        table.add_row(
            escape(name),
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['f1']:.3f}",
            str(row["support"]),
        )
    _console.print(table)
    where = f" on {metrics['provider']}" if metrics.get("provider") else ""
    _console.print(
        f"{escape(scenario)} v{metrics['version']} on {escape(str(metrics['data']))} ({metrics['n_samples']} "
        f"rows), precision {metrics['precision']}{where}: accuracy {metrics['accuracy']:.4f}, "
        f"macro-F1 {metrics['macro_f1']:.4f}; scored in {metrics['scoring_s']:.1f} s"
    )
    _console.print(f"confusion matrix and metrics.json in {escape(str(metrics['output_dir']))}")
