"""PNG plots for run folders: label distribution, confusion matrix, strategy comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def plot_label_distribution(counts: dict[str, list[int]], labels: list[str], path: Path) -> Path:
    """Bars of rows per label for each split (e.g. {'train': [...], 'validation': [...]})."""
    import numpy as np

    plt = _pyplot()
    width = max(6.0, 0.25 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(width, 4.5))
    x = np.arange(len(labels))
    bar = 0.8 / max(1, len(counts))
    for i, (split, values) in enumerate(counts.items()):
        ax.bar(x + i * bar, values, bar, label=f"{split} ({sum(values)})")
    ax.set_xticks(x + bar * (len(counts) - 1) / 2, labels, rotation=90 if len(labels) > 8 else 0, fontsize=7)
    ax.set_ylabel("rows")
    ax.set_title("Label distribution")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_confusion_matrix(matrix: list[list[int]], labels: list[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: true label) with counts written in small problems."""
    import numpy as np

    plt = _pyplot()
    cm = np.asarray(matrix, dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(4.5, 0.18 * len(labels) + 3)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    small = len(labels) <= 12
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7 if small else 4)
    ax.set_yticks(range(len(labels)), labels, fontsize=7 if small else 4)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "Confusion matrix (row-normalised)")
    if small:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        int(cm[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_comparison(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """One bar panel per figure of merit, one bar per strategy (like the seed article's chart)."""
    plt = _pyplot()
    panels = [
        ("accuracy", "accuracy", False),
        ("macro_f1", "macro-F1", False),
        ("train_time_s", "train time (s)", False),
        ("trainable_params", "trainable params", True),
        ("artifact_bytes", "artifact size (bytes)", True),
    ]
    names = [r["strategy"] for r in rows]
    colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"][: len(rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for ax, (key, label, log) in zip(axes, panels, strict=True):
        values = [r[key] for r in rows]
        ax.bar(names, values, color=colors)
        ax.set_title(label, fontsize=9)
        if log:
            ax.set_yscale("log")
        elif key in ("accuracy", "macro_f1"):
            ax.set_ylim(0, 1)
        for i, v in enumerate(values):
            text = f"{v:.3f}" if isinstance(v, float) and v <= 1 else _short(v)
            ax.text(i, v, text, ha="center", va="bottom", fontsize=7)
        ax.tick_params(labelsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _short(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
