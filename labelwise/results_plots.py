"""The plots of docs/results.md, drawn from result records (labelwise.results): labelled, files only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from training.plots import log_axis, pyplot, save_png

COLORS = {"full": "#4c72b0", "lora": "#dd8452", "frozen": "#55a868"}


def _save(fig: Any, path: Path) -> Path:
    return save_png(fig, path, dpi=90)


def strategy_bars(
    done: dict[str, dict[str, Any]],
    rows: int,
    scenarios: tuple[str, ...],
    strategies: tuple[str, ...],
    path: Path,
    majority_f1: Callable[[dict[str, Any]], float],
) -> Path:
    """Test macro-F1 per scenario and strategy at one budget, marked with the macro-F1 of always answering
    the majority label (majority_f1 of a scenario's record: on imbalanced data far under its accuracy)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    x = np.arange(len(scenarios))
    width = 0.8 / len(strategies)
    epochs: list[float] = []
    for i, strategy in enumerate(strategies):
        values = []
        for scenario in scenarios:
            rec = next(
                (
                    r
                    for r in done.values()
                    if r["cell"]["stage"] == "matrix"
                    and r["cell"]["scenario"] == scenario
                    and r["cell"]["strategy"] == strategy
                    and r["cell"]["rows"] == rows
                ),
                None,
            )
            values.append(np.nan if rec is None else rec["test"]["macro_f1"])
            if rec is not None and rec.get("epochs_run") and strategy != "frozen":
                epochs.append(rec["epochs_run"])  # frozen epochs are the head's, on cached embeddings
        ax.bar(x + i * width, values, width, label=strategy, color=COLORS.get(strategy))
    for j, scenario in enumerate(scenarios):
        rec = next(
            (
                r
                for r in done.values()
                if r["cell"]["scenario"] == scenario and r["cell"]["stage"] == "matrix"
            ),
            None,
        )
        if rec is not None:
            ax.hlines(majority_f1(rec), j - 0.1, j + 0.8, colors="black", linestyles="dotted")
    ax.set_xticks(x + width * (len(strategies) - 1) / 2, scenarios)
    ax.set_ylim(0, 1)
    ax.set_ylabel("macro-F1 on the test split")
    span = f", full/LoRA {min(epochs):.1f}-{max(epochs):.1f} epochs run" if epochs else ""
    ax.set_title(
        f"Test macro-F1, {rows:,} train rows, MiniLM{span}\n(dotted: always answering the majority label)"
    )
    ax.legend(loc="lower right")
    return _save(fig, path)


def learning_curve(points: list[dict[str, Any]], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy in ("full", "lora"):
        pts = sorted(
            (r["train_rows"], r["test"]["macro_f1"]) for r in points if r["cell"]["strategy"] == strategy
        )
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=strategy, color=COLORS[strategy])
    log_axis(ax, "x")
    ax.set_xlabel("train rows")
    ax.set_ylabel("macro-F1 on the test split")
    test_rows = points[0]["test_rows"]
    ax.set_title(f"sentiment: full vs LoRA by train rows ({test_rows:,} test rows)")
    ax.legend()
    return _save(fig, path)


def per_class_f1(
    pairs: list[tuple[str, dict[str, Any], dict[str, Any]]],
    path: Path,
    present: dict[str, set[str] | None] | None = None,
) -> Path:
    """ATIS per-class test F1, class weighting on vs off, per strategy. present: each record's (by key)
    labels with rows in its test split (None: not known); a label without test rows has no F1 to draw
    (sklearn's 0 is not the model's): it gets no bar, and a label no record has test rows of is left out."""
    plt = pyplot()
    present = present or {}

    def has_rows(rec: dict[str, Any], name: str) -> bool:
        labels = present.get(rec["key"])
        return labels is None or name in labels

    records = [rec for _strategy, weighted, plain in pairs for rec in (weighted, plain)]
    labels = [n for n in pairs[0][1]["labels"] if any(has_rows(rec, n) for rec in records)]
    fig, axes = plt.subplots(len(pairs), 1, figsize=(11, 3.2 * len(pairs)), squeeze=False)
    x = np.arange(len(labels))

    def heights(rec: dict[str, Any]) -> list[float]:
        f1 = rec["test"]["per_class_f1"]
        return [f1.get(n, 0) if has_rows(rec, n) else np.nan for n in labels]

    for ax, (strategy, weighted, plain) in zip(axes[:, 0], pairs, strict=True):
        ax.bar(x - 0.2, heights(weighted), 0.4, label="weighting on")
        ax.bar(x + 0.2, heights(plain), 0.4, label="weighting off")
        ax.set_xticks(x, labels, rotation=90, fontsize=7)
        ax.set_ylabel("test F1")
        left_out = len(pairs[0][1]["labels"]) - len(labels)
        ax.set_title(
            f"ATIS {strategy}, {weighted['train_rows']:,} train rows, {weighted['test_rows']} test rows"
            + (f" ({left_out} labels without test rows left out)" if left_out else "")
        )
        ax.legend(fontsize=8)
    return _save(fig, path)


def validation_vs_test(done: dict[str, dict[str, Any]], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for strategy, color in COLORS.items():
        pts = [
            (r["validation"]["macro_f1"], r["test"]["macro_f1"])
            for r in done.values()
            if r["cell"]["strategy"] == strategy
        ]
        if pts:
            ax.scatter(*zip(*pts, strict=True), label=strategy, color=color, s=18)
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    ax.set_xlabel("validation macro-F1 (early-stopping rows)")
    ax.set_ylabel("test macro-F1 (held-out split)")
    ax.set_title(f"Validation vs test, {len(done)} runs")
    if done:
        ax.legend()
    return _save(fig, path)
