"""Score a published version on a labeled file or its run's test/validation split; compare strategies."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from model_repository import Manifest, ModelRepository, UsageError, is_object_store, write_text_atomic
from model_repository.text import NO_NORMALIZATION

from .config import (
    STRATEGIES,
    ScenarioConfig,
    TrainConfig,
    default_run_name,
    default_runs_dir,
    make_train_config,
    recorded_scenario_config,
)
from .data import (
    HELD_OUT,
    LabeledTexts,
    held_out_changes,
    load_labeled,
    load_test_split,
    prepare_data,
)
from .errors import CollapsedRunError, DataError, ScenarioConfigError
from .metrics import classification_metrics
from .plots import plot_comparison, plot_confusion_matrix
from .publish import load_published_model, publish_run, save_weights
from .trainer import train

log = logging.getLogger(__name__)


def predict_logits(
    model: Any, tokenizer: Any, texts: list[str], max_length_tokens: int, batch_size: int = 64
) -> np.ndarray:
    """Logits for texts, batched and dynamically padded, no gradients."""
    import torch
    from tqdm.auto import tqdm

    out = []
    with torch.inference_mode():
        for start in tqdm(
            range(0, len(texts), batch_size), desc="predicting", disable=len(texts) <= batch_size
        ):
            enc = tokenizer(
                texts[start : start + batch_size],
                truncation=True,
                max_length=max_length_tokens,
                padding=True,
                return_tensors="pt",
            )
            enc = {k: v.to(model.device) for k, v in enc.items()}
            out.append(model(**enc).logits.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


SPLITS = ("test", "validation")


@dataclass
class EvaluationRows:
    """The labeled rows a version is scored on, and what they are, in words."""

    rows: LabeledTexts
    source: str  # "test split", "validation rows" or the file's path
    dropped_rows: int = 0

    @property
    def slug(self) -> str:
        """A short name for folders: test, validation, or `file-<stem>-<hash of its resolved path>` (a file
        named test.csv, or two eval.csv in different folders, each get their own)."""
        if self.source in ("test split", "validation rows"):
            return self.source.split()[0]
        path = Path(self.source).resolve()
        return f"file-{path.stem}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def run_config(manifest: Manifest) -> TrainConfig:
    """The TrainConfig a version was trained with, rebuilt from its manifest."""
    try:
        return TrainConfig.model_validate(manifest.training_config)
    except ValidationError as exc:
        raise DataError(
            f"{manifest.scenario} v{manifest.version}: its training_config does not rebuild a run config "
            f"({exc.error_count()} errors, first: {exc.errors()[0]['loc']}); score a file with --data instead"
        ) from exc


def evaluation_rows(
    manifest: Manifest, data_path: Path | None = None, split: str | None = None
) -> EvaluationRows:
    """A labeled file's rows, or the version's run's `test` split (held out from its train file, never
    trained or tuned on) or `validation` rows (as the run validated on them: its file or split, capped)."""
    if (data_path is None) == (split is None):
        raise DataError("give a labeled file (--data) or a split (--split test|validation), not both or none")
    if data_path is not None:
        # only the columns, the cleaning and the unknown-label rule are needed: read as re-export reads
        # them, from a version whose training_config is an older release's or holds no scenario at all
        cfg = recorded_scenario_config(manifest)
        # the torch model reads rows.texts, the graphs rows.raw cleaned as serving cleans them: both the
        # version's text_normalization (none recorded, an older version: the raw text, as served)
        served = manifest.text_normalization if manifest.text_normalization is not None else NO_NORMALIZATION
        cfg = cfg.model_copy(update={"cleaning": served})
        rows, dropped = load_labeled(
            Path(data_path),
            cfg,
            manifest.labels,
            unknown=cfg.unknown_validation_labels,
            labels_of=f"{manifest.scenario} v{manifest.version}",
        )
        return EvaluationRows(rows, str(data_path), dropped)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: choose {' or '.join(SPLITS)}")
    config = run_config(manifest)
    # "data file X does not exist" alone (read_table's words) would not say that X is where the run read
    # the rows this split is carved from again
    read = [config.train_path] + ([config.validation_path] if split == "validation" else [])
    for path in (Path(p) for p in read if p is not None):
        if not path.is_file():
            now = "is a folder" if path.is_dir() else "does not exist"
            raise DataError(
                f"the {split} rows of {manifest.scenario} v{manifest.version} are carved from {path}, the "
                f"file its run read, which {now} now; put it back there, or score a labeled file with --data"
            )
    if split == "test":
        rows = EvaluationRows(load_test_split(config), "test split")
    else:
        data = prepare_data(config)
        rows = EvaluationRows(data.validation, "validation rows", data.dropped_validation_rows)
    check_held_out(manifest, config, split, rows.rows)
    return rows


def check_held_out(manifest: Manifest, config: TrainConfig, split: str, rows: LabeledTexts) -> None:
    """Refuse `split` rows carved again today that are not the ones the version held out (test) or
    validated on (validation): its train file changed, or the way splits are carved. A version published
    before the record existed is scored as before, with a warning that its rows cannot be verified."""
    who = f"{manifest.scenario} v{manifest.version}"
    recorded = manifest.metrics.get(HELD_OUT)
    if not isinstance(recorded, dict):
        log.warning(
            "%s was published before its held-out rows were recorded: its %s rows, carved again from %s "
            "as the file is today, cannot be verified",
            who,
            split,
            config.train_path,
        )
        return
    why = held_out_changes(recorded, config, split, rows)
    if why is None:
        return
    what = "held out" if split == "test" else "validated on"
    raise DataError(
        f"{who}: the {split} rows carved today are not the ones it {what} when it was trained "
        f"({why}); those cannot be recovered, and rows it trained on may be among "
        "today's: score a labeled file with --data instead, or train a new version on the file as it is now"
    )


def torch_logits(repository: ModelRepository, scenario: str, version: int, texts: list[str]) -> np.ndarray:
    """The published torch model's logits on cleaned texts."""
    model, tokenizer, manifest = load_published_model(repository, scenario, version)
    return predict_logits(model, tokenizer, texts, manifest.max_length_tokens)


def write_evaluation(
    manifest: Manifest,
    data: EvaluationRows,
    logits: np.ndarray,
    *,
    precision: str,
    seconds: float,
    output_dir: Path | None = None,
    extra: dict[str, Any] | None = None,
    variant: str = "",
    repository_root: str | Path | None = None,
) -> dict[str, Any]:
    """Metrics of logits on data's rows; writes confusion_matrix.png and metrics.json; returns the metrics.
    Without output_dir: runs/<scenario>/evaluate-v<N>-<rows>-<precision>[-<variant>]-r<digest>, variant
    naming how it ran when that is not the default (e.g. `shared-mbt1024`), digest the repository's
    (repository_digest: v1 of two repositories' scenario of one name each get their own folder). Its callers
    refuse an output_dir holding a training run's record (refuse_training_record) before they score."""
    metrics = classification_metrics(np.asarray(data.rows.label_ids), logits.argmax(-1), manifest.labels)
    metrics.update(
        {
            "version": manifest.version,
            "data": data.source,
            "rows_from": data.rows.source,
            "precision": precision,
            "dropped_rows": data.dropped_rows,
            "scoring_s": round(seconds, 3),
            **(extra or {}),
        }
    )
    out = output_dir or default_runs_dir() / manifest.scenario / (
        f"evaluate-v{manifest.version}-{data.slug}-{precision}"
        + (f"-{variant}" if variant else "")
        + (f"-r{repository_digest(repository_root)}" if repository_root is not None else "")
    )
    out.mkdir(parents=True, exist_ok=True)
    plot_confusion_matrix(
        metrics["confusion_matrix"],
        manifest.labels,
        out / "confusion_matrix.png",
        f"{manifest.scenario} v{manifest.version} ({precision}) on {Path(data.source).name}: "
        f"{len(data.rows)} rows, acc {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}",
    )
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2))
    metrics["output_dir"] = str(out)
    return metrics


def repository_digest(root: str | Path) -> str:
    """8 hex digits naming a repository in a folder name: of its resolved path, or of its object-store URL."""
    where = str(root) if is_object_store(root) else str(Path(root).resolve())
    return hashlib.sha256(where.encode()).hexdigest()[:8]


def refuse_training_record(output_dir: Path | None) -> None:
    """An output folder holding a metrics.json that is not an evaluation's (a training run's own record:
    train's -o, compare's strategy folders, tune's trials) is refused (UsageError, exit 2) before any
    scoring: the evaluation's metrics.json and confusion_matrix.png replaced the run's. An earlier
    evaluation's is replaced, as a rerun into its folder does."""
    if output_dir is None:
        return
    path = output_dir / "metrics.json"
    if not path.is_file():
        return
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict) and "rows_from" in record and "precision" in record:
        return
    raise UsageError(
        f"--output-dir {output_dir} holds a metrics.json that is not an evaluation's (a training run's "
        "record): evaluate writes metrics.json and confusion_matrix.png and would replace it; give another "
        f"folder, e.g. {output_dir / 'evaluate'}"
    )


def evaluate_published(
    repository: ModelRepository,
    scenario: str,
    data_path: Path | None = None,
    *,
    split: str | None = None,
    ref: str | int = "latest",
    output_dir: Path | None = None,
) -> dict[str, Any]:
    """Metrics of a published version's torch weights on a labeled file or its run's test/validation
    split; writes confusion_matrix.png and metrics.json. (`labelwise evaluate --precision fp32|int8|fp16`
    scores the exported graphs through the serving engine instead: labelwise.evaluation.)"""
    refuse_training_record(output_dir)
    version = repository.resolve(scenario, ref)
    manifest = repository.verify(scenario, version)
    data = evaluation_rows(manifest, data_path, split)
    started = time.perf_counter()
    logits = torch_logits(repository, scenario, version, data.rows.texts)
    return write_evaluation(
        manifest,
        data,
        logits,
        precision="torch",
        seconds=time.perf_counter() - started,
        output_dir=output_dir,
        repository_root=repository.root,
    )


@dataclass
class ComparisonRow:
    strategy: str
    accuracy: float
    macro_f1: float
    train_time_s: float
    trainable_params: int
    total_params: int
    artifact_bytes: int
    version: int | None = None
    # the run collapsed at every learning rate it tried (training/trainer.py): no better than the majority
    # answer; with a repository, publish refused it (publish_refused: why) and it has no version
    collapsed: bool = False
    publish_refused: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @property
    def label(self) -> str:
        """The strategy as the table names it: ✗ marks a collapsed run."""
        return f"{self.strategy} ✗" if self.collapsed else self.strategy


def compare_strategies(
    scenario: ScenarioConfig | str,
    *,
    strategies: tuple[str, ...] = STRATEGIES,
    output_dir: Path | None = None,
    repository: ModelRepository | None = None,
    export_precisions: list[str] | None = None,
    **overrides: Any,
) -> tuple[list[ComparisonRow], Path]:
    """Train each strategy with the same data bounds; write comparison.md, comparison.json and
    comparison.png.

    Weights are saved under <output_dir>/<strategy>/weights to measure artifact size; with a
    repository each run is also published. A run that collapsed (no better than the majority answer at
    every learning rate tried) is a row marked collapsed (✗); publish refuses it, and the other strategies
    still train and publish. With a repository, once the comparison is written, CollapsedRunError names
    the strategies that were not published (the CLI: one error line, exit 1), carrying `rows` and
    `output_dir`.
    """
    if not strategies:
        raise ScenarioConfigError(f"no strategy to compare: name at least one of {', '.join(STRATEGIES)}")
    name = scenario if isinstance(scenario, str) else scenario.name
    out = output_dir or default_runs_dir() / str(name).split("/")[-1].removesuffix(".yaml") / (
        default_run_name("compare")
    )
    configs: list[TrainConfig] = [
        make_train_config(scenario, strategy, output_dir=out / strategy, **overrides)
        for strategy in strategies
    ]
    # a comparison written there before goes now: a rerun that fails (or is stopped) part way left the
    # earlier comparison.md beside strategy folders of the new runs, as if it compared them
    for name in ("comparison.md", "comparison.json", "comparison.png"):
        (out / name).unlink(missing_ok=True)
    rows: list[ComparisonRow] = []
    for config in configs:
        result = train(config)
        size = save_weights(result, Path(config.output_dir) / "weights")
        version = None
        refused = None
        if repository is not None:
            try:
                version = publish_run(result, repository, export_precisions=export_precisions).version
            except CollapsedRunError as exc:  # this strategy only: the others still train and publish
                refused = str(exc)
        rows.append(
            ComparisonRow(
                strategy=config.strategy,
                accuracy=result.metrics["accuracy"],
                macro_f1=result.metrics["macro_f1"],
                train_time_s=result.train_time_s,
                trainable_params=result.trainable_params,
                total_params=result.total_params,
                artifact_bytes=size,
                version=version,
                collapsed=bool(result.metrics.get("collapsed")) or refused is not None,
                publish_refused=refused,
            )
        )
        del result  # free the model before the next strategy loads its own
    first = configs[0]
    title = (
        f"{first.scenario.name}: {first.base_model.split('/')[-1]}, "
        f"{_rows(out / first.strategy)} train rows, max {first.scenario.max_length_tokens} tokens; "
        f"validation scores on {_rows(out / first.strategy, 'validation_rows')} rows"
    )
    write_text_atomic(out / "comparison.md", comparison_markdown(rows, title) + "\n")
    write_text_atomic(out / "comparison.json", json.dumps([r.as_dict() for r in rows], indent=2))
    # the plot's bars are named as the table names them: a collapsed run's is marked
    plot_comparison(
        [{**r.as_dict(), "strategy": r.strategy + (" (collapsed)" if r.collapsed else "")} for r in rows],
        out / "comparison.png",
        title,
    )
    refused = [r for r in rows if r.publish_refused is not None]
    if refused:
        published = [f"{r.strategy} v{r.version}" for r in rows if r.version is not None]
        error = CollapsedRunError(
            f"{first.scenario.name}: {', '.join(r.strategy for r in refused)} collapsed and "
            f"{'was' if len(refused) == 1 else 'were'} not published ({refused[0].publish_refused}); "
            f"published: {', '.join(published) or 'none'}; the comparison, collapsed runs marked ✗, is in "
            f"{out}"
        )
        error.rows, error.output_dir = rows, out  # type: ignore[attr-defined]
        raise error
    return rows, out


def _rows(run_dir: Path, key: str = "train_rows") -> str:
    try:
        return str(json.loads((run_dir / "metrics.json").read_text())[key])
    except (OSError, ValueError, KeyError):
        return "?"


def _size(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def comparison_markdown(rows: list[ComparisonRow], title: str) -> str:
    lines = [
        f"**{title}**",
        "",
        "| strategy | accuracy | macro-F1 | train time (s) | trainable params | share trainable | artifact |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.label} | {r.accuracy:.4f} | {r.macro_f1:.4f} | {r.train_time_s:.0f} | "
            f"{r.trainable_params:,} | {r.trainable_params / r.total_params:.3%} | "
            f"{_size(r.artifact_bytes)} |"
        )
    collapsed = [r for r in rows if r.collapsed]
    if collapsed:
        refused = any(r.publish_refused is not None for r in collapsed)
        lines += [
            "",
            "✗ collapsed: the run answered no better than always the majority label at every learning rate "
            "it tried (its training loss fell, then climbed back)"
            + ("; not published" if refused else "")
            + ". Train it at a lower learning_rate or with a longer warmup_ratio.",
        ]
    return "\n".join(lines)
