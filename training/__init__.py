"""Training: fine-tune scenario classifiers (full, frozen, LoRA) and publish them. Never imports ray.

Python API (what the CLI and the demo use)::

    from model_repository import ModelRepository
    from training import custom_scenario, load_scenario, make_train_config, train_and_publish

    config = make_train_config("spam", "lora", base_model="minilm", max_train_samples=1000)
    manifest = train_and_publish(config, ModelRepository(), export_precisions=["fp32", "int8"])

    # a scenario of your own, from a folder with train.csv (+ validation.csv) holding text,label
    scenario = custom_scenario("tickets", ["billing", "bug", "other"], "data/tickets", max_length_tokens=64)

Heavy libraries (torch, transformers, peft, datasets) are imported inside the functions that need them.
"""

from .config import (
    DEFAULT_BASE_MODEL,
    STRATEGIES,
    CleaningConfig,
    ScenarioConfig,
    StrategyParams,
    TrainConfig,
    custom_scenario,
    default_data_dir,
    list_scenarios,
    load_scenario,
    make_train_config,
)
from .data import PreparedData, clean_text, prepare_data
from .errors import (
    BaseModelNotFoundError,
    CollapsedRunError,
    DataError,
    ScenarioConfigError,
    StrategyError,
    TrainingError,
)
from .evaluate import (
    SPLITS,
    ComparisonRow,
    EvaluationRows,
    compare_strategies,
    comparison_markdown,
    evaluate_published,
    evaluation_rows,
    predict_logits,
    torch_logits,
    write_evaluation,
)
from .metrics import class_weights, classification_metrics
from .model import LORA_TARGETS, ResolvedBase, build_model, count_params, resolve_base_model
from .publish import export_available, load_published_model, publish_run, save_weights, train_and_publish
from .trainer import TrainedModel, train

__all__ = [
    "DEFAULT_BASE_MODEL",
    "LORA_TARGETS",
    "SPLITS",
    "STRATEGIES",
    "BaseModelNotFoundError",
    "CleaningConfig",
    "CollapsedRunError",
    "ComparisonRow",
    "DataError",
    "EvaluationRows",
    "PreparedData",
    "ResolvedBase",
    "ScenarioConfig",
    "ScenarioConfigError",
    "StrategyError",
    "StrategyParams",
    "TrainConfig",
    "TrainedModel",
    "TrainingError",
    "build_model",
    "class_weights",
    "classification_metrics",
    "clean_text",
    "compare_strategies",
    "comparison_markdown",
    "count_params",
    "custom_scenario",
    "default_data_dir",
    "evaluate_published",
    "evaluation_rows",
    "export_available",
    "list_scenarios",
    "load_published_model",
    "load_scenario",
    "make_train_config",
    "predict_logits",
    "prepare_data",
    "publish_run",
    "resolve_base_model",
    "save_weights",
    "torch_logits",
    "train",
    "train_and_publish",
    "write_evaluation",
]
