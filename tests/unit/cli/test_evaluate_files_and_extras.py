"""`labelwise evaluate`: a serving-only install is told which extra to add (one line, exit 2); a labeled file
is scored whatever scenario config the version recorded; each data set and setting gets its own folder."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from model_repository import ModelRepository
from tests.conftest import write_toy_csv

pytest.importorskip("torch", reason="the training extra is not installed")
pytest.importorskip("onnxruntime", reason="the serving extra is not installed")
pytest.importorskip("optimum", reason="the export extra is not installed")

LABELS = ("positive", "negative", "neutral")
SCENARIO = "toy_files"


@pytest.fixture(scope="module")
def published(tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A full fine-tune with a test split, published with its fp32 graph (v1); and two labeled files, both
    named test.csv, in different folders."""
    from training import custom_scenario, make_train_config, train_and_publish

    root = tmp_path_factory.mktemp("evaluate-files")
    write_toy_csv(root / "data" / "train.csv", 20, seed=1, labels=LABELS)
    write_toy_csv(root / "data" / "validation.csv", 4, seed=2, labels=LABELS)
    scenario = custom_scenario(SCENARIO, list(LABELS), root / "data", max_length_tokens=32, test_fraction=0.2)
    config = make_train_config(
        scenario,
        "full",
        base_model=str(tiny_roberta_dir),
        output_dir=root / "run",
        batch_size=8,
        max_steps=2,
        early_stopping_patience=None,
    )
    repo = ModelRepository(root / "repo")
    manifest = train_and_publish(config, repo, export_precisions=["fp32"])
    files = (
        write_toy_csv(root / "a" / "test.csv", 3, seed=3, labels=LABELS),
        write_toy_csv(root / "b" / "test.csv", 5, seed=4, labels=LABELS),
    )
    return SimpleNamespace(repo=repo, manifest=manifest, files=files, root=root)


def _evaluate(repo: Path, *args: str):
    from labelwise.cli import app

    return CliRunner().invoke(app, ["evaluate", "-s", SCENARIO, "-r", str(repo), *args])


@pytest.mark.parametrize("module", ["datasets", "sklearn", "matplotlib"])
def test_a_serving_only_install_is_told_the_extra_to_add_not_shown_a_traceback(
    published, module: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The Docker image installs serving without training: onnxruntime is there, the training extra's
    datasets, sklearn and matplotlib are not."""
    monkeypatch.setitem(sys.modules, module, None)  # import fails as when not installed
    out = _evaluate(
        published.repo.root, "--data", str(published.files[0]), "--precision", "fp32", "-o", str(tmp_path)
    )
    assert out.exit_code == 2, out.output
    (line,) = out.stderr.strip().splitlines()
    assert line == f"error: {module} is not installed; run: pip install 'labelwise[training]'"


def _repository_whose_scenario_config(published, tmp_path: Path, change) -> Path:  # type: ignore[no-untyped-def]
    copy = tmp_path / "repo"
    shutil.copytree(published.repo.root, copy)
    path = copy / SCENARIO / "1" / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest["training_config"])
    path.write_text(json.dumps(manifest))
    return copy


def test_a_file_is_scored_for_a_version_that_recorded_no_scenario_config(published, tmp_path: Path) -> None:
    """As training/export/minilm_figures.py publishes: a training_config without `scenario`."""
    repo = _repository_whose_scenario_config(published, tmp_path, lambda config: config.pop("scenario"))
    out = _evaluate(repo, "--data", str(published.files[0]), "--json", "-o", str(tmp_path / "out"))
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["n_samples"] == 9


def test_a_file_is_scored_for_a_version_an_older_release_published(published, tmp_path: Path) -> None:
    """A scenario config with a key this release no longer has: --split cannot rebuild the run and says to
    score a file; --data scores it (columns, cleaning and the unknown-label rule are all it needs)."""

    def retired(config: dict) -> None:
        config["scenario"]["retired_setting"] = True

    repo = _repository_whose_scenario_config(published, tmp_path, retired)
    split = _evaluate(repo, "--split", "test")
    assert split.exit_code == 2
    (line,) = split.stderr.strip().splitlines()
    assert "does not rebuild a run config" in line and "score a file with --data instead" in line
    out = _evaluate(repo, "--data", str(published.files[1]), "--json", "-o", str(tmp_path / "out"))
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["n_samples"] == 15


def test_each_data_set_and_setting_gets_its_own_default_folder(
    published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--data some/test.csv` wrote over `--split test`'s metrics, two eval files of one name over each
    other's, and a run at another pass budget over the default one."""
    monkeypatch.setenv("LABELWISE_RUNS_DIR", str(tmp_path / "runs"))
    runs = [
        ("--split", "test"),
        ("--data", str(published.files[0])),
        ("--data", str(published.files[1])),
        ("--split", "test", "--precision", "fp32"),
        ("--split", "test", "--precision", "fp32", "--max-batch-tokens", "64"),
    ]
    folders = []
    for args in runs:
        out = _evaluate(published.repo.root, *args, "--json")
        assert out.exit_code == 0, out.output
        metrics = json.loads(out.stdout)
        folders.append(Path(metrics["output_dir"]))
        assert json.loads((folders[-1] / "metrics.json").read_text())["n_samples"] == metrics["n_samples"]
    assert len(set(folders)) == len(runs), folders
    assert all(f.parent == tmp_path / "runs" / SCENARIO for f in folders)
    from training.evaluate import repository_digest

    digest = f"-r{repository_digest(published.repo.root)}"
    assert all(f.name.endswith(digest) for f in folders)
    names = [f.name.removesuffix(digest) for f in folders]
    assert names[0] == "evaluate-v1-test-torch" and names[3] == "evaluate-v1-test-fp32"
    assert names[1].startswith("evaluate-v1-file-test-") and names[1].endswith("-torch")
    assert names[4] == "evaluate-v1-test-fp32-mbt64"
    # each folder still holds its own figures: the test split's 12 rows, not a file's 9 or 15
    assert json.loads((folders[0] / "metrics.json").read_text())["n_samples"] == 12


def test_v1_of_two_repositories_gets_a_default_folder_each(
    published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default folder named the scenario, version, rows and precision but not the repository: v1 of a
    second repository's scenario of the same name wrote over the first one's metrics."""
    monkeypatch.setenv("LABELWISE_RUNS_DIR", str(tmp_path / "runs"))
    other = tmp_path / "other-repo"
    shutil.copytree(published.repo.root, other)
    folders = []
    for repo in (published.repo.root, other):
        out = _evaluate(repo, "--split", "test", "--json")
        assert out.exit_code == 0, out.output
        folders.append(Path(json.loads(out.stdout)["output_dir"]))
    assert folders[0] != folders[1] and all((f / "metrics.json").is_file() for f in folders), folders
    assert folders[0].parent == folders[1].parent == tmp_path / "runs" / SCENARIO


def test_a_training_runs_folder_is_refused_as_the_output(published, tmp_path: Path) -> None:
    """`-o <a training run's folder>` replaced the run's own metrics.json (and confusion matrix) with the
    evaluation's. It is refused before scoring (exit 2, naming the folder); an earlier evaluation's folder
    is still written again."""
    run = published.root / "run"
    record = (run / "metrics.json").read_text()
    matrix = (run / "confusion_matrix.png").read_bytes()
    out = _evaluate(published.repo.root, "--split", "test", "-o", str(run))
    assert out.exit_code == 2, out.output
    assert f"--output-dir {run} holds a metrics.json that is not an evaluation's" in out.output
    assert (run / "metrics.json").read_text() == record
    assert (run / "confusion_matrix.png").read_bytes() == matrix
    for _ in range(2):  # a rerun into an evaluation's own folder replaces it
        again = _evaluate(published.repo.root, "--split", "test", "-o", str(tmp_path / "eval"))
        assert again.exit_code == 0, again.output


def test_a_file_without_the_versions_columns_is_told_what_evaluate_can_do(published, tmp_path: Path) -> None:
    """A --data file lacking the text column was told to "set text_column / label_column in the scenario
    config", which evaluate takes none of (it reads the columns the version was published with)."""
    from tests.conftest import write_rows

    data = write_rows(tmp_path / "cols.csv", [("a text", "positive")], header=("review", "label"))
    out = _evaluate(published.repo.root, "--data", str(data), "-o", str(tmp_path / "out"))
    assert out.exit_code == 2, out.output
    (line,) = out.stderr.strip().splitlines()
    assert f"data file {data}: missing column 'text'" in line and "scenario config" not in line
    assert f"{SCENARIO} v1 reads columns 'text' and 'label'" in line and "rename" in line


@pytest.mark.parametrize("typed", [" 1", "1 ", "01"])
def test_a_version_number_is_read_as_promote_reads_it(published, tmp_path: Path, typed: str) -> None:
    """`-v " 1"` was refused as "invalid alias name ' 1'", where `promote -v " 1"` points at v1."""
    out = _evaluate(published.root / "repo", "-v", typed, "--data", str(published.files[0]), "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["version"] == 1


@pytest.mark.parametrize("typed", ["0", " 0", "-1"])
def test_a_version_number_below_1_is_refused_as_usage_naming_the_option(published, typed: str) -> None:
    out = _evaluate(published.root / "repo", "-v", typed, "--data", str(published.files[0]))
    assert out.exit_code == 2, out.output
    assert "Invalid value for '--version'" in out.output and "numbered from 1" in out.output
