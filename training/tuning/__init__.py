"""Hyperparameter search (Optuna) and the perturbation test that measures robustness.

    from training.tuning import run_study
    summary = run_study("spam", "lora", trials=8, base_model="minilm", max_train_samples=800)

Optuna and torch are imported inside the functions that use them.
"""

from ..errors import TuningError
from .perturb import PerturbationReport, perturb_text, perturb_texts, robustness_of_published
from .space import ParamRange, SearchSpace, default_search_space
from .study import StudySummary, is_study_run_folder, run_study, tune_dir

__all__ = [
    "ParamRange",
    "PerturbationReport",
    "SearchSpace",
    "StudySummary",
    "TuningError",
    "default_search_space",
    "is_study_run_folder",
    "perturb_text",
    "perturb_texts",
    "robustness_of_published",
    "run_study",
    "tune_dir",
]
