"""`make results`: every strategy on every scenario at stated budgets, scored on the held-out test split.

One cell = one training run (scenario, strategy, train rows, seed, options). A finished cell leaves
`<out>/cells/<key>/result.json` and a copy in the ledger beside the report (`docs/results-cells/<key>.json`,
kept in git: `runs/` is scratch that a fresh clone or another machine lacks); a rerun skips every cell of
either, so the job resumes where it stopped, on this machine or the next. Each cell trains
with the scenario's defaults (training/scenarios/*.yaml), scores its torch model on the scenario's own
test split (training.data.split_test: never trained on, nor scored by a search run; but gaps seen on it
prompted rounds of the defaults search, see SELECTION_NOTE), and, for the cells that export, publishes
the version with fp32 and int8 graphs and scores both graphs on the same test rows through the serving
engine, from the raw texts (what is served). `docs/results.md` and its plots are regenerated from the
result files alone (`--report-only`), so a partial run still gives a truthful, partial report.
"""

from __future__ import annotations

import functools
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from model_repository.errors import LabelwiseError
from model_repository.passes import CPU_MAX_BATCH_TOKENS, MAX_BATCH_ROWS

SCENARIOS = ("sentiment", "emotion", "intent", "intent_atis", "news_topic", "spam")
STRATEGY_ORDER = ("full", "lora", "frozen")
BASE_MODEL = "minilm"
# How test figures of the served graphs were cut into passes (model_repository.passes): serving's own cut
SERVING_PASSES = f"as served: {MAX_BATCH_ROWS} rows per batch, {CPU_MAX_BATCH_TOKENS} tokens per pass"
# A frozen version whose int8 reads the shared base's fp32 graph (training.export's frozen int8 guard)
FP32_BASE = "the fp32 base (frozen int8 guard)"
MAX_EVAL_ROWS = 500  # validation rows for early stopping and the decision threshold
# Scenarios whose early stopping reads more validation rows than MAX_EVAL_ROWS. Emotion's rarest class
# (surprise) has 81 of the file's 2,000 rows: 500 stratified rows keep about 20 of them, so its macro-F1,
# and the epoch it picks, moved by a few rows (seed 42's LoRA at 4,000 rows stopped at epoch 2 on a
# validation peak of 0.899 that the test split did not confirm). Since 3 December 2026, 19:45 UTC.
EVAL_ROWS = {"emotion": 2000}
SEARCH_EVAL_ROWS = 1000
STAGES = ("matrix", "curve", "atis", "fgm", "sst2", "search", "spread")
DEFAULT_STAGES = ("matrix", "curve", "atis", "fgm", "sst2")
# The defaults search (`--stages search`): candidate settings on emotion, 1,000 rows, a fixed 5 epochs
# without early stopping, judged on VALIDATION macro-F1 only (test rows are not scored). Emotion is where
# the old defaults left LoRA furthest behind full fine-tuning (-22 points of test accuracy).
SEARCH_SCENARIOS = ("emotion",)
SEARCH_EPOCHS = 5
SEARCH_EPOCHS_SHOWN = 10  # history columns in the report's search table
QKVD = ("query", "key", "value", "dense")  # attention and feed-forward projections of BERT / RoBERTa layers
SEARCH: dict[str, tuple[str, dict[str, Any]]] = {
    "full-lr5e-5": ("full", {"learning_rate": 5e-5}),
    "lora-qkvd-r8-lr2e-3": ("lora", {"learning_rate": 2e-3, "lora_target_modules": list(QKVD)}),
    "lora-qv-r8-lr3e-3": ("lora", {"learning_rate": 3e-3, "lora_target_modules": ["query", "value"]}),
    "lora-qkvd-r16-lr4e-3": (
        "lora",
        {"learning_rate": 4e-3, "lora_r": 16, "lora_alpha": 32, "lora_target_modules": list(QKVD)},
    ),
    "full-lr1e-4-head1e-3": ("full", {"learning_rate": 1e-4, "head_learning_rate": 1e-3}),
    "lora-qv-r8-lr3e-3-10ep": (
        "lora",
        {"learning_rate": 3e-3, "lora_target_modules": ["query", "value"], "num_train_epochs": 10},
    ),
    "lora-qv-r8-lr1e-3": ("lora", {"learning_rate": 1e-3, "lora_target_modules": ["query", "value"]}),
    # Second round, after the 1,000-row matrix: LoRA's validation F1 on emotion was still rising after ~10
    # epochs (600 steps), and on sentiment it peaked at epoch 3 below full's. Run as the matrix runs a
    # cell (3 epochs or min_train_steps, early stopping, 500 validation rows) so that each compares with
    # the matrix cells' validation figures.
    "lora-qv-r16-lr2e-3-1200steps": (
        "lora",
        {"learning_rate": 2e-3, "lora_r": 16, "lora_alpha": 32, "lora_target_modules": ["query", "value"]}
        | {"num_train_epochs": 3, "min_train_steps": 1200, "early_stopping_patience": 3}
        | {"max_eval_samples": MAX_EVAL_ROWS},
    ),
    "lora-qkvd-r8-lr1e-3-1200steps": (
        "lora",
        {"learning_rate": 1e-3, "lora_target_modules": list(QKVD)}
        | {"num_train_epochs": 3, "min_train_steps": 1200, "early_stopping_patience": 3}
        | {"max_eval_samples": MAX_EVAL_ROWS},
    ),
    # The shared-batch serving mode (lora_mode: shared) serves adapters on the architecture's default
    # targets (query/value) from one multi-adapter graph: the default kept on them, with more steps.
    "lora-qv-r8-lr3e-3-1200steps": (
        "lora",
        {"learning_rate": 3e-3, "lora_target_modules": ["query", "value"]}
        | {"num_train_epochs": 3, "min_train_steps": 1200, "early_stopping_patience": 3}
        | {"max_eval_samples": MAX_EVAL_ROWS},
    ),
    # Third round: at 1,000 rows the full default (300 steps, ~5 epochs) had its best validation F1 at
    # the last epoch on intent, intent_atis and spam, and full trailed frozen on intent by 13 points of
    # test accuracy: full with LoRA's step floor and patience.
    "full-lr1e-4-head1e-3-1200steps": (
        "full",
        {"learning_rate": 1e-4, "head_learning_rate": 1e-3}
        | {"num_train_epochs": 3, "min_train_steps": 1200, "early_stopping_patience": 3}
        | {"max_eval_samples": MAX_EVAL_ROWS},
    ),
    # Fourth round: at 1,000 rows LoRA trailed full by 3.9 points of test accuracy on intent (77 classes)
    # and by 5.6 of macro-F1 on intent_atis. On BERT the classifier reads the pooler (dense + tanh on the
    # first token), which LoRA leaves frozen while full fine-tuning trains it (RoBERTa's head trains its
    # own dense layer); all-MiniLM-L6-v2 was trained for mean pooling, so its pooler never served a
    # classifier. Candidates: the pooler trained with the head, and the head alone at a higher rate.
    "lora-qkvd-r8-lr1e-3-pooler-1200steps": (
        "lora",
        {"learning_rate": 1e-3, "lora_target_modules": list(QKVD), "lora_train_pooler": True}
        | {"num_train_epochs": 3, "min_train_steps": 1200, "early_stopping_patience": 3}
        | {"max_eval_samples": MAX_EVAL_ROWS},
    ),
    "lora-qkvd-r8-lr1e-3-head5e-3-1200steps": (
        "lora",
        {"learning_rate": 1e-3, "head_learning_rate": 5e-3, "lora_target_modules": list(QKVD)}
        | {"num_train_epochs": 3, "min_train_steps": 1200, "early_stopping_patience": 3}
        | {"max_eval_samples": MAX_EVAL_ROWS},
    ),
    # Fifth round, at 4,000 rows: emotion LoRA ended at its step floor (1,200 steps = 4.8 epochs) with
    # validation macro-F1 0.879 against full's 0.896, still rising at epoch 4 (0.852 -> 0.879), where full
    # had levelled off by epoch 2. Candidate: the same LoRA with 8 epochs (2,000 steps), early stopping.
    "lora-qkvd-r8-lr1e-3-8ep": (
        "lora",
        {"learning_rate": 1e-3, "lora_target_modules": list(QKVD)}
        | {"num_train_epochs": 8, "min_train_steps": 1200, "early_stopping_patience": 3}
        | {"max_eval_samples": MAX_EVAL_ROWS},
    ),
    # It never learned (validation macro-F1 at the majority answer's for 8 epochs, loss at ln 6): lr 1e-3
    # held longer is past what LoRA on MiniLM takes. The same steps at half the rate: best validation
    # macro-F1 0.883 at epoch 5, then 0.878, 0.872 (the default 0.879, full 0.896): within a run's spread of
    # the default, not adopted; `--stages spread` measures that spread.
    "lora-qkvd-r8-lr5e-4-8ep": (
        "lora",
        {"learning_rate": 5e-4, "lora_target_modules": list(QKVD)}
        | {"num_train_epochs": 8, "min_train_steps": 1200, "early_stopping_patience": 3}
        | {"max_eval_samples": MAX_EVAL_ROWS},
    ),
    # Sixth round, at 4,000 rows: emotion's LoRA leaves BERT's pooler (dense + tanh on the first token,
    # which the classifier reads) frozen, where full fine-tuning trains it; on intent training it with
    # the head closed the gap (fourth round). The default with the pooler trained.
    "lora-qkvd-r8-lr1e-3-pooler-4000rows": (
        "lora",
        {"learning_rate": 1e-3, "lora_target_modules": list(QKVD), "lora_train_pooler": True}
        | {"num_train_epochs": 3, "min_train_steps": 1200, "early_stopping_patience": 3}
        | {"max_eval_samples": MAX_EVAL_ROWS},
    ),
}
# Train rows of a candidate's runs when not 1,000.
SEARCH_ROWS: dict[str, int] = {
    "lora-qkvd-r8-lr1e-3-8ep": 4000,
    "lora-qkvd-r8-lr5e-4-8ep": 4000,
    "lora-qkvd-r8-lr1e-3-pooler-4000rows": 4000,
}
# Candidates searched on more scenarios than SEARCH_SCENARIOS.
SEARCH_ON: dict[str, tuple[str, ...]] = {
    "lora-qv-r16-lr2e-3-1200steps": ("emotion", "sentiment"),
    "lora-qkvd-r8-lr1e-3-1200steps": ("emotion", "sentiment"),
    "full-lr1e-4-head1e-3-1200steps": ("intent", "intent_atis"),
    "lora-qkvd-r8-lr1e-3-pooler-1200steps": ("intent",),
    "lora-qkvd-r8-lr1e-3-head5e-3-1200steps": ("intent",),
}
# L2 radius of the perturbation per row (over tokens and hidden units; training/adversarial.py). The
# common BERT recipe normalises over the whole batch's embedding gradient, about epsilon / sqrt(batch) per
# row: 1.0 there is ~0.25 per row at batch 16. At 1.0 per row (the first setting here), with MiniLM's token
# embeddings of norm ~1.1 (median), the seed-42 run sat on the majority answer (validation macro-F1 0.202)
# for 8 epochs and was stopped by hand (2 December 2026).
FGM_EPSILON = 0.25
# Seed 42 is the matrix's: its LoRA sentiment cell at 1,000 rows is the first seed's run without FGM.
FGM_SEEDS = (42, 1, 2)
# Run-to-run spread (`--stages spread`, not part of the default job): full and LoRA again with other
# seeds where one run each left LoRA more than a point of test macro-F1 behind full (emotion, 4,000 rows:
# -1.3; the same cell published on another machine had been -0.1). Seed 42 is the matrix cell. Run again
# when emotion's LoRA default came to train the pooler (3 December 2026): validation F1 mean 0.874 ->
# 0.886 (full 0.885), test macro-F1 mean 0.865 -> 0.862 (full 0.878).
SPREAD = (("emotion", 4000),)
SPREAD_SEEDS = (42, 1, 2)
# What the report says of model selection on the test split. No run trains on test rows and no search run
# scores them, but which candidates were tried (SEARCH's first, third and fourth rounds), emotion's
# validation rows (EVAL_ROWS) and the spread stage (SPREAD) were prompted by gaps on the test split of
# earlier matrix runs.
SELECTION_NOTE = (
    "They were revised in rounds, and several rounds were prompted by gaps seen on the test split of "
    "earlier matrix runs: the first search round's scenario (emotion, where LoRA trailed full by 22 "
    "points of test accuracy), the third and fourth search rounds (full behind frozen on intent; LoRA "
    "behind full on intent and intent_atis), emotion's early stopping reading more validation rows (a "
    "validation peak that the test split did not confirm) and the spread stage (LoRA more than a point "
    "of test macro-F1 behind full). The candidates were judged on validation only and no run trains on "
    "test rows, but what was tried, and so which defaults were kept, followed what the test split "
    "showed: the test figures below carry some selection bias, and an unbiased estimate would need a "
    "fresh held-out split that none of these choices saw."
)


@dataclass(frozen=True)
class Cell:
    """One training run of the results job."""

    stage: str
    scenario: str
    strategy: str
    rows: int | None  # stratified train rows; None = the whole train file (minus the test split)
    seed: int = 42
    export: bool = False
    class_weighting: str | None = None  # None: the scenario's setting
    adversarial: str | None = None
    variant: str | None = None  # a SEARCH entry: its settings override the scenario's defaults

    @property
    def key(self) -> str:
        parts = [self.stage, self.scenario, self.strategy, f"n{self.rows or 'all'}", f"s{self.seed}"]
        if self.class_weighting:
            parts.append(f"cw-{self.class_weighting}")
        if self.adversarial:
            parts.append(self.adversarial)
        if self.variant:
            parts.append(self.variant)
        return "-".join(parts)


def plan(
    stages: tuple[str, ...],
    scenarios: tuple[str, ...],
    budgets: tuple[int, ...],
    variants: tuple[str, ...] | None = None,
    strategies: tuple[str, ...] = STRATEGY_ORDER,
) -> list[Cell]:
    """The cells of the requested stages, cheapest first within each stage (variants: search candidates
    to run, default all; strategies: those of the matrix, curve, atis and sst2 cells)."""
    cells: list[Cell] = []
    if "matrix" in stages:
        # The smallest budget runs first for every scenario, so that every scenario has its figures even
        # when a run is stopped before the larger budgets. Every matrix cell exports fp32 + int8 and scores
        # both graphs on the test split through the serving engine (the report's int8 - fp32 column).
        for rows in sorted(budgets):
            for scenario in scenarios:
                for strategy in strategies:
                    cells.append(Cell("matrix", scenario, strategy, rows, export=True))
    if "curve" in stages:
        for strategy in [s for s in ("full", "lora") if s in strategies]:
            cells.append(Cell("curve", "sentiment", strategy, 16000))
    if "atis" in stages:
        # The section compares the scenario's weighting (the matrix cell at 1,000 rows, reused when the
        # matrix ran it: _reuse) with weighting off; without the matrix at 1,000 rows (--budgets 2000,4000)
        # the weighted run is this stage's own.
        for strategy in [s for s in ("full", "lora") if s in strategies]:
            cells.append(Cell("atis", "intent_atis", strategy, 1000))
            cells.append(Cell("atis", "intent_atis", strategy, 1000, class_weighting="off"))
    if "fgm" in stages and "lora" in strategies:
        for seed in FGM_SEEDS:
            for adversarial in (None, "fgm"):
                cells.append(Cell("fgm", "sentiment", "lora", 1000, seed=seed, adversarial=adversarial))
    if "spread" in stages:
        for scenario, rows in SPREAD:
            for seed in SPREAD_SEEDS:
                for strategy in [s for s in ("full", "lora") if s in strategies]:
                    cells.append(Cell("spread", scenario, strategy, rows, seed=seed))
    if "sst2" in stages:
        for strategy in strategies:
            cells.append(Cell("sst2", "sst2", strategy, max(budgets)))
    if "search" in stages:
        for variant, (strategy, _settings) in SEARCH.items():
            if variants is None or variant in variants:
                for scenario in SEARCH_ON.get(variant, SEARCH_SCENARIOS):
                    rows = SEARCH_ROWS.get(variant, 1000)
                    cells.append(Cell("search", scenario, strategy, rows, variant=variant))
    return cells


def _matrix_alias(cell: Cell, done: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """A cell another stage already ran with identical settings (e.g. atis weighted = the matrix cell)."""
    twin = Cell("matrix", cell.scenario, cell.strategy, cell.rows, cell.seed, True, cell.class_weighting)
    return done.get(twin.key) or done.get(
        Cell("matrix", cell.scenario, cell.strategy, cell.rows, cell.seed, False, cell.class_weighting).key
    )


# ---- one cell ------------------------------------------------------------------------------------


# How a record's best_epoch was chosen: the kept checkpoint's epoch, as training.metrics.training_epochs
# reads it from the full log history (eval_selection: macro-F1, then the lower validation loss). Records
# without it (before 5 December 2026) stored the LAST of equal-F1 epochs, which is not the one kept.
BEST_EPOCH_RULE = "kept checkpoint (training.metrics.training_epochs)"


def _epochs(log_history: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """(epochs run, epoch of the checkpoint the run kept) from a Trainer log history: the first best by
    `eval_selection` (macro-F1, ties to the lower validation loss), else by macro-F1, as the Trainer and
    the frozen head's loop keep it (training.metrics.training_epochs)."""
    from training.metrics import training_epochs

    best, ran = training_epochs(log_history)
    return (ran if any("epoch" in e for e in log_history) else None), best


def best_epoch(rec: dict[str, Any]) -> float | None:
    """The epoch of the checkpoint a cell kept. A record written before BEST_EPOCH_RULE stored the last of
    equal-F1 epochs: recomputed from its validation history, where the run kept the first of them (the
    Trainer and the frozen head's loop replaced their best only on a higher macro-F1 until 5 December
    2026, 07:00 UTC). A record scored on SPLIT_VERSION 2 came after that, when equal F1s went to the
    lower validation loss, which the record does not hold: None where its history has such a tie."""
    recorded = rec.get("best_epoch")
    history = rec.get("validation_history") or []
    if rec.get("best_epoch_rule") == BEST_EPOCH_RULE or recorded is None or not history:
        return recorded
    top = max(f1 for _epoch, f1 in history)
    tied = [float(epoch) for epoch, f1 in history if f1 == top]
    if len(tied) > 1 and rec.get("split_version", 1) >= 2:
        return None
    # the history rounds epochs to 2 decimals: keep the recorded value where it names the same epoch
    return recorded if round(float(recorded), 2) == tied[0] else tied[0]


def _scores(label_ids: list[int], logits: np.ndarray, labels: list[str]) -> dict[str, Any]:
    from training.metrics import classification_metrics

    m = classification_metrics(np.asarray(label_ids), logits.argmax(-1), labels)
    per_class = {name: round(float(v["f1"]), 4) for name, v in m.get("per_class", {}).items()}
    return {
        "accuracy": round(m["accuracy"], 4),
        "macro_f1": round(m["macro_f1"], 4),
        "per_class_f1": per_class,
        # test rows of each label: macro-F1 averages over the labels with some (an absent one's F1 is 0)
        "support": {name: int(v["support"]) for name, v in m.get("per_class", {}).items()},
    }


def majority_macro_f1(rec: dict[str, Any]) -> float:
    """The test macro-F1 of always answering the majority label, averaged as classification_metrics
    averages (over the labels with test rows): that label's F1 is 2p / (1 + p) (precision p, its share of
    the rows; recall 1), every other label's 0."""
    p = float(rec["majority_test_accuracy"])
    present = test_labels_present(rec)
    return 2 * p / (1 + p) / max(1, len(present) if present else len(rec["labels"]))


def test_labels_present(rec: dict[str, Any]) -> set[str] | None:
    """The labels with rows in the test split a record was scored on: its per-class support where it
    records one, else the scenario's test split carved again as the record's split version carved it
    (test_split_labels); None when that cannot be told (the data file is not here, or it no longer gives
    the record's number of test rows)."""
    support = (rec.get("test") or {}).get("support")
    if support is not None:
        return {name for name, n in support.items() if n > 0}
    found = test_split_labels(rec["cell"]["scenario"], rec.get("split_version", 1))
    if found is None or found[0] != rec.get("test_rows"):
        return None
    return set(found[1])


@functools.cache
def test_split_labels(scenario: str, version: int) -> tuple[int, tuple[str, ...]] | None:
    """(rows, labels present) of a scenario's test split as split version `version` carved it: 2 by
    distinct text (training.data.split_test), 1 row by row (stratified_split over the same fraction of
    rows); None when the scenario's train file cannot be read here."""
    import tempfile

    from training import make_train_config
    from training.data import TEST_SPLIT_SEED, load_labeled, split_test, stratified_split

    try:
        with tempfile.TemporaryDirectory(prefix="labelwise-split-") as tmp:
            config = make_train_config(scenario, "frozen", base_model=BASE_MODEL, output_dir=tmp)
        labels = config.scenario.labels
        train, _ = load_labeled(config.train_path, config.scenario, labels, unknown="error")
    except Exception:
        return None
    if version >= 2:
        _rest, test = split_test(train, config.scenario)
        ids = [] if test is None else list(test.label_ids)
    else:
        s = config.scenario
        fraction = min(s.test_fraction, s.test_max_rows / len(train)) if s.test_fraction > 0 else 0.0
        _keep, held = stratified_split(train.label_ids, fraction, TEST_SPLIT_SEED) if fraction else ([], [])
        ids = [train.label_ids[i] for i in held]
    return len(ids), tuple(labels[i] for i in sorted(set(ids)))


def eval_rows(scenario: str) -> int:
    """The cap of validation rows a scenario's cells read today."""
    return EVAL_ROWS.get(scenario, MAX_EVAL_ROWS)


def _split_note(done: dict[str, dict[str, Any]]) -> str:
    """How many recorded cells were scored on a test split carved row by row (before SPLIT_VERSION 2).
    Only cells that score the test split count: search cells never do (and are never run again)."""
    tested = {k: rec for k, rec in done.items() if rec["cell"]["stage"] != "search" and rec.get("test")}
    older = [k for k, rec in tested.items() if rec.get("split_version", 1) != split_version()]
    if not older:
        return "every cell below was scored on it."
    which = (
        f"all {len(tested)} test-scored cells"
        if len(older) == len(tested)
        else f"{len(older)} of the {len(tested)} test-scored cells"
    )
    return (
        f"{which} below were trained and scored before that, on a split carved "
        "row by row, where a file's repeated texts could sit on both sides (spam: 62 of its 446 test rows "
        "had their text in train; intent_atis 51 of 450, news_topic 20 of 178, sst2 11 of 2,000, the "
        "others none), which flatters their test figures; the next `make results` runs them again."
    )


def split_version() -> int:
    """training.data.SPLIT_VERSION (records written before it existed were split row by row: 1)."""
    from training.data import SPLIT_VERSION

    return SPLIT_VERSION


def recorded_eval_rows(rec: dict[str, Any]) -> int:
    """The cap a cell record ran with (records written before EVAL_ROWS existed ran with MAX_EVAL_ROWS)."""
    return rec.get("max_eval_samples", MAX_EVAL_ROWS)


def _scored_as_served_now(rec: dict[str, Any]) -> bool:
    """Whether a cell ran under run_cell's scoring of 5 December 2026 (`finished_at` names it): every
    strategy's fp32/int8 figures through the serving engine, as a replica runs the graphs (layer norms
    unfused on CPU). Full and LoRA cells before it took publish's parity, scored on training's ONNX Runtime
    session (or, scored again by score_served, the engine's before the unfusing)."""
    return "finished_at" in rec and rec.get("test_int8", {}).get("scored_by") == "serving engine"


def _other_passes(rec: dict[str, Any]) -> bool:
    """Whether a record's int8 test figure was scored in passes other than serving's (◇ in the report)."""
    return "test_int8" in rec and rec["test_int8"].get("passes") != SERVING_PASSES


def _overrides(cell: Cell) -> dict[str, Any]:
    """What a cell changes of its scenario's defaults for its strategy."""
    overrides: dict[str, Any] = {
        "max_eval_samples": eval_rows(cell.scenario),
        "seed": cell.seed,
    }
    if cell.rows is not None:
        overrides["max_train_samples"] = cell.rows
    if cell.class_weighting:
        overrides["class_weighting"] = cell.class_weighting
    if cell.adversarial:
        overrides.update(adversarial=cell.adversarial, adversarial_epsilon=FGM_EPSILON)
    if cell.variant:
        # early_stopping_patience 0: off (make_train_config drops None overrides); a candidate may set epochs
        overrides.update(num_train_epochs=SEARCH_EPOCHS, min_train_steps=1, early_stopping_patience=0)
        overrides.update({"max_eval_samples": SEARCH_EVAL_ROWS, **SEARCH[cell.variant][1]})
    return overrides


def cell_params(cell: Cell, base_model: str = BASE_MODEL) -> dict[str, Any]:
    """The training parameters a cell runs with under the current defaults (as its record stores them)."""
    return cell_settings(cell, base_model)["params"]


# Scenario fields that are not settings of a run: the strategies' parameters (compared as `params`), the
# search space (of `labelwise tune`) and the description.
_NOT_RUN_SETTINGS = ("strategies", "search_space", "description")


def scenario_settings(config: Any) -> dict[str, Any]:
    """A run's scenario-level settings as its record stores them (`scenario_settings`): everything of
    config.scenario but the strategies, the search space and the description (labels, max_length_tokens,
    class weighting, imbalance_ratio, the test and validation splits, cleaning, the int8 guard...)."""
    dump = config.scenario.model_dump(exclude=set(_NOT_RUN_SETTINGS))
    return json.loads(json.dumps(dump))


# TrainConfig fields that are not run-level settings of a cell: where it reads and writes, what the record
# keeps apart (scenario_settings, params, base_model), and whether checkpoints are kept.
_NOT_RUN_LEVEL = {
    "output_dir",
    "train_path",
    "validation_path",
    "scenario",
    "params",
    "base_model",
    "keep_checkpoints",
}


def run_settings(config: Any) -> dict[str, Any]:
    """A run's TrainConfig-level settings as its record stores them (`run_settings`): the early stopping
    patience it resolved to (the run's default where the strategy sets none), the adversarial settings,
    seed, row caps, steps, mixed precision..."""
    return json.loads(config.model_dump_json(exclude=_NOT_RUN_LEVEL))


def cell_settings(cell: Cell, base_model: str = BASE_MODEL) -> dict[str, Any]:
    """{"params", "scenario_settings", "run_settings", "base_model"}: what a cell runs with under the
    current defaults."""
    import tempfile

    from training import make_train_config

    with tempfile.TemporaryDirectory(prefix="labelwise-cell-") as tmp:
        config = make_train_config(
            cell.scenario, cell.strategy, base_model=base_model, output_dir=tmp, **_overrides(cell)
        )
    params = {k: v for k, v in config.params.model_dump().items() if v is not None}
    return {
        "params": json.loads(json.dumps(params)),
        "scenario_settings": scenario_settings(config),
        "run_settings": run_settings(config),
        "base_model": base_model,
    }


def _param_defaults() -> dict[str, Any]:
    """Every StrategyParams field's default: what a record written before the field existed ran with."""
    from training.config import StrategyParams

    return {name: field.default for name, field in StrategyParams.model_fields.items()}


def _run_defaults() -> dict[str, Any]:
    """Every TrainConfig field's default: what a record written before the field existed ran with."""
    from training.config import TrainConfig

    return {name: field.default for name, field in TrainConfig.model_fields.items()}


def same_params(
    recorded: dict[str, Any], current: dict[str, Any], defaults: dict[str, Any] | None = None
) -> bool:
    """Whether a record ran with today's parameters (defaults: StrategyParams', or _run_defaults() for
    run_settings). A parameter added after the record was written is missing from it: at its field default
    it changes nothing, so it does not make the record stale (else every new option would send every
    finished cell back to run)."""
    defaults = _param_defaults() if defaults is None else defaults
    added = {k for k in current.keys() - recorded.keys() if k in defaults and current[k] == defaults[k]}
    return recorded == {k: v for k, v in current.items() if k not in added}


def is_current(rec: dict[str, Any], base_model: str = BASE_MODEL) -> bool:
    """Whether a record ran as its cell runs today: the same parameters (same_params), cap of validation
    rows (EVAL_ROWS), held-out rows (training.data.SPLIT_VERSION) and, where the record names them, the
    same scenario-level settings (scenario_settings) and base model (since 5 December 2026), run-level
    settings (run_settings: early stopping patience, adversarial epsilon...; before them, an adversarial
    cell's epsilon) and test rows (test_sha256, where the scenario's train file is here to carve them
    again). Search cells are the record of how the defaults were chosen: always current."""
    cell = Cell(**rec["cell"])
    if cell.stage == "search" or rec.get("params") is None:
        return True
    if recorded_eval_rows(rec) != eval_rows(cell.scenario) or rec.get("split_version", 1) != split_version():
        return False
    now = cell_settings(cell, base_model)
    run = now["run_settings"]
    # a record written before they were recorded is judged on the checks above only
    return (
        same_params(rec["params"], now["params"])
        and rec.get("scenario_settings", now["scenario_settings"]) == now["scenario_settings"]
        and same_params(rec.get("run_settings", run), run, _run_defaults())
        and rec.get("adversarial_epsilon", run["adversarial_epsilon"]) == run["adversarial_epsilon"]
        and rec.get("base_model", base_model) == base_model
        and _same_test_rows(rec)
    )


def _same_test_rows(rec: dict[str, Any]) -> bool:
    """Whether the scenario's test split carved today holds the rows the record was scored on (its train
    file changed else: rows the cell never saw may have replaced them, rows it trained on among them).
    True where the record names no digest or the train file is not here to carve it again."""
    recorded = rec.get("test_sha256")
    now = None if recorded is None else test_split_digest(rec["cell"]["scenario"])
    return now is None or now == recorded


def test_split_digest(scenario: str) -> str | None:
    """training.data.rows_digest of a scenario's test split as its train file here gives it today (read
    again only when the file changed); None when the file cannot be read here or holds no test split."""
    import tempfile

    from training import make_train_config

    with tempfile.TemporaryDirectory(prefix="labelwise-split-") as tmp:
        path = make_train_config(scenario, "frozen", base_model=BASE_MODEL, output_dir=tmp).train_path
    try:
        stat = path.stat()
    except OSError:
        return None
    return _test_split_digest(scenario, str(path), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _test_split_digest(scenario: str, path: str, _size: int, _mtime_ns: int) -> str | None:
    """test_split_digest of one state of the train file (its size and time key the cache)."""
    from training import load_scenario
    from training.data import load_labeled, rows_digest, split_test

    config = load_scenario(scenario)
    try:
        train, _ = load_labeled(Path(path), config, config.labels, unknown="error")
    except (OSError, ValueError):  # not readable here (DataError is a ValueError): nothing to compare with
        return None
    _rest, test = split_test(train, config)
    return None if test is None else rows_digest(test, config.labels)


def set_aside_stale(
    out: Path,
    done: dict[str, dict[str, Any]],
    say: Callable[[str], None],
    base_model: str = BASE_MODEL,
    ledger: Path | None = None,
) -> list[str]:
    """Cells trained with other parameters or scenario settings than the current defaults give (a default
    changed since), on another base model, on another cap of validation rows (EVAL_ROWS), or on other
    held-out rows (training.data.SPLIT_VERSION): move them to <out>/stale/ and out of `done`, so that they
    run again; return their keys (is_current). Search cells are the record of how the defaults were
    chosen and stay."""
    moved = []
    for key, rec in list(done.items()):
        if is_current(rec, base_model):
            continue
        _move_aside(out, ledger, key)
        del done[key]
        moved.append(key)
    if moved:
        say(
            f"results: {len(moved)} cells ran with other defaults than today's, moved to {out / 'stale'} "
            f"to run again: {', '.join(moved)}"
        )
    return moved


def _move_aside(out: Path, ledger: Path | None, key: str, run_folder: bool = True, copy: bool = True) -> None:
    """Move a cell's run folder (run_folder) and its ledger copy (copy) to stale/; a cell set aside before
    keeps its first record there, the later one is named with the time."""
    taken = (out / "stale" / key).exists() or (
        ledger is not None and (ledger / "stale" / f"{key}.json").exists()
    )
    name = key if not taken else f"{key}-{time.strftime('%Y%m%d%H%M%S')}"
    if run_folder and (out / "cells" / key).is_dir():
        (out / "stale").mkdir(parents=True, exist_ok=True)
        (out / "cells" / key).rename(out / "stale" / name)
    if copy and ledger is not None and (ledger / f"{key}.json").is_file():
        (ledger / "stale").mkdir(parents=True, exist_ok=True)
        (ledger / f"{key}.json").rename(ledger / "stale" / f"{name}.json")


def _finished(rec: dict[str, Any]) -> datetime | None:
    """When a record's run finished: `finished_at` (since 5 December 2026), else when it published."""
    for stamp in (rec.get("finished_at"), rec.get("version_created_at")):
        if stamp:
            try:
                when = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
            except ValueError:
                continue
            return when if when.tzinfo else when.replace(tzinfo=UTC)
    return None


def _fresher(local: dict[str, Any], ledgered: dict[str, Any], current: tuple[bool, bool]) -> str | None:
    """Which of two different records of one cell load_done keeps: "local" (the run folder's) or "ledger".
    A current record (`current`: is_current of each) beats a stale one; between two current ones the
    later finished (_finished). None when that does not tell them apart (both stale: set_aside_stale
    moves both; no times to compare): the run folder's, the ledger left as it is."""
    if current[0] != current[1]:
        return "local" if current[0] else "ledger"
    if not current[0]:
        return None
    times = _finished(local), _finished(ledgered)
    if times[0] is None or times[1] is None or times[0] == times[1]:
        return None
    return "local" if times[0] > times[1] else "ledger"


def run_cell(
    cell: Cell,
    out: Path,
    repository: Any,
    score_graph: Callable[..., dict[str, Any]] | None,
    base_model: str = BASE_MODEL,
    ledger: Path | None = None,
) -> dict:
    """Train, score on the test split (torch, and the served graphs when the cell exports), save."""
    from training import CollapsedRunError, make_train_config, publish_run, save_weights, train
    from training.data import rows_digest
    from training.evaluate import predict_logits

    folder = out / "cells" / cell.key
    config = make_train_config(
        cell.scenario, cell.strategy, base_model=base_model, output_dir=folder / "run", **_overrides(cell)
    )
    started = time.perf_counter()
    result = train(config)
    test = result.data.test
    if test is None:
        raise RuntimeError(f"scenario {cell.scenario} holds out no test split (test_fraction 0)")
    labels = result.labels
    # A search cell chooses defaults: it is judged on validation only and never looks at the test rows.
    scored = None
    if cell.stage != "search":
        logits = predict_logits(result.model, result.tokenizer, test.texts, config.scenario.max_length_tokens)
        scored = _scores(test.label_ids, logits, labels)
    counts = np.bincount(test.label_ids, minlength=len(labels))
    ran, best = _epochs(result.log_history)
    record: dict[str, Any] = {
        "cell": asdict(cell),
        "key": cell.key,
        "train_rows": len(result.data.train),
        "validation_rows": len(result.data.validation),
        "max_eval_samples": config.max_eval_samples,
        "test_rows": len(test),
        # which rows: a train file changed since carves other ones (is_current, score_served)
        "test_sha256": rows_digest(test, labels),
        "labels": labels,
        "majority_test_accuracy": round(float(counts.max() / counts.sum()), 4),
        "params": {k: v for k, v in config.params.model_dump().items() if v is not None},
        "scenario_settings": scenario_settings(config),
        "run_settings": run_settings(config),
        "base_model": base_model,
        "split_version": split_version(),
        "class_weighting": result.metrics.get("class_weighting"),
        "epochs_run": ran,
        "best_epoch": best,
        "best_epoch_rule": BEST_EPOCH_RULE,
        "train_time_s": round(result.train_time_s, 1),
        "trainable_params": result.trainable_params,
        "total_params": result.total_params,
        "artifact_bytes": save_weights(result, folder / "weights"),
        "validation": {
            "accuracy": round(result.metrics["accuracy"], 4),
            "macro_f1": round(result.metrics["macro_f1"], 4),
        },
        "validation_history": [
            [round(float(e["epoch"]), 2), round(float(e["eval_macro_f1"]), 4)]
            for e in result.log_history
            if "eval_macro_f1" in e
        ],
        "test": scored,
    }
    if cell.adversarial:
        record["adversarial_epsilon"] = config.adversarial_epsilon
    if result.metrics.get("collapse_restarts"):
        # params stay the defaults the cell ran under (stale detection compares them); this is the rate
        # of the run that was kept after the collapse restarts (training/trainer.py)
        record["collapse_restarts"] = result.metrics["collapse_restarts"]
        record["trained_learning_rate"] = result.config.params.learning_rate
    if result.metrics.get("collapsed"):
        record["collapsed"] = True
    manifest = None
    if cell.export and repository is not None:
        try:
            manifest = publish_run(result, repository, export_precisions=["fp32", "int8"])
        except CollapsedRunError as exc:
            record["publish_refused"] = str(exc)
    if manifest is not None:
        record["version"] = manifest.version
        stored = repository.load_manifest(cell.scenario, manifest.version)
        record.update(_publish_facts(json.loads(stored.model_dump_json())))
        record["graph_bytes"] = {e.precision: e.size_bytes for e in manifest.exports}
        for precision in ("fp32", "int8"):
            # Every strategy through the serving engine, from the raw texts: what a replica runs (a frozen
            # version as the shared base encoder + its head; full and LoRA graphs with their layer norms
            # unfused on CPU, serving/engine/graph_rewrite.py, which moves int8 answers against publish's
            # parity, scored on training's ONNX Runtime session: not what is served).
            if score_graph is not None:
                record[f"test_{precision}"] = {
                    **score_graph(repository, manifest, precision, test.raw or test.texts, test.label_ids),
                    "scored_by": "serving engine",
                    "passes": SERVING_PASSES,
                    **_base_recipe(repository, manifest, precision),
                }
    record["cell_wall_s"] = round(time.perf_counter() - started, 1)
    record["finished_at"] = datetime.now(UTC).isoformat()
    import torch

    record["machine"] = _machine(torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    folder.mkdir(parents=True, exist_ok=True)
    save_record(out, ledger, record)
    del result
    return record


def engine_scorer() -> Callable[..., dict[str, Any]]:
    """Scores a published version's graph through the serving engine (raw texts in, as served)."""
    from labelwise.evaluation import engine_logits

    def score(repository: Any, manifest: Any, precision: str, texts: list[str], label_ids: list[int]) -> dict:
        logits, _how = engine_logits(repository, manifest, list(texts), precision)
        return _scores(label_ids, logits, manifest.labels)

    return score


# ---- the job -------------------------------------------------------------------------------------


def score_served(
    out: Path,
    done: dict[str, dict[str, Any]],
    repository: Any,
    score_graph: Callable[..., dict[str, Any]],
    say: Callable[[str], None] = print,
    base_model: str = BASE_MODEL,
    ledger: Path | None = None,
) -> int:
    """Score again, through the serving engine, the published cells whose fp32/int8 figures are not those
    of the served path; save them; return how many. Not served as scored:
    - a frozen cell scored by publish: that scored the version's own graphs, but serving runs a frozen
      version as the shared base encoder + its head; or one scored under another base int8 recipe;
    - any cell scored in other passes than serving's (SERVING_PASSES; before 3 December 2026 publish
      scored 32 rows per pass in file order and the engine 16,384 tokens per pass): int8's activation
      scales are per pass, so its figures are those of the passes it ran in (model_repository.passes).
    Cells published on another machine (no version here) keep their recorded figures."""
    from training import make_train_config
    from training.data import load_test_split, rows_digest

    count = 0
    for key, rec in done.items():
        strategy = rec["cell"]["strategy"]
        if rec.get("version") is None or _published(out, rec) is None:
            continue  # run on another machine (or its repository is gone): its recorded figures stand
        scenario = rec["cell"]["scenario"]
        manifest = repository.verify(scenario, rec["version"])
        recipe = _base_recipe(repository, manifest, "int8")
        int8 = rec.get("test_int8", {})
        stale = int8.get("passes") != SERVING_PASSES
        if strategy == "frozen":
            stale = stale or int8.get("scored_by") == "publish"
            stale = stale or int8.get("base_quantization") != recipe.get("base_quantization")
        if not stale:
            continue
        test = load_test_split(make_train_config(scenario, strategy, base_model=base_model))
        if len(test) != rec["test_rows"]:
            raise RuntimeError(
                f"{key}: the test split has {len(test)} rows, the cell scored {rec['test_rows']}"
            )
        if rec.get("test_sha256") not in (None, rows_digest(test, rec["labels"])):
            raise RuntimeError(
                f"{key}: the test split carved today holds other rows than the {rec['test_rows']} the cell "
                "was scored on (its train file changed since): run the cell again"
            )
        before = {p: rec.get(f"test_{p}", {}).get("accuracy") for p in ("fp32", "int8")}
        for precision in ("fp32", "int8"):
            rec[f"test_{precision}"] = {
                **score_graph(repository, manifest, precision, test.raw or test.texts, test.label_ids),
                "scored_by": "serving engine",
                "passes": SERVING_PASSES,
                **_base_recipe(repository, manifest, precision),
            }
        save_record(out, ledger, rec)
        count += 1
        say(
            f"{key}: scored as served, fp32 {rec['test_fp32']['accuracy']:.4f}, "
            f"int8 {rec['test_int8']['accuracy']:.4f} (recorded before: fp32 {before['fp32']}, "
            f"int8 {before['int8']})"
        )
    return count


def _base_recipe(repository: Any, manifest: Any, precision: str) -> dict[str, str]:
    """{"base_quantization": how the shared base's int8 graph was quantised} for a frozen version's int8
    figures (bases exported before the shared-base recipe quantised every MatMul); {} otherwise."""
    if precision != "int8" or manifest.strategy != "frozen" or manifest.base_encoder is None:
        return {}
    if manifest.base_encoder.folder("int8") == "fp32":
        return {"base_quantization": FP32_BASE}
    info = repository.base_info(manifest.base_encoder.key, manifest.base_encoder.folder("int8")).get(
        "info", {}
    )
    return {"base_quantization": info.get("quantization", "every MatMul int8")}


def ledger_dir(docs: Path) -> Path:
    """The report's cell records in the repository: docs/results-cells/ beside docs/results.md."""
    return docs.with_name(f"{docs.stem}-cells")


def _shown(path: Path) -> str:
    """A path as the report names it: relative to the working directory when it is inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def save_record(out: Path, ledger: Path | None, record: dict[str, Any]) -> None:
    """Write a cell's record to its run folder (when this machine ran it) and to the ledger, each whole or
    not at all (a job stopped mid-write leaves the record before, never a cut one)."""
    from model_repository import write_text_atomic

    text = json.dumps(record, indent=2) + "\n"
    folder = out / "cells" / record["key"]
    if folder.is_dir():
        write_text_atomic(folder / "result.json", text)
    if ledger is not None:
        ledger.mkdir(parents=True, exist_ok=True)
        write_text_atomic(ledger / f"{record['key']}.json", text)


class CellRecordError(LabelwiseError):
    """A cell record (a run folder's result.json, or its copy in the ledger) cannot be read."""


def read_record(path: Path) -> dict[str, Any]:
    """A cell record; CellRecordError naming the file when it is not one (empty, cut short, edited)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    else:
        if (
            isinstance(record, dict)
            and isinstance(record.get("key"), str)
            and isinstance(record.get("cell"), dict)
        ):
            return record
        problem = "not a JSON object with the cell's `key` and `cell`"
    raise CellRecordError(
        f"cell record {path} cannot be read ({problem}): restore it from git if it is tracked, or delete it "
        "and `make results` runs that cell again (where no other copy of its record is left)"
    )


def _published(out: Path, record: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of the version a cell published, if it is in this machine's repository and is the same
    one (a repository made again numbers its versions from 1 again: created_at tells them apart)."""
    version = record.get("version")
    path = out / "repository" / record["cell"]["scenario"] / str(version) / "manifest.json"
    if version is None or not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    created = record.get("version_created_at")
    return manifest if created is None or manifest.get("created_at") == created else None


def _publish_facts(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the report needs of a published version, kept in the record so that it outlives the
    repository: when it was created (its identity) and how its int8 graph was quantised."""
    exports = manifest.get("exports", [])
    how = next((e.get("parity", {}).get("quantization") for e in exports if e["precision"] == "int8"), None)
    created = manifest.get("created_at")
    created = created if isinstance(created, str) else str(created)
    return {"version_created_at": created, "int8_quantization": how}


def load_done(
    out: Path, ledger: Path | None = None, base_model: str = BASE_MODEL
) -> dict[str, dict[str, Any]]:
    """Every finished cell: this machine's run folders, and the ledger's records of cells run elsewhere
    (or whose run folder is gone). A run folder's record not yet in the ledger is copied there. Where both
    hold a different record of a cell, the fresher one is kept (_fresher: the one that ran as the cell
    runs today, else the later one) and written to both places; a stale loser is moved to stale/ (as
    set_aside_stale moves it), never the current one."""
    done = {}
    for path in sorted((out / "cells").glob("*/result.json")):
        record = read_record(path)
        if record.get("version") is not None and "version_created_at" not in record:
            manifest = _published(out, record)
            if manifest is not None:
                record.update(_publish_facts(manifest))
        done[record["key"]] = record
    if ledger is not None:
        for path in sorted(ledger.glob("*.json")):
            record = read_record(path)
            key = record["key"]
            local = done.get(key)
            if local is None:
                done[key] = record
                continue
            if local == record:
                continue
            current = is_current(local, base_model), is_current(record, base_model)
            keep = _fresher(local, record, current)
            if keep == "ledger":
                if not current[0]:
                    _move_aside(out, ledger, key, copy=False)
                done[key] = record
                save_record(out, ledger, record)
            elif keep == "local":
                if not current[1]:
                    _move_aside(out, ledger, key, run_folder=False)
                save_record(out, ledger, local)
        for key, record in done.items():
            if (out / "cells" / key).is_dir() and not (ledger / f"{key}.json").is_file():
                save_record(out, ledger, record)
    return done


def run(
    out: Path,
    stages: tuple[str, ...] = STAGES,
    scenarios: tuple[str, ...] = SCENARIOS,
    budgets: tuple[int, ...] = (1000, 4000),
    docs: Path | None = Path("docs/results.md"),
    say: Callable[[str], None] = print,
    time_budget_s: float | None = None,
    base_model: str = BASE_MODEL,
    variants: tuple[str, ...] | None = None,
    strategies: tuple[str, ...] = STRATEGY_ORDER,
) -> dict[str, dict[str, Any]]:
    """Run the cells not yet done (in plan order), regenerating the report after each one."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from model_repository import ModelRepository

    out.mkdir(parents=True, exist_ok=True)
    repository = ModelRepository(out / "repository")
    cells = plan(stages, scenarios, budgets, variants, strategies)
    ledger = ledger_dir(docs) if docs is not None else None
    done = load_done(out, ledger, base_model)
    set_aside_stale(out, done, say, base_model, ledger)
    todo = to_run(cells, done)
    # a cell whose twin is queued in this job is not done yet: it said "1 already done" in a fresh --out
    finished = sum(1 for c in cells if c.key in done or _reuse(c, done) is not None)
    twins = len(cells) - len(todo) - finished
    shared = f" ({twins} the same run as a cell before it)" if twins else ""
    say(f"results: {len(cells)} cells planned, {finished} already done, {len(todo)} to run{shared}")
    scorer = engine_scorer()
    if score_served(out, done, repository, scorer, say, base_model, ledger) and docs is not None:
        write_report(out, docs, done, base_model)
    started = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    ) as progress:
        task = progress.add_task("results", total=len(todo))
        for cell in todo:
            if time_budget_s is not None and time.perf_counter() - started > time_budget_s:
                say(f"results: time budget {time_budget_s:.0f} s spent; rerun to resume")
                break
            twin = done.get(cell.key) or _reuse(cell, done)
            if twin is not None:  # to_run leaves out a cell whose twin is queued before it: never twice
                say(f"{cell.key}: same run as {twin['key']}, which finished in this job: its record serves")
                progress.advance(task)
                continue
            progress.update(task, description=f"{cell.key}")
            record = run_cell(cell, out, repository, scorer, base_model, ledger)
            done[cell.key] = record
            test = record["test"] or {}
            say(
                f"{cell.key}: test acc {test.get('accuracy', float('nan')):.4f} "
                f"macro-F1 {test.get('macro_f1', float('nan')):.4f} "
                f"(validation {record['validation']['macro_f1']:.4f}) in {record['cell_wall_s']:.0f} s"
            )
            progress.advance(task)
            if docs is not None:
                write_report(out, docs, done, base_model)
    if docs is not None:
        write_report(out, docs, done, base_model)
    return done


def to_run(cells: list[Cell], done: dict[str, dict[str, Any]]) -> list[Cell]:
    """The cells left to train, in plan order: not those with a record of their own or of a twin (_reuse:
    another stage's identical cell), nor those whose twin is queued before them in this job, which trains
    once for both (the matrix's sentiment LoRA cell at 1,000 rows is FGM's plain seed 42)."""
    pending = dict(done)
    todo = []
    for cell in cells:
        if cell.key in pending or _reuse(cell, pending) is not None:
            continue
        todo.append(cell)
        pending[cell.key] = {"key": cell.key, "queued": True}
    return todo


def _reuse(cell: Cell, done: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The record of another stage's cell with identical settings (the matrix cell), if there is one."""
    if cell.stage == "matrix" or cell.variant is not None or cell.adversarial is not None:
        return None  # a search candidate or an adversarial run is never a matrix cell
    return _matrix_alias(cell, done)


# ---- the report ----------------------------------------------------------------------------------


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _size(n: int | None) -> str:
    if n is None:
        return "–"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _find(done: dict[str, dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for record in done.values():
        cell = record["cell"]
        if all(cell.get(k) == v for k, v in match.items()):
            return record
    return None


def write_report(
    out: Path, docs: Path, done: dict[str, dict[str, Any]], base_model: str = BASE_MODEL
) -> Path:
    """docs/results.md and docs/img/results-*.png from the finished cells only. What is left to run counts
    the records that no longer run as their cell runs today (is_current on `base_model`) as not run."""
    from model_repository import write_text_atomic

    from . import results_plots

    img = docs.parent / "img"
    r = Report()
    ran = {k: rec for k, rec in done.items() if not rec.get("recovered")}
    total_s = sum(rec.get("cell_wall_s", 0.0) for rec in ran.values())
    machines = sorted({rec.get("machine") or _machine() for rec in ran.values()}) or [_machine()]
    recovered = len(done) - len(ran)
    served_now = any(_scored_as_served_now(rec) for rec in done.values())
    r.add(
        "# Training results: full vs LoRA vs frozen, scored on held-out test splits",
        "",
        "Generated by `make results` (`labelwise results`) from the cell records in "
        f"`{_shown(ledger_dir(docs))}/` (copies of `{out}/cells/*/result.json`, kept in git so that the "
        f"job resumes on any machine); do not edit by hand. {len(ran)} cell{'' if len(ran) == 1 else 's'}, "
        f"{total_s / 60:.0f} minutes of training and scoring in all, on {' and '.join(machines)}"
        + (f"; {recovered} more recovered from an earlier report (‡)." if recovered else "."),
        "",
        remaining_text({k: rec for k, rec in done.items() if is_current(rec, base_model)}, len(done)),
        "",
        "- **Encoder**: the packaged all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M parameters).",
        "- **Test split**: each scenario's own, carved once from its train file (stratified, 10%, at most "
        "2,000 rows, fixed seed `training.data.TEST_SPLIT_SEED`); no run, budget or tuning trial ever trains "
        "on it. Since 5 December 2026 (`training.data.SPLIT_VERSION` 2) it is carved by distinct text, so "
        "that no test row is a copy of a train row; "
        + _split_note(done)
        + f" The validation file (at most {MAX_EVAL_ROWS:,} stratified rows here; "
        + ", ".join(f"{name} {rows:,}" for name, rows in EVAL_ROWS.items())
        + ") is for early stopping "
        "on macro-F1 and the decision threshold, and judged the search's candidates (below). Every figure "
        "below is on the test split unless it says validation.",
        "- **Early stopping**: patience counts evaluations without a better validation macro-F1 from "
        "the first one that beats always answering the majority label (a LoRA run can sit on that "
        "answer for epochs before it learns); a run whose training loss fell and then climbed back "
        "while it answered no better than the majority label has collapsed: it is stopped there and "
        "trained again from the base weights at half the learning rate, at most twice (↺ below). Both"
        " since 2 December 2026, 17:30 UTC; the two runs they would have changed (spam LoRA at 4,000 "
        "rows, FGM seed 42) were run again.",
        "- **Defaults**: each strategy's defaults in `training/scenarios/<scenario>.yaml`, the same for "
        "every run of a scenario and strategy (no per-run tuning). " + SELECTION_NOTE,
        "- **fp32 / int8**: what serving runs, scored on every test row: "
        + (
            "every version through the serving engine from the raw texts, as a replica runs it (frozen "
            "versions as the shared base encoder + their head). Full and LoRA cells run before 5 December "
            "2026 were scored with ONNX Runtime when the version was published (recorded in its manifest, "
            "with `int8_delta_vs_fp32`), unless `make results` scored them again through the engine. "
            if served_now
            else "the version's exported graphs "
            "(full, LoRA), scored with ONNX Runtime when the version is published (recorded in its manifest, "
            "with `int8_delta_vs_fp32`); frozen versions, served as the shared base encoder + their head, "
            "through the serving engine from the raw texts. "
        )
        + "`labelwise evaluate --split test "
        "--precision int8` scores any version through the serving engine. int8 quantises every MatMul "
        "dynamically, unless that loses more than 0.5 point of validation accuracy against fp32 or changes "
        "more than 0.5 % of the validation labels: then the export's int8 guard tries keeping the "
        "feed-forward output projections fp32, then those and the attention blocks, and publishes the "
        "first that passes both bars, else the one that agrees with torch on the most validation rows "
        "(marked † below when it kept nodes fp32; versions published before the guard have no mark and "
        "every MatMul int8; versions published before 2 December 2026, 15:40 UTC were guarded on "
        "accuracy only, with the attention + feed-forward set as the one fallback). The shared "
        "base encoder serves every frozen scenario, so no one scenario's validation rows can guard it: its "
        "int8 graph always keeps those nodes fp32 (†); and when a frozen head loses more than 0.5 point of "
        "validation accuracy on that int8 base against the fp32 base, its version's int8 reads the fp32 "
        "base (○, since 3 December 2026: the frozen int8 guard, `metrics.int8_head_guard` in the manifest).",
        "- **int8 is scored in serving's passes**: dynamic int8 quantises the input of each MatMul with one "
        "scale per forward pass, so a row's int8 logits move with the rows and padding that share its pass "
        '(docs/artifacts.md, "int8 depends on the pass"). Since 3 December 2026 publish, `labelwise '
        f"evaluate` and this report score the test rows as serving cuts a full batch: {MAX_BATCH_ROWS} rows "
        f"sorted by length, in passes of at most {CPU_MAX_BATCH_TOKENS} tokens (`max_batch_tokens`), and "
        "`make results` scores again every published version it still has. (Since 4 December a CPU replica "
        "builds each pass from the oldest waiting rows by length, close to that cut under load, and runs the "
        "graphs with their layer norms unfused, which moves 0.26 % of int8 answers: docs/serving.md; the "
        + (
            "figures of the cells run before 5 December 2026 were scored before both.)"
            if served_now
            else "figures here were scored before both.)"
        )
        + (
            " ◇: published on another machine before that, scored in passes of 32 rows in file order "
            "(the engine: 16,384 tokens); its int8 figure is that of those passes."
            if any(_other_passes(rec) for rec in done.values() if rec["cell"]["stage"] == "matrix")
            else ""
        ),
        "",
    )
    _search_section(r, done)
    _matrix_section(r, done, img)
    _curve_section(r, done, img)
    _atis_section(r, done, img)
    _fgm_section(r, done)
    _spread_section(r, done)
    _sst2_section(r, done)
    _stale_section(r, out, ledger_dir(docs))
    scored = {k: v for k, v in done.items() if v.get("test")}
    results_plots.validation_vs_test(scored, img / "results-val-vs-test.png")
    r.add("## Validation vs test", "", "![validation vs test](img/results-val-vs-test.png)", "")
    docs.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(docs, "\n".join(r.lines).rstrip() + "\n")


def _stale_section(r: Report, out: Path, ledger: Path) -> None:
    """The cells set aside because a default changed after they ran: their figures, and what changed."""
    paths = sorted((out / "stale").glob("*/result.json")) + sorted((ledger / "stale").glob("*.json"))
    unique = {json.dumps(rec, sort_keys=True): rec for rec in (read_record(p) for p in paths)}
    stale = sorted((rec for rec in unique.values() if rec.get("test")), key=lambda rec: rec["key"])
    if not stale:
        return
    r.add(
        "## Set aside: cells trained under earlier defaults",
        "",
        "A default changed after these cells ran, so `make results` runs them again (above: not run yet "
        "until it has). Kept here for comparison; the parameters that differ from today's defaults are "
        "named as earlier → today.",
        "",
        "| cell | test acc | test macro-F1 | validation F1 | epochs (best) | train s | changed since |",
        "|---|---:|---:|---:|---:|---:|---|",
    )
    defaults = _param_defaults()
    for rec in stale:
        settings = cell_settings(Cell(**rec["cell"]))
        now = settings["params"]
        # A parameter added after the record was written ran at its default.
        added = {k: defaults[k] for k in now.keys() - rec["params"].keys() if k in defaults}
        then = {**added, **rec["params"]}
        if "scenario_settings" in rec:  # recorded since 5 December 2026
            now.update(_flat(settings["scenario_settings"], "scenario."))
            then.update(_flat(rec["scenario_settings"], "scenario."))
        run = settings["run_settings"]
        if "run_settings" in rec:
            run_defaults = _run_defaults()
            ran = {k: run_defaults[k] for k in run.keys() - rec["run_settings"].keys() if k in run_defaults}
            now.update(_flat(run, "run."))
            then.update(_flat({**ran, **rec["run_settings"]}, "run."))
        elif "adversarial_epsilon" in rec:  # the one run-level setting recorded before run_settings
            then["run.adversarial_epsilon"] = rec["adversarial_epsilon"]
            now["run.adversarial_epsilon"] = run["adversarial_epsilon"]
        rows_now = test_split_digest(rec["cell"]["scenario"]) if "test_sha256" in rec else None
        if rows_now is not None:
            then["test rows"], now["test rows"] = rec["test_sha256"][:8], rows_now[:8]
        then["validation rows"] = recorded_eval_rows(rec)
        now["validation rows"] = eval_rows(rec["cell"]["scenario"])
        then["held-out split"], now["held-out split"] = rec.get("split_version", 1), split_version()
        changed = ", ".join(
            f"{k} {then.get(k)} → {now.get(k)}"
            for k in sorted(set(now) | set(then))
            if then.get(k) != now.get(k)
        )
        ran, best = rec.get("epochs_run"), best_epoch(rec)
        epochs = "–" if ran is None else f"{ran:.1f} ({'–' if best is None else f'{best:.1f}'})"
        r.add(
            f"| {rec['key']} | {rec['test']['accuracy']:.3f} | {rec['test']['macro_f1']:.3f} | "
            f"{rec['validation']['macro_f1']:.3f} | {epochs} | {rec['train_time_s']:.0f} | {changed} |"
        )
    r.add("")


def _flat(settings: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Scenario settings one per key (cleaning.lowercase...); a list (labels) as its length and a digest."""
    import hashlib

    flat: dict[str, Any] = {}
    for k, v in settings.items():
        if isinstance(v, dict):
            flat.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, list):
            digest = hashlib.sha256(json.dumps(v).encode()).hexdigest()[:8]
            flat[f"{prefix}{k}"] = f"[{len(v)}: {digest}]"
        else:
            flat[f"{prefix}{k}"] = v
    return flat


@functools.cache
def _strategy_params(scenario: str, strategy: str) -> Any:
    """A packaged scenario's defaults for one strategy, read once per report (estimate_s asks often)."""
    from training import load_scenario

    return load_scenario(scenario).strategies[strategy]  # type: ignore[index]


def estimate_s(cell: Cell, done: dict[str, dict[str, Any]], every_epoch: bool = False) -> float | None:
    """Seconds a cell not yet run should take, from the finished cells of its strategy (of its scenario
    when there are some): seconds per train row and epoch, times its rows and planned epochs, times the
    share of planned epochs those cells ran before early stopping (every_epoch: all of them), plus their
    mean time outside training (scoring, export). None until a cell of the strategy has finished."""
    from training.trainer import planned_epochs

    same = [
        r for r in done.values() if r["cell"]["strategy"] == cell.strategy and r["cell"]["stage"] != "search"
    ]
    if not same:
        return None
    # The scenario's own cells when it has some: its texts' length sets the cost of a row (news_topic's
    # articles fill 128 tokens, the tweets a fraction of that).
    same = [r for r in same if r["cell"]["scenario"] == cell.scenario] or same
    overhead = float(np.mean([r["cell_wall_s"] - r["train_time_s"] for r in same]))
    if cell.strategy == "frozen":  # embedding dominates: proportional to rows
        per_row = float(np.mean([r["train_time_s"] / r["train_rows"] for r in same]))
        return per_row * (cell.rows or 40000) + overhead
    per_row_epoch = float(
        np.mean([r["train_time_s"] / (r["train_rows"] * (r["epochs_run"] or 1)) for r in same])
    )

    def planned(scenario: str, rows: int) -> float:
        return planned_epochs(_strategy_params(scenario, cell.strategy), rows)

    share = 1.0
    if not every_epoch:
        ran = [
            min(1.0, r["epochs_run"] / planned(r["cell"]["scenario"], r["train_rows"]))
            for r in same
            if r.get("epochs_run")
        ]
        share = float(np.mean(ran)) if ran else 1.0
    rows = cell.rows or 40000
    factor = 2.0 if cell.adversarial else 1.0  # FGM: a second forward and backward pass per step
    return per_row_epoch * rows * planned(cell.scenario, rows) * share * factor + overhead


def remaining_text(done: dict[str, dict[str, Any]], recorded: int | None = None) -> str:
    """One line: what the default job has left and how long it should take at the measured speed. `done`:
    the current records; `recorded`: every record the report shows, stale ones included (named here)."""
    stale = (recorded or len(done)) - len(done)
    aside = (
        f" {stale} of the {recorded} records below no longer run as their cell runs today (a default, the "
        "base model or the held-out rows changed since): counted here as not run; `make results` sets them "
        "aside and runs them again."
        if stale
        else ""
    )
    left = to_run(plan(DEFAULT_STAGES, SCENARIOS, (1000, 4000)), done)
    if not left:
        return "Every cell of the default job (`make results`) has run." + aside
    estimates = [estimate_s(c, done) for c in left]
    known = [e for e in estimates if e is not None]
    most = sum(estimate_s(c, done, every_epoch=True) or 0.0 for c in left)
    when = (
        f"about {sum(known) / 60:.0f} minutes more at the speed measured here, if early stopping ends "
        f"each run as it ended the finished runs of its scenario and strategy ({most / 60:.0f} minutes "
        "if every run trains every planned epoch)"
        if len(known) == len(left)
        else "no estimate until each strategy has one finished cell"
    )
    stages = sorted({c.stage for c in left}, key=STAGES.index)
    return (
        f"**Not yet run**: {len(left)} cells of the default job ({', '.join(stages)}): {when}. "
        "`make results` resumes them; the tables below mark what is missing." + aside
    )


def _machine(gpu: str | None = None) -> str:
    """The machine a cell ran on, in the report's words."""
    return f"{platform.machine()} with {_cores()} CPU cores, " + (f"GPU {gpu}" if gpu else "no GPU")


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _search_rows(rec: dict[str, Any]) -> int:
    """A search record's train rows (records recovered from an old report name none: 1,000)."""
    return rec["cell"].get("rows") or 1000


def _search_section(r: Report, done: dict[str, dict[str, Any]]) -> None:
    recs = [rec for rec in done.values() if rec["cell"]["stage"] == "search"]
    if not recs:
        return
    shown = min(SEARCH_EPOCHS_SHOWN, max(len(rec.get("validation_history", [])) for rec in recs))
    r.add(
        "## How the defaults were chosen (`labelwise results --stages search`)",
        "",
        "Candidates at 1,000 train rows unless the candidate names another budget, judged on validation "
        "macro-F1 only (these runs never score the "
        f"test split). First round, on {', '.join(SEARCH_SCENARIOS)}: {SEARCH_EPOCHS} epochs (unless the "
        "candidate says otherwise) without early stopping, 1,000 validation rows. Later rounds "
        "(`…-1200steps`: LoRA on emotion and sentiment, then full on intent and intent_atis, then LoRA on "
        "intent with BERT's pooler trained (`…-pooler-…`), the matrix LoRA cell being its baseline; "
        "then LoRA on emotion at 4,000 rows with 8 epochs (`…-8ep`), against the 4,000-row matrix cells, "
        "and with the pooler trained (`…-pooler-4000rows`, since then emotion's LoRA default: the cells "
        'run under the default before it are under "Set aside" below): '
        "run as a matrix cell runs (3 epochs or min_train_steps, early stopping, 500 validation rows), to "
        "compare with the matrix cells' validation F1. The runs were judged on validation only, but which "
        "candidates were tried was not blind to the test split: the first round's scenario and the third "
        "and fourth rounds were chosen from gaps on the test split of earlier matrix runs (see Defaults "
        "above), so the test figures of the defaults they chose carry some selection bias. Validation "
        f"macro-F1 after each epoch (the first {shown} shown):",
        "",
        "| scenario | candidate | "
        + " | ".join(f"ep {i}" for i in range(1, shown + 1))
        + " | epochs run | best | train s |",
        "|---|---|" + "---:|" * (shown + 3),
    )
    for rec in sorted(recs, key=lambda x: (x["cell"]["scenario"], x["cell"]["variant"])):
        full_history = rec.get("validation_history", [])
        history = [f"{f1:.3f}" for _epoch, f1 in full_history[:shown]]
        history += ["–"] * (shown - len(history))
        best = rec.get("validation_best_macro_f1") or max(
            (f1 for _e, f1 in full_history), default=float("nan")
        )
        ran = rec.get("epochs_run")
        rows = _search_rows(rec)
        budget = "" if rows == 1000 else f" ({rows:,} rows)"
        r.add(
            f"| {rec['cell']['scenario']} | {rec['cell']['variant']}{budget}"
            f"{' ‡' if rec.get('recovered') else ''} | "
            f"{' | '.join(history)} | {'–' if ran is None else f'{ran:.1f}'} | {best:.3f} "
            f"| {rec['train_time_s']:.0f} |"
        )
    # the later rounds ran as matrix cells do: their (budget, scenario) beside the matrix cells
    compared = sorted(
        {
            (_search_rows(rec), rec["cell"]["scenario"])
            for rec in recs
            if rec["cell"]["variant"] in SEARCH_ON or rec["cell"]["variant"] in SEARCH_ROWS
        }
    )
    matrix = {
        (rec["cell"]["scenario"], rec["cell"]["strategy"], rec["cell"]["rows"]): rec["validation"]["macro_f1"]
        for rec in done.values()
        if rec["cell"]["stage"] == "matrix"
    }
    beside = [
        f"{scenario} at {rows:,} rows: full {matrix[(scenario, 'full', rows)]:.3f}, "
        f"LoRA {matrix[(scenario, 'lora', rows)]:.3f}"
        for rows, scenario in compared
        if (scenario, "full", rows) in matrix and (scenario, "lora", rows) in matrix
    ]
    if beside:
        r.add(
            "",
            "The matrix cells (the defaults), validation macro-F1: " + "; ".join(beside) + ".",
        )
    recovered = sorted({rec["recovered"]["from"] for rec in recs if rec.get("recovered")})
    if recovered:
        r.add(
            "",
            "‡ Recovered: the run folder and record of this candidate were lost with the machine that ran "
            f"it; its figures are copied from the report generated from that record, {', '.join(recovered)}: "
            f"the first {shown} epochs, the best validation F1, epochs run and train time. The search is not "
            "part of the default job.",
        )
    r.add("")


def _int8_mark(rec: dict[str, Any]) -> str:
    """' †' when the cell's served int8 graph keeps some nodes fp32 (the export's int8 guard, or the shared
    base encoder's recipe for frozen versions); ' ○' when a frozen version's int8 reads the fp32 base."""
    base = rec.get("test_int8", {}).get("base_quantization")
    if base == FP32_BASE:
        return " ○"
    if base is not None:
        return " †" if "kept fp32" in base else ""
    # load_done and run_cell record the version's int8 recipe (_publish_facts): no manifest to read here
    how = rec.get("int8_quantization")
    return " †" if how and "kept fp32" in how.split("(")[0] else ""


def _matrix_section(r: Report, done: dict[str, dict[str, Any]], img: Path) -> None:
    from . import results_plots

    budgets = sorted({rec["cell"]["rows"] for rec in done.values() if rec["cell"]["stage"] == "matrix"})
    scenarios = matrix_scenarios(done)
    shown = "Six" if scenarios == SCENARIOS else str(len(scenarios))
    r.add(f"## {shown} scenarios × three strategies", "")
    for rows in budgets:
        r.add(
            f"### {rows:,} train rows",
            "",
            "| scenario (test rows, majority acc) | strategy | test acc | test macro-F1 | Δ F1 vs full | "
            "validation F1 | "
            "epochs (best) | train s | trainable | artifact | fp32 acc | int8 acc | int8 − fp32 |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        )
        for scenario in scenarios:
            full = _find(done, stage="matrix", scenario=scenario, strategy="full", rows=rows)
            for strategy in STRATEGY_ORDER:
                rec = _find(done, stage="matrix", scenario=scenario, strategy=strategy, rows=rows)
                if rec is None:
                    r.add(f"| {scenario} | {strategy} | not run yet |||||||||||")
                    continue
                delta = (
                    ""
                    if full is None or strategy == "full"
                    else f"{rec['test']['macro_f1'] - full['test']['macro_f1']:+.3f}"
                )
                fp32 = rec.get("test_fp32", {}).get("accuracy")
                int8 = rec.get("test_int8", {}).get("accuracy")
                gap = "" if fp32 is None or int8 is None else f"{int8 - fp32:+.4f}{_int8_mark(rec)}"
                if gap and _other_passes(rec):
                    gap += " ◇"
                r.add(
                    f"| {scenario} ({rec['test_rows']}, {rec['majority_test_accuracy']:.3f}) | "
                    f"{strategy}{_restart_mark(rec)} | "
                    f"{rec['test']['accuracy']:.3f} | {rec['test']['macro_f1']:.3f} | {delta} | "
                    f"{rec['validation']['macro_f1']:.3f} | {_epoch_text(rec)} | {rec['train_time_s']:.0f} | "
                    f"{rec['trainable_params']:,} | {_size(rec['artifact_bytes'])} | {_pct(fp32)} | "
                    f"{_pct(int8)} | {gap} |"
                )
        restarted = [
            rec
            for rec in done.values()
            if rec["cell"]["stage"] == "matrix"
            and rec["cell"]["rows"] == rows
            and rec.get("collapse_restarts")
        ]
        if restarted:
            r.add("", _restart_legend(restarted))
        path = img / f"results-matrix-{rows}.png"
        results_plots.strategy_bars(done, rows, scenarios, STRATEGY_ORDER, path, majority_macro_f1)
        r.add("", f"![strategies at {rows} rows](img/{path.name})", "")


def matrix_scenarios(done: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """The matrix tables' and plots' scenarios: the default job's, then any other a matrix cell ran on
    (`labelwise results --scenarios sst2,...`)."""
    ran = {rec["cell"]["scenario"] for rec in done.values() if rec["cell"]["stage"] == "matrix"}
    return (*SCENARIOS, *sorted(ran - set(SCENARIOS)))


def _restart_mark(rec: dict[str, Any]) -> str:
    """' ↺' when the run collapsed at its default learning rate and was trained again at a lower one;
    ' ✗' when it stayed collapsed (publish refuses it)."""
    if rec.get("collapsed"):
        return " ✗"
    return " ↺" if rec.get("collapse_restarts") else ""


def _restart_legend(recs: list[dict[str, Any]]) -> str:
    """What the ↺ / ✗ marks of one table mean, with each marked run's learning rates."""
    runs = []
    for rec in sorted(recs, key=lambda x: x["key"]):
        tried = " → ".join(
            f"{x['learning_rate']:g} (stopped at step {x['stopped_at_step']})"
            for x in rec["collapse_restarts"]
        )
        kept = "still collapsed, not published" if rec.get("collapsed") else "kept"
        cell = rec["cell"]
        runs.append(
            f"{cell['scenario']} {cell['strategy']}: {tried} → {rec['trained_learning_rate']:g} ({kept})"
        )
    return (
        "↺: the run collapsed at its default learning rate (its training loss fell, then climbed "
        "back, and its validation macro-F1 was no better than always answering the majority label), "
        "so training stopped at that evaluation and started again from the base weights at half the "
        "rate (training/trainer.py, at most twice; ✗: collapsed every time, and publish refuses it); "
        "train s counts every attempt. " + "; ".join(runs) + "."
    )


def _epoch_text(rec: dict[str, Any]) -> str:
    ran, best = rec.get("epochs_run"), best_epoch(rec)
    if ran is None:
        return "–"
    return f"{ran:.1f}" + ("" if best is None else f" ({best:.1f})")


def _curve_section(r: Report, done: dict[str, dict[str, Any]], img: Path) -> None:
    from . import results_plots

    points = [
        rec
        for rec in done.values()
        if rec["cell"]["scenario"] == "sentiment"
        and rec["cell"]["strategy"] in ("full", "lora")
        and rec["cell"]["stage"] in ("matrix", "curve")
        and rec["cell"]["seed"] == 42
    ]
    if not points:
        return
    r.add(
        "## Learning curve: sentiment, full vs LoRA",
        "",
        "| train rows | strategy | test acc | test macro-F1 | train s |",
        "|---:|---|---:|---:|---:|",
    )
    for rec in sorted(points, key=lambda x: (x["train_rows"], x["cell"]["strategy"])):
        r.add(
            f"| {rec['train_rows']:,} | {rec['cell']['strategy']} | {rec['test']['accuracy']:.3f} | "
            f"{rec['test']['macro_f1']:.3f} | {rec['train_time_s']:.0f} |"
        )
    results_plots.learning_curve(points, img / "results-curve.png")
    r.add("", "![learning curve](img/results-curve.png)", "")


def _atis_section(r: Report, done: dict[str, dict[str, Any]], img: Path) -> None:
    from . import results_plots

    pairs = []
    for strategy in ("full", "lora"):
        # weighted: the scenario's setting, the matrix cell at 1,000 rows where it ran (plan: "atis")
        on = Cell("atis", "intent_atis", strategy, 1000)
        weighted = done.get(on.key) or _reuse(on, done)
        plain = done.get(Cell("atis", "intent_atis", strategy, 1000, class_weighting="off").key)
        if weighted and plain:
            pairs.append((strategy, weighted, plain))
    if not pairs:
        return
    r.add(
        "## ATIS (heavily imbalanced): class weighting on vs off, 1,000 rows",
        "",
        "| strategy | weighting | test acc | test macro-F1 | classes with F1 = 0 |",
        "|---|---|---:|---:|---:|",
    )
    present: dict[str, set[str] | None] = {}
    for strategy, weighted, plain in pairs:
        for name, rec in (("on", weighted), ("off", plain)):
            # a label without test rows has F1 0 whatever the model does: macro-F1 leaves it out, so does
            # this count (* where the labels present could not be told: every F1 of 0 is counted)
            present[rec["key"]] = labels = test_labels_present(rec)
            f1 = rec["test"]["per_class_f1"]
            zeros = sum(1 for n, v in f1.items() if v == 0 and (labels is None or n in labels))
            r.add(
                f"| {strategy} | {name} | {rec['test']['accuracy']:.3f} | "
                f"{rec['test']['macro_f1']:.3f} | {zeros}{' *' if labels is None else ''} |"
            )
    known = [labels for labels in present.values() if labels is not None]
    absent = (
        sorted({n for _s, rec, _p in pairs for n in rec["labels"]} - set().union(*known)) if known else []
    )
    if absent:
        r.add(
            "",
            "Counted over the labels with rows in the test split: "
            f"{len(absent)} of the scenario's labels have none ({', '.join(absent)}), so no F1 is theirs "
            "to count; macro-F1 leaves them out too, and the plot does not draw them.",
        )
    if any(labels is None for labels in present.values()):
        r.add(
            "",
            "\\* The record names no per-class test rows and the scenario's train file is not here to carve "
            "its test split again: every label of F1 0 is counted, those without test rows included.",
        )
    results_plots.per_class_f1(pairs, img / "results-atis.png", present)
    r.add("", "![ATIS per-class F1](img/results-atis.png)", "")


def _fgm_section(r: Report, done: dict[str, dict[str, Any]]) -> None:
    rows = {}
    for mode in (None, "fgm"):
        cells = [Cell("fgm", "sentiment", "lora", 1000, seed=seed, adversarial=mode) for seed in FGM_SEEDS]
        recs = [rec for cell in cells if (rec := done.get(cell.key) or _reuse(cell, done)) is not None]
        if recs:
            rows[mode] = recs
    if "fgm" not in rows:
        return
    r.add(
        f"## Adversarial training (FGM, epsilon {FGM_EPSILON}): sentiment LoRA, 1,000 rows, seeds "
        + ", ".join(map(str, FGM_SEEDS)),
        "",
        "| training | seeds | test acc mean ± sd | test macro-F1 mean ± sd | train s mean |",
        "|---|---:|---:|---:|---:|",
    )
    for mode, recs in rows.items():
        secs = np.mean([x["train_time_s"] for x in recs])
        r.add(
            f"| {'FGM' if mode else 'plain'} | {len(recs)} | "
            f"{_mean_sd([x['test']['accuracy'] for x in recs])} | "
            f"{_mean_sd([x['test']['macro_f1'] for x in recs])} | {secs:.0f} |"
        )
    r.add(
        "",
        f"Epsilon is the perturbation's L2 radius per row ({FGM_EPSILON} ≈ the common BERT recipe's 1.0 "
        "over a 16-row batch). A first run at 1.0 per row (seed 42; MiniLM's token embeddings have a median "
        "norm of 1.1) sat on the majority answer (validation macro-F1 0.202) for 8 epochs and was stopped.",
        "",
    )


def _mean_sd(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.3f} ± {float(a.std(ddof=1)) if len(a) > 1 else 0.0:.3f}"


def _spread_section(r: Report, done: dict[str, dict[str, Any]]) -> None:
    """Full vs LoRA over several seeds where one run each was not enough to tell them apart."""
    for scenario, rows in SPREAD:
        runs = {}
        for strategy in ("full", "lora"):
            cells = [Cell("spread", scenario, strategy, rows, seed=seed) for seed in SPREAD_SEEDS]
            runs[strategy] = [rec for c in cells if (rec := done.get(c.key) or _reuse(c, done)) is not None]
        if not all(len(recs) > 1 for recs in runs.values()):
            continue
        read = "/".join(sorted({f"{x['validation_rows']:,}" for recs in runs.values() for x in recs}))
        r.add(
            f"## Run-to-run spread: {scenario}, {rows:,} rows, full vs LoRA over seeds "
            + ", ".join(map(str, SPREAD_SEEDS)),
            "",
            "Each strategy's defaults, trained again with other seeds: the seed draws the train rows (and "
            f"the validation rows where the file has more than {eval_rows(scenario):,}; "
            f"early stopping read {read} of them here), orders the batches and initialises the head and LoRA "
            "matrices; the test split is the same. Seed 42 is the matrix cell. `labelwise results --stages "
            "spread`, not part of the default job.",
            "",
            "| strategy | seeds | test macro-F1 per seed | test macro-F1 mean ± sd | test acc mean ± sd | "
            "validation F1 mean ± sd | train s mean |",
            "|---|---:|---|---:|---:|---:|---:|",
        )
        for strategy, recs in runs.items():
            f1 = [x["test"]["macro_f1"] for x in recs]
            r.add(
                f"| {strategy} | {len(recs)} | "
                + ", ".join(f"{x['cell']['seed']}: {x['test']['macro_f1']:.3f}" for x in recs)
                + f" | {_mean_sd(f1)} | {_mean_sd([x['test']['accuracy'] for x in recs])} | "
                f"{_mean_sd([x['validation']['macro_f1'] for x in recs])} | "
                f"{np.mean([x['train_time_s'] for x in recs]):.0f} |"
            )
        pairs = {x["cell"]["seed"]: x["test"]["macro_f1"] for x in runs["lora"]}
        gaps = [
            pairs[x["cell"]["seed"]] - x["test"]["macro_f1"]
            for x in runs["full"]
            if x["cell"]["seed"] in pairs
        ]
        if gaps:
            r.add(
                "",
                "LoRA − full, test macro-F1, seed by seed: "
                + ", ".join(f"{g * 100:+.1f}" for g in gaps)
                + f" points; mean {np.mean(gaps) * 100:+.1f}.",
            )
        r.add("")


def _sst2_section(r: Report, done: dict[str, dict[str, Any]]) -> None:
    # An sst2 cell is skipped where the matrix ran its twin (`--scenarios ...,sst2`: _reuse): its budgets
    # are those of either stage's sst2 cells of the default settings.
    budgets = {
        rec["cell"]["rows"]
        for rec in done.values()
        if rec["cell"]["stage"] == "sst2"
        or (rec["cell"]["stage"], rec["cell"]["scenario"]) == ("matrix", "sst2")
    }
    if not budgets:
        return
    # one budget per table: the largest run (rows None: the whole train file); a cell is keyed by its
    # budget, so runs with other --budgets leave records of their own
    budget = None if None in budgets else max(budgets)
    cells = [Cell("sst2", "sst2", strategy, budget) for strategy in STRATEGY_ORDER]
    found = {cell.strategy: done.get(cell.key) or _reuse(cell, done) for cell in cells}
    recs = [rec for rec in found.values() if rec is not None]
    if not recs:
        return
    rows = max(rec["train_rows"] for rec in recs)
    machines = " / ".join(sorted({rec.get("machine") or _machine() for rec in recs}))
    others = ", ".join(f"{b:,}" for b in sorted(b for b in budgets if b != budget))
    r.add(
        "## The seed article's table, on SST-2",
        "",
        "The seed's columns (strategy, accuracy, training time, trainable parameters, model size). The seed "
        f"used distilroberta-base on a GPU and the full train set; here MiniLM on {machines}, "
        f"{rows:,} train rows, scored on SST-2's own held-out test split"
        + (f" (cells at other budgets, not shown: {others} rows)." if others else "."),
        "",
        "| strategy | test accuracy | training time (s) | trainable parameters | model size |",
        "|---|---:|---:|---:|---:|",
    )
    for strategy in STRATEGY_ORDER:
        rec = found[strategy]
        if rec:
            r.add(
                f"| {strategy} | {rec['test']['accuracy']:.4f} | {rec['train_time_s']:.0f} | "
                f"{rec['trainable_params']:,} | {_size(rec['artifact_bytes'])} |"
            )
    r.add("")
