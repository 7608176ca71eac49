"""Scenario configs (YAML, validated here) and the resolved configuration of one training run."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from model_repository.errors import no_boolean_for_a_number, validation_problems
from model_repository.text import TextNormalization

from .errors import ScenarioConfigError, not_a_file
from .tuning.space import SearchSpace

log = logging.getLogger(__name__)
# The validation file a scenario names by default: when a dataset lacks it, train is split instead.
DEFAULT_VALIDATION_FILE = "validation.csv"

if TYPE_CHECKING:
    from model_repository import Manifest

Strategy = Literal["full", "frozen", "lora"]
STRATEGIES: tuple[str, ...] = ("full", "frozen", "lora")
DEFAULT_BASE_MODEL = "distilroberta-base"
SCENARIOS_DIR = Path(__file__).resolve().parent / "scenarios"


class _Strict(BaseModel):
    # allow_inf_nan: `--learning-rate inf` (or `.inf` in a YAML) passed gt=0 and trained a run of NaNs
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """`lora_r: true` trained rank 1, `num_train_epochs: true` one epoch, `test_max_rows: true` 1 row."""
        return no_boolean_for_a_number(cls, value, info)


# The scenario's cleaning is the one text normalisation serving applies too (model_repository.text).
CleaningConfig = TextNormalization


class StrategyParams(_Strict):
    """Hyperparameters of one strategy; every field can be overridden per run."""

    learning_rate: float = Field(default=5e-5, gt=0, description="Peak AdamW learning rate.")
    num_train_epochs: float = Field(
        default=3.0, gt=0, description="Epochs over the (possibly capped) train set."
    )
    min_train_steps: int | None = Field(
        default=None,
        ge=1,
        description="Train at least this many optimizer steps: a small train set gets more epochs than "
        "num_train_epochs (early stopping on validation macro-F1 still ends a run that stops improving); "
        "full and lora (a frozen block may not set it).",
    )
    max_train_epochs: float = Field(
        default=20.0, gt=0, description="Upper bound on the epochs min_train_steps may add (full and lora)."
    )
    head_learning_rate: float | None = Field(
        default=None,
        gt=0,
        description="Learning rate of the classification head (full and lora); None: learning_rate.",
    )
    early_stopping_patience: int | None = Field(
        default=None,
        ge=0,
        description="This strategy's patience (evaluations without a better validation macro-F1); None: the "
        "run's (2); a run that names one (--early-stopping-patience) wins; 0 disables.",
    )
    batch_size: int = Field(default=16, ge=1, description="Rows per training step per device.")
    eval_batch_size: int = Field(default=64, ge=1, description="Rows per evaluation step.")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(
        default=0.06, ge=0, lt=1, description="Share of steps with linear warm-up (full and lora)."
    )
    lora_r: int = Field(default=8, ge=1, description="LoRA rank (lora only).")
    lora_alpha: int = Field(default=16, ge=1, description="LoRA scaling alpha (lora only).")
    lora_dropout: float = Field(default=0.1, ge=0, lt=1, description="Dropout on the LoRA path (lora only).")
    lora_target_modules: list[str] | None = Field(
        default=None,
        min_length=1,  # [] (`--lora-target-modules ,`) trained the architecture's defaults without a word
        description="Modules to adapt; None picks them from the architecture (lora only).",
    )
    lora_train_pooler: bool = Field(
        default=False,
        description="Train the encoder's pooler (BERT's dense + tanh on the first token) in full with the "
        "head, as RoBERTa's head trains its own dense layer (lora only; no pooler: ignored). Its head "
        "kind is bert_pooler: shared mode serves it from the base's `-pre-pooler` multi-adapter graph.",
    )


def _default_strategies() -> dict[str, StrategyParams]:
    return {
        # the learning rates the defaults search chose for the packaged scenarios (docs/results.md); the
        # steps that scale with the data (min_train_steps) stay theirs, for data of known size
        "full": StrategyParams(learning_rate=1e-4, head_learning_rate=1e-3),
        # a small head on embeddings computed once (training/frozen.py): epochs cost milliseconds
        "frozen": StrategyParams(learning_rate=3e-4, num_train_epochs=200, batch_size=64, weight_decay=0.05),
        "lora": StrategyParams(learning_rate=1e-3),
    }


class ScenarioConfig(_Strict):
    """One business scenario: its labels, where its data is and how to train it."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="Scenario name in the repository.")
    description: str = Field(default="", description="What the scenario classifies.")
    labels: list[str] = Field(description="Label names; their order is the logit order.")
    text_column: str = Field(default="text", description="Column holding the text.")
    label_column: str = Field(default="label", description="Column holding the label name.")
    max_length_tokens: int = Field(default=128, ge=8, le=4096, description="Truncation length in tokens.")
    train_file: str = Field(
        default="train.csv",
        description="Train file (csv, jsonl, json or parquet); relative paths are under <data_dir>/<name>/.",
    )
    validation_file: str | None = Field(
        default=DEFAULT_VALIDATION_FILE,
        description="Validation file; when a validation.csv named here does not exist, a stratified split of "
        "train is used (another name that does not exist is refused); null: always the split.",
    )
    validation_split: float = Field(
        default=0.1, gt=0, lt=0.5, description="Share of train held out when no validation file is given."
    )
    test_fraction: float = Field(
        default=0.0,
        ge=0,
        lt=0.5,
        description="Share of the train file held out as the scenario's own test split (fixed seed, "
        "stratified, never trained or tuned on); 0 keeps every row for training.",
    )
    test_max_rows: int = Field(
        default=2000,
        ge=1,
        description="At most this many test rows (the rest stay in train); a text's copies are held out "
        "together, so a cap that no held-out text's copies fit in is refused, naming the cap that fits.",
    )
    unknown_validation_labels: Literal["error", "drop"] = Field(
        default="error",
        description="A validation label not in `labels`: stop, or drop its rows with a warning.",
    )
    cleaning: CleaningConfig = Field(default_factory=CleaningConfig, description="Text cleaning.")
    int8_guard: bool = Field(
        default=True,
        description="int8 export: when quantising every MatMul loses more than 0.5 point of validation "
        "accuracy or changes more than 0.5 % of validation labels against fp32, keep the most sensitive "
        "nodes fp32 (the export's int8 guard; up to ~1.5x the all-int8 graph's CPU time). false: always "
        "publish every MatMul int8, the fastest graph; a frozen version then reads the shared base's "
        "every-MatMul-int8 graph (_bases/<key>/all-int8) instead of its guarded one.",
    )
    class_weighting: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Class-weighted cross-entropy; auto turns it on above the imbalance ratio (and off with "
        "weighted_sampling, which balances the classes already).",
    )
    imbalance_ratio: float = Field(
        default=3.0, gt=1, description="auto weighting turns on when max/min train class count exceeds this."
    )
    weighted_sampling: bool = Field(
        default=False,
        description="Sample train rows inversely to class frequency (auto class_weighting is then off).",
    )
    strategies: dict[Strategy, StrategyParams] = Field(
        default_factory=_default_strategies, description="Default hyperparameters per strategy."
    )
    search_space: SearchSpace | None = Field(
        default=None, description="What `labelwise tune` searches; None uses the default space."
    )

    @field_validator("strategies", mode="before")
    @classmethod
    def _over_strategy_defaults(cls, strategies: Any) -> Any:
        """A strategy block given in part keeps that strategy's defaults for the fields it leaves out:
        `frozen: {learning_rate: 0.001}` trains 200 epochs at batch 64 as the frozen defaults do, not the
        3 epochs at batch 16 of a bare StrategyParams (which it did, without a word). A block that lists
        every field (a recorded config read again) is unchanged."""
        if not isinstance(strategies, dict):
            return strategies
        defaults = _default_strategies()
        merged = {}
        for name, block in strategies.items():
            given = block.model_dump(exclude_unset=True) if isinstance(block, StrategyParams) else block
            if name in defaults and isinstance(given, dict):
                given = {**defaults[name].model_dump(exclude_unset=True), **given}
            merged[name] = given
        return merged

    @field_validator("labels", mode="before")
    @classmethod
    def _integer_labels(cls, labels: Any) -> Any:
        """YAML reads `labels: [0, 1]` as numbers: integer labels are the label names "0", "1" (the
        data files' labels are read as text). A boolean is refused by name: YAML reads yes/no/true/false
        unquoted as booleans, and its text could be any of those."""
        if not isinstance(labels, list):
            return labels
        for i, label in enumerate(labels):
            if isinstance(label, bool):
                raise ValueError(
                    f"labels[{i}] is the boolean {label} (YAML reads yes/no/true/false/on/off unquoted as "
                    "booleans): quote the label names, e.g. ['yes', 'no']"
                )
        return [str(x) if isinstance(x, int) else x for x in labels]

    @field_validator("labels")
    @classmethod
    def _labels_ok(cls, labels: list[str]) -> list[str]:
        if len(labels) < 2:
            raise ValueError(f"a scenario needs at least 2 labels, got {labels}")
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"labels must be unique; repeated: {dupes}")
        # a data file's label cells are read stripped and an empty one is refused: such a label has no rows
        spaced = [x for x in labels if not x.strip() or x != x.strip()]
        if spaced:
            raise ValueError(
                f"labels must be non-empty, without leading or trailing spaces (a data file's label cells "
                f"are read stripped, so no row could have them): {spaced}"
            )
        return labels

    @model_validator(mode="after")
    def _fill_strategies(self) -> ScenarioConfig:
        # A YAML may tune one strategy only; the others keep their defaults.
        defaults = _default_strategies()
        for name in STRATEGIES:
            self.strategies.setdefault(name, defaults[name])  # type: ignore[index]
        return self


class TrainConfig(_Strict):
    """Everything one training run needs, fully resolved; stored in the manifest as `training_config`."""

    scenario: ScenarioConfig = Field(description="The scenario being trained.")
    strategy: Strategy = Field(
        description="full: every weight; frozen: the head only; lora: adapters + head."
    )
    base_model: str = Field(
        default=DEFAULT_BASE_MODEL,
        description="Hub id, local folder, or the alias 'minilm' (packaged MiniLM).",
    )
    train_path: Path = Field(description="Resolved train file.")
    validation_path: Path | None = Field(description="Resolved validation file; None splits the train file.")
    params: StrategyParams = Field(description="Resolved hyperparameters of the strategy.")
    max_train_samples: int | None = Field(
        default=None,
        ge=2,
        description="Stratified cap on train rows; one row of every class is kept, so a cap below the "
        "class count keeps more rows, with a warning.",
    )
    max_eval_samples: int | None = Field(
        default=None,
        ge=2,
        description="Stratified cap on validation rows; one row of every class is kept, so a cap below the "
        "class count keeps more rows, with a warning.",
    )
    max_steps: int | None = Field(
        default=None,
        ge=1,
        description="Train this many optimizer steps, whatever num_train_epochs says (Hugging Face's "
        "max_steps), every strategy alike; early stopping may end the run sooner.",
    )
    eval_steps: int | None = Field(
        default=None, ge=1, description="Evaluate every N steps; None evaluates once per epoch."
    )
    early_stopping_patience: int | None = Field(
        default=2,
        ge=0,
        description="Evaluations without macro-F1 improvement before stopping; 0 (or None) disables.",
    )
    logging_steps: int = Field(default=20, ge=1, description="Log the training loss every N steps.")
    seed: int = Field(
        default=42, ge=0, le=2**32 - 1, description="Seed for sampling, splits and weight init (0 to 2**32-1)"
    )
    mixed_precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        default="auto", description="auto: bf16 (or fp16) on CUDA, fp32 on CPU."
    )
    qlora: bool = Field(default=False, description="Load the base in 4-bit (lora on CUDA with bitsandbytes).")
    output_dir: Path = Field(description="Run folder: logs, plots, metrics (git-ignored runs/ by default).")
    keep_checkpoints: bool = Field(default=False, description="Keep Trainer checkpoints after the run.")
    adversarial: Literal["none", "fgm", "pgd"] = Field(
        default="none",
        description="Adversarial training on the input embeddings' output: FGM (one step) or PGD (K steps).",
    )
    adversarial_epsilon: float | None = Field(
        default=None, gt=0, description="L2 radius of the embedding perturbation per row (fgm/pgd)."
    )
    pgd_steps: int = Field(default=3, ge=1, description="Ascent steps of PGD (pgd only).")

    @field_validator("base_model")
    @classmethod
    def _named(cls, value: str) -> str:
        # '' was taken for the default (distilroberta-base), and its load error named a model not asked for
        if not value.strip():
            raise ValueError(
                "empty: give a Hugging Face hub id, a local folder, or 'minilm' (packaged MiniLM)"
            )
        return value

    @model_validator(mode="after")
    def _qlora_needs_lora(self) -> TrainConfig:
        if self.qlora and self.strategy != "lora":
            raise ValueError("qlora applies to the lora strategy only")
        if self.adversarial != "none" and self.adversarial_epsilon is None:
            raise ValueError(f"adversarial {self.adversarial} needs adversarial_epsilon > 0 (--epsilon)")
        if self.adversarial == "none" and self.adversarial_epsilon is not None:
            # not silently ignored: the run would not be the adversarial one its settings suggest
            raise ValueError(
                "adversarial_epsilon (--epsilon) is set but adversarial is none: add --adversarial fgm|pgd"
            )
        return self


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    """$LABELWISE_DATA_DIR, else the shared/data folder beside the checkout."""
    env = os.environ.get("LABELWISE_DATA_DIR")
    return Path(env) if env else repo_root().parent / "shared" / "data"


def default_runs_dir() -> Path:
    return Path(os.environ.get("LABELWISE_RUNS_DIR", "runs"))


def list_scenarios() -> list[str]:
    """Names of the packaged scenario YAMLs."""
    return sorted(p.stem for p in SCENARIOS_DIR.glob("*.yaml"))


def _validate(raw: Any, source: str) -> ScenarioConfig:
    if not isinstance(raw, dict):
        raise ScenarioConfigError(f"{source}: expected a mapping of scenario settings")
    try:
        return ScenarioConfig.model_validate(raw)
    except ValidationError as exc:  # one `field: message` a problem, as an override's (below)
        raise ScenarioConfigError(f"{source}: invalid scenario config: {validation_problems(exc)}") from exc


def load_scenario(name_or_path: str | os.PathLike[str]) -> ScenarioConfig:
    """A packaged scenario by name (e.g. 'sentiment') or a scenario YAML by path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = SCENARIOS_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ScenarioConfigError(
                f"unknown scenario {str(name_or_path)!r}: packaged scenarios are {list_scenarios()}; "
                "or pass the path of a scenario YAML"
            )
    if not path.is_file():  # a device is never read (a link to /dev/zero would not end)
        raise ScenarioConfigError(f"scenario file {path} {not_a_file(path)}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:  # a traceback's last line, exit 1, naming no file
        raise ScenarioConfigError(
            f"scenario file {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x}: {exc.reason}); "
            "re-save it as UTF-8"
        ) from exc
    except yaml.YAMLError as exc:
        raise ScenarioConfigError(f"{path}: not valid YAML ({exc})") from exc
    return _validate(raw, str(path))


def custom_scenario(
    name: str, labels: list[str], data_dir: str | os.PathLike[str], **settings: Any
) -> ScenarioConfig:
    """A scenario built in Python: data files default to <data_dir>/train.csv and validation.csv.

    Example::

        scenario = custom_scenario("tickets", ["billing", "bug", "other"], "data/tickets")
        config = make_train_config(scenario, "lora", base_model="minilm", max_train_samples=500)
        manifest = train_and_publish(config, ModelRepository("var/model-repository"))
    """
    # Absolute: a relative path in a scenario is read under <data_dir>/<name>/, not from here.
    folder = Path(data_dir).expanduser().resolve()
    settings.setdefault("train_file", str(folder / "train.csv"))
    if "validation_file" not in settings:
        val = folder / "validation.csv"
        settings["validation_file"] = str(val) if val.exists() else None
    return _validate({"name": name, "labels": list(labels), **settings}, f"scenario {name!r}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _resolve_file(value: str | None, scenario: ScenarioConfig, data_dir: Path) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else data_dir / scenario.name / path


# StrategyParams fields the frozen strategy never reads: its head trains num_train_epochs epochs
# (training/frozen.py head_settings) at learning_rate on embeddings computed once, with no warm-up, no
# step floor and no separate head rate. (eval_steps, a TrainConfig field, is not read either: the head is
# evaluated once per epoch; no scenario block or `labelwise train` flag sets it.)
FROZEN_UNUSED = ("min_train_steps", "max_train_epochs", "warmup_ratio", "head_learning_rate")


def _refuse_frozen_unused(scenario: ScenarioConfig) -> None:
    """Refuse a scenario whose strategies.frozen block sets what a frozen run would silently ignore.

    Only values the scenario set (pydantic's model_fields_set) and that differ from the field's default
    count: the defaults, and a block re-read from a recorded config (which lists every field at its
    default), are never refused."""
    block = scenario.strategies.get("frozen")  # type: ignore[call-overload]
    if block is None:
        return
    given = [
        name
        for name in FROZEN_UNUSED
        if name in block.model_fields_set
        and getattr(block, name) != StrategyParams.model_fields[name].default
    ]
    if given:
        verb, them = ("is", "it") if len(given) == 1 else ("are", "them")
        raise ScenarioConfigError(
            f"scenario {scenario.name!r}: strategies.frozen sets {', '.join(given)}, which {verb} not used "
            "by the frozen strategy (its head trains num_train_epochs epochs at learning_rate on "
            "embeddings computed once: no warm-up, no step floor, no separate head rate): drop "
            f"{them} from strategies.frozen, or train with --strategy full or lora"
        )


def make_train_config(
    scenario: ScenarioConfig | str,
    strategy: str,
    *,
    base_model: str | None = None,
    data: str | os.PathLike[str] | None = None,
    validation_data: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    flags: Callable[[str], str] | None = None,
    **overrides: Any,
) -> TrainConfig:
    """Resolve a scenario, a strategy and per-run overrides into a validated TrainConfig.

    `overrides` may name any TrainConfig field (max_train_samples, max_steps, seed, ...), any
    StrategyParams field (learning_rate, num_train_epochs, batch_size, lora_r, ...), or the scenario's
    `max_length_tokens`, `class_weighting` and `weighted_sampling`. None values are ignored.
    flags: the option a field is given as (a CLI's `--epochs` for num_train_epochs), for a refusal to name
    instead of the field.
    """
    if isinstance(scenario, str):
        scenario = load_scenario(scenario)
    if strategy not in STRATEGIES:
        raise ScenarioConfigError(f"unknown strategy {strategy!r}: choose one of {list(STRATEGIES)}")
    if strategy == "frozen":
        _refuse_frozen_unused(scenario)  # before the scenario is re-validated from a dump below
    overrides = {k: v for k, v in overrides.items() if v is not None}
    scenario_keys = {"max_length_tokens", "class_weighting", "weighted_sampling", "imbalance_ratio"}
    scenario_over = {k: overrides.pop(k) for k in list(overrides) if k in scenario_keys}
    param_over = {k: overrides.pop(k) for k in list(overrides) if k in StrategyParams.model_fields}
    try:
        if scenario_over:
            scenario = ScenarioConfig.model_validate({**scenario.model_dump(), **scenario_over})
        params = StrategyParams.model_validate(
            {**scenario.strategies[strategy].model_dump(), **param_over}  # type: ignore[index]
        )
    except ValidationError as exc:
        # one `field: message` a problem, without pydantic's banner, input dump and documentation URL
        problems = validation_problems(exc, name=_named_by(flags))
        raise ScenarioConfigError(f"scenario {scenario.name!r}: invalid override: {problems}") from exc
    if params.early_stopping_patience is not None:  # the strategy's, or this run's override of it
        overrides["early_stopping_patience"] = params.early_stopping_patience
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if data is not None:
        train_path = Path(data)
        # --data without --validation-data: a sibling validation file when present, else a split.
        sibling = train_path.with_name("validation" + train_path.suffix)
        val_path = Path(validation_data) if validation_data else (sibling if sibling.is_file() else None)
        if not validation_data and val_path is not None:
            if _same_file(val_path, train_path):
                # the train file is itself validation.csv: scoring a run on its own train rows says nothing
                log.warning(
                    "validation: a split of %s (the train file is its own sibling validation file)", data
                )
                val_path = None
            else:
                log.info("validation: %s, beside the train file (--validation-data names another)", val_path)
    else:
        train_path = _resolve_file(scenario.train_file, scenario, root)  # type: ignore[assignment]
        val_path = (
            Path(validation_data)
            if validation_data
            else _resolve_file(scenario.validation_file, scenario, root)
        )
        if val_path is not None and not val_path.exists() and not validation_data:
            if Path(str(scenario.validation_file)).name != DEFAULT_VALIDATION_FILE:
                # a name of the scenario's own (a typo?) is not replaced by a split without a word
                raise ScenarioConfigError(
                    f"scenario {scenario.name!r}: validation_file {scenario.validation_file!r} does not "
                    f"exist ({val_path}): fix the name, or set validation_file: null to hold out "
                    f"{scenario.validation_split:.0%} of train"
                )
            val_path = None  # the scenario names a default that this dataset lacks: split train instead
    if output_dir is None:
        output_dir = default_runs_dir() / scenario.name / default_run_name(strategy)
    try:
        return TrainConfig(
            scenario=scenario,
            strategy=strategy,  # type: ignore[arg-type]
            base_model=DEFAULT_BASE_MODEL if base_model is None else base_model,
            # absolute: the manifest records them, and `labelwise evaluate` reads them from anywhere
            train_path=Path(train_path).absolute(),
            validation_path=Path(val_path).absolute() if val_path is not None else None,
            params=params,
            output_dir=Path(output_dir),
            **overrides,
        )
    except ValidationError as exc:
        problems = validation_problems(exc, name=_named_by(flags))
        raise ScenarioConfigError(
            f"scenario {scenario.name!r}: invalid training setting: {problems}"
        ) from exc


def _named_by(flags: Callable[[str], str] | None) -> Callable[[tuple[Any, ...]], str] | None:
    """How a refusal names an error's location: the option its field is given as (None: the field)."""
    if flags is None:
        return None
    return lambda loc: flags(str(loc[0])) if loc else ""


_RUN_NAMES: set[str] = set()  # the default run names this process has handed out


def default_run_name(strategy: str) -> str:
    """<strategy>-<date>-<time>-p<pid>, and -2, -3, ... when this process already named one so: runs
    started in the same second, by several processes (a shell loop over seeds with `&`) or by one, each
    get a folder of their own instead of writing over each other's metrics, plots and checkpoints."""
    base = f"{strategy}-{datetime.now():%Y%m%d-%H%M%S}-p{os.getpid()}"
    name, n = base, 1
    while name in _RUN_NAMES:
        n += 1
        name = f"{base}-{n}"
    _RUN_NAMES.add(name)
    return name


def recorded_scenario_config(source: Manifest) -> ScenarioConfig:
    """The scenario config the version was trained with (columns, cleaning, unknown-label handling), from
    its training_config; a version that recorded none gets the defaults for its labels (reading a file of
    its rows needs no more: export's parity rows, `labelwise evaluate --data`)."""
    recorded = (source.training_config or {}).get("scenario")
    if isinstance(recorded, dict):
        try:
            return ScenarioConfig.model_validate(recorded)
        except ValidationError:  # recorded by an older release: keep what reading the rows needs
            keep = ("name", "labels", "text_column", "label_column", "unknown_validation_labels", "cleaning")
            recorded = {k: recorded[k] for k in keep if k in recorded}
    else:
        recorded = {}
    try:
        return ScenarioConfig.model_validate(
            {"name": source.scenario, "labels": list(source.labels), **recorded}
        )
    except ValidationError as exc:
        raise ScenarioConfigError(
            f"{source.scenario} v{source.version}: its training_config holds no usable scenario config "
            f"({exc.error_count()} errors, first: {exc.errors()[0]['loc']})"
        ) from exc
