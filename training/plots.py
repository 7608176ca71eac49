"""PNG plots for run folders: label distribution, confusion matrix, strategy comparison."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only, no display on servers and CI), reading text
    as plain text: labels and titles come from datasets, where "$5 to $10" is a label, not TeX."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["text.parse_math"] = False
    return plt


def save_png(fig: Any, path: Path, dpi: int) -> Path:
    """Lay `fig` out, write it to `path` as a PNG whole or not at all (a run cut mid-write leaves the
    previous plot, never a truncated file) and close it."""
    from model_repository import write_bytes_atomic

    buf = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        pyplot().close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_bytes_atomic(path, buf.getvalue())


def plot_label_distribution(counts: dict[str, list[int]], labels: list[str], path: Path) -> Path:
    """Bars of rows per label for each split (e.g. {'train': [...], 'validation': [...]})."""
    import numpy as np

    plt = pyplot()
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
    return save_png(fig, path, dpi=90)


# Above this many labels the cells are too small to hold a count: colour (row share) only.
CONFUSION_COUNTS_MAX_LABELS = 12


def plot_confusion_matrix(matrix: list[list[int]], labels: list[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: true label, colour: share of the row), counts written in
    each cell up to 12 labels; above that the figure grows with the labels and only colours remain."""
    import numpy as np

    plt = pyplot()
    cm = np.asarray(matrix, dtype=float)
    n = len(labels)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    small = n <= CONFUSION_COUNTS_MAX_LABELS
    # ~0.2 inch per label (77 labels: 18 inches), never below a readable 5 inches.
    size = max(5.0, min(0.2 * n + 3, 24.0))
    tick_font = 8 if small else max(5.0, min(7.0, 450 / n))  # a 0.2-inch cell holds 6-point text
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    colorbar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    colorbar.set_label("share of the true label's rows", fontsize=8)
    colorbar.ax.tick_params(labelsize=7)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=tick_font)
    ax.set_yticks(range(n), labels, fontsize=tick_font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total = int(cm.sum())
    ax.set_title(
        (title or "Confusion matrix") + f"\n(row-normalised, {total} rows, {n} labels)",
        fontsize=9 if small else 10,
    )
    if small:
        for i in range(n):
            for j in range(n):
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
    else:  # faint grid lines so that a cell can be traced back to its row and column
        ax.set_xticks(np.arange(-0.5, n, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, n, 1), minor=True)
        ax.grid(which="minor", color="#dddddd", linewidth=0.3)
        ax.tick_params(which="minor", length=0)
    return save_png(fig, path, dpi=90 if small else 100)


def plot_comparison(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """One bar panel per figure of merit, one bar per strategy (like the seed article's chart)."""
    plt = pyplot()
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
            log_axis(ax, "y")
        elif key in ("accuracy", "macro_f1"):
            ax.set_ylim(0, 1)
        for i, v in enumerate(values):
            text = f"{v:.3f}" if isinstance(v, float) and v <= 1 else _short(v)
            ax.text(i, v, text, ha="center", va="bottom", fontsize=7)
        ax.tick_params(labelsize=8)
    fig.suptitle(title, fontsize=10)
    return save_png(fig, path, dpi=80)


def log_axis(ax: Any, which: str) -> None:
    """A log scale on axis `which` ("x" or "y") whose ticks read as plain numbers (1k, 10k, 1M): the
    default tick labels are TeX, and pyplot() reads text as plain text, so they came out as
    `$\\mathdefault{10^{3}}$`."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(FuncFormatter(lambda value, _pos: tick_label(value)))
    axis.set_minor_formatter(NullFormatter())


def tick_label(value: float) -> str:
    """1000 -> "1k", 2500000 -> "2.5M", 0.01 -> "0.01": a log axis's tick."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}"


def _short(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
