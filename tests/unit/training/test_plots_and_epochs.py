"""Run-folder figures: a confusion matrix that stays readable with many labels; the epochs a run took."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.metrics import epoch_summary, selection_score, training_epochs
from training.plots import plot_confusion_matrix


def test_a_77_label_confusion_matrix_renders_larger_than_a_3_label_one(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    n = 77  # the intent scenario (banking77)
    matrix = (np.eye(n, dtype=int) * 20 + rng.poisson(0.3, (n, n))).tolist()
    labels = [f"card_payment_reason_{i}" for i in range(n)]
    big = plot_confusion_matrix(matrix, labels, tmp_path / "cm77.png", "intent: validation, 1540 rows")
    small = plot_confusion_matrix([[5, 1, 0], [0, 4, 2], [1, 0, 7]], ["a", "b", "c"], tmp_path / "cm3.png")
    with Image.open(big) as image, Image.open(small) as other:
        assert image.width >= 1500 and image.height >= 1500  # ~0.2 inch per label
        assert other.width < 800
        pixels = np.asarray(image.convert("L"))
    assert pixels.min() < 128 and pixels.std() > 10  # drawn, not blank


def test_epochs_come_from_the_trainers_log_history() -> None:
    history = [
        {"loss": 1.0, "epoch": 0.5},
        {"eval_macro_f1": 0.6, "epoch": 1.0},
        {"eval_macro_f1": 0.8, "epoch": 2.0},
        {"eval_macro_f1": 0.8, "epoch": 3.0},  # a tie does not replace the best checkpoint
        {"train_runtime": 9.0, "epoch": 3.0},
    ]
    assert training_epochs(history) == (2.0, 3.0)
    # A run that logs its selection score (macro-F1, then the lower loss) is read by it
    scored = [
        {"eval_macro_f1": 1.0, "eval_loss": 0.73, "eval_selection": selection_score(1.0, 0.73), "epoch": 1.0},
        {"eval_macro_f1": 1.0, "eval_loss": 0.02, "eval_selection": selection_score(1.0, 0.02), "epoch": 2.0},
        {"eval_macro_f1": 0.9, "eval_loss": 0.01, "eval_selection": selection_score(0.9, 0.01), "epoch": 3.0},
    ]
    assert training_epochs(scored) == (2.0, 3.0)
    assert epoch_summary(history) == "best epoch 2 of 3 run"
    single_pass = [{"loss": 1.0, "epoch": 0.25}, {"train_runtime": 1.0, "epoch": 1.0}]
    assert epoch_summary(single_pass) == "1 epoch run"
    assert epoch_summary([{"eval_macro_f1": 0.5, "epoch": 0.48}, {"epoch": 0.97}]) == (
        "best epoch 0.48 of 0.97 run"
    )


def test_selection_breaks_macro_f1_ties_by_the_lower_loss_and_nothing_else() -> None:
    assert selection_score(1.0, 0.02) > selection_score(1.0, 0.73)  # a tie: the surer checkpoint
    assert selection_score(0.801, 50.0) > selection_score(0.800, 0.0)  # a better F1 always wins
    assert selection_score(0.5, 1e9) > selection_score(0.499998, 0.0)  # capped: F1 apart by > 1e-6 stays
    assert selection_score(0.5, None) == 0.5  # no loss logged: macro-F1 alone
    assert selection_score(0.5, float("nan")) < selection_score(0.5, 999.0)  # a diverged tie: the worst


def test_labels_with_dollars_plot_as_text_and_a_failed_plot_keeps_the_previous_file(tmp_path: Path) -> None:
    from PIL import Image

    from training.plots import plot_label_distribution, pyplot, save_png

    # dataset labels are text: between two dollar signs matplotlib read them as TeX, "fee $x_$" raising
    # its parser's ValueError mid-run (and "$5 to $10" drawn as an italic "5 to 10")
    labels = ["fee $x_$", "$5 to $10"]
    path = plot_label_distribution({"train": [3, 4]}, labels, tmp_path / "labels.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 100
    before = path.read_bytes()

    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, float("nan")])
    fig.set_dpi(-1)  # a figure Agg cannot draw: savefig raises, as a full disk would mid-plot
    with pytest.raises(ValueError):
        save_png(fig, path, dpi=-1)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["labels.png"]  # no temporary file left behind
    assert fig.number not in plt.get_fignums()  # the failed figure was closed


def test_log_axes_read_as_numbers_not_tex_source(tmp_path: Path) -> None:
    """Text is read as plain text (labels hold "$"), so a log axis's default TeX ticks were drawn as
    `$\\mathdefault{10^{3}}$` in the learning curve and the strategy comparison."""
    pytest.importorskip("matplotlib")
    from labelwise.results_plots import learning_curve
    from training.plots import log_axis, plot_comparison, pyplot

    points = [
        {"train_rows": rows, "test_rows": 2000, "cell": {"strategy": s}, "test": {"macro_f1": f1}}
        for rows, f1 in ((1000, 0.6), (4000, 0.65), (16000, 0.7))
        for s in ("full", "lora")
    ]
    plt = pyplot()
    learning_curve(points, tmp_path / "curve.png")
    row = {
        "accuracy": 0.9,
        "macro_f1": 0.8,
        "train_time_s": 10.0,
        "trainable_params": 1000,
        "artifact_bytes": 4e6,
    }
    plot_comparison([{"strategy": s, **row} for s in ("full", "lora")], tmp_path / "cmp.png", "toy")
    for fig_number in plt.get_fignums():  # none: each was closed once saved
        plt.close(fig_number)
    fig, ax = plt.subplots()
    ax.plot([1000, 4000, 16000], [0.6, 0.65, 0.7])
    log_axis(ax, "x")
    fig.canvas.draw()
    ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    plt.close(fig)
    assert ticks and not any("$" in t for t in ticks) and "1k" in ticks and "10k" in ticks
