"""Paths a command cannot write: refused before training where a run would publish to them, and any other
OSError from a command answered in one line (exit 1), never a traceback."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from labelwise.cli import LabelwiseGroup, app
from model_repository import EXIT_RUNTIME, EXIT_USAGE, unwritable_local_root


def test_a_root_under_a_file_or_in_a_read_only_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    assert (
        unwritable_local_root(tmp_path / "afile" / "repo") == f"{tmp_path / 'afile'} is a file, not a folder"
    )
    assert unwritable_local_root(tmp_path / "afile") == f"{tmp_path / 'afile'} is a file, not a folder"
    assert unwritable_local_root(tmp_path / "new" / "deeper" / "repo") is None  # made when publishing
    assert unwritable_local_root(tmp_path) is None
    assert unwritable_local_root("s3://bucket/models") is None  # an object store is checked on opening
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        try:
            assert unwritable_local_root(locked / "repo") == f"{locked} is not writable by this user"
        finally:
            locked.chmod(0o700)


@pytest.mark.parametrize(
    "command",
    [
        ["train", "-s", "spam", "--strategy", "frozen", "--max-train-samples", "16"],
        ["compare", "-s", "spam", "--max-train-samples", "16"],
        ["tune", "-s", "spam", "--strategy", "frozen", "--trials", "1", "--publish"],
    ],
)
def test_training_that_would_publish_under_a_file_is_refused_before_it_trains(
    tmp_path: Path, command: list[str]
) -> None:
    pytest.importorskip("torch")
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [*command, "-r", str(tmp_path / "afile" / "repo"), "-o", str(out)])
    assert result.exit_code == EXIT_USAGE, result.output
    assert result.stderr.strip() == (
        f"error: model repository {tmp_path / 'afile' / 'repo'}: {tmp_path / 'afile'} is a file, "
        "not a folder; nothing was trained"
    )
    assert not out.exists()


def test_an_os_error_from_any_command_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """The root group's handling (labelwise.cli.LabelwiseGroup), on a command that writes where it cannot."""
    probe = typer.Typer(cls=LabelwiseGroup)

    @probe.command()
    def write(path: Path) -> None:
        path.write_text("x")

    @probe.command()
    def other() -> None:  # two commands: typer keeps the group
        pass

    (tmp_path / "afile").write_text("x")
    result = CliRunner().invoke(probe, ["write", str(tmp_path / "afile" / "out.json")])
    assert result.exit_code == EXIT_RUNTIME
    assert (
        result.stderr
        == f"error: NotADirectoryError: [Errno 20] Not a directory: '{tmp_path / 'afile' / 'out.json'}'\n"
    )
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    "args",
    [
        ["train", "-s", "spam", "--strategy", "frozen", "--no-publish"],
        ["compare", "-s", "spam", "--strategies", "frozen"],
        ["tune", "-s", "spam", "--strategy", "frozen", "-n", "1"],
        ["evaluate", "-s", "spam", "--split", "validation"],
    ],
    ids=lambda args: args[0],
)
@pytest.mark.parametrize("below", ["", "run"])
def test_an_output_dir_that_is_a_file_is_refused_before_any_work(
    tmp_path: Path, args: list[str], below: str
) -> None:
    """It was `error: NotADirectoryError` (exit 1) once the data and model had loaded (evaluate: after the
    scoring)."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    out = afile / below if below else afile
    result = CliRunner().invoke(app, [*args, "-o", str(out), "-r", str(tmp_path / "repo")])
    assert result.exit_code == EXIT_USAGE, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: --output-dir {out} ") and line.endswith("a file, not a folder")
    assert afile.read_text() == "x"


@pytest.mark.parametrize(
    "command",
    [
        ["train", "-s", "spam", "--strategy", "frozen", "--max-train-samples", "16"],
        ["train", "-s", "spam", "--strategy", "frozen", "--no-publish"],
        ["compare", "-s", "spam", "--max-train-samples", "16"],
        ["evaluate", "-s", "spam", "--split", "validation"],
        ["tune", "-s", "spam", "--strategy", "frozen", "--trials", "1", "--publish"],
    ],
)
@pytest.mark.parametrize("where", ["spam/1", ".", "spam/1/deeper"])
def test_an_output_dir_inside_the_model_repository_is_refused_and_the_version_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], where: str
) -> None:
    """`train -o REPO/spam/1` deleted v1's weights/ and wrote its run files beside them (v1 then failed
    `repo verify`); evaluate's metrics.json and confusion matrix broke it the same way. The repository is
    the command's -r, else LABELWISE_REPOSITORY (--no-publish takes no -r)."""
    from model_repository import ModelRepository
    from tests.conftest import manifest_fields

    repo = ModelRepository(tmp_path / "repo")
    with repo.new_version("spam", **manifest_fields()) as draft:
        (draft.path / "weights").mkdir()
        (draft.path / "weights" / "model.safetensors").write_bytes(b"weights")
    monkeypatch.setenv("LABELWISE_REPOSITORY", str(tmp_path / "repo"))
    out = tmp_path / "repo" / where
    flags = [] if "--no-publish" in command else ["-r", str(tmp_path / "repo")]
    result = CliRunner().invoke(app, [*command, *flags, "-o", str(out)])
    assert result.exit_code == EXIT_USAGE, result.output
    assert result.stderr.strip() == (
        f"error: --output-dir {out} is inside the model repository {tmp_path / 'repo'}: what is written "
        "there would change published versions, which are write-once; give a folder outside it"
    )
    assert repo.verify("spam", 1).version == 1
    assert sorted(p.name for p in repo.version_path("spam", 1).iterdir()) == ["manifest.json", "weights"]


def _refusal(root: Path, cleared: Path, whose: str) -> str:
    """The line that refuses repository `root` at or inside `cleared`, a folder `whose` run deletes."""
    inside = "is" if root == cleared else "is inside"
    return (
        f"error: the model repository {root} {inside} {cleared}, which {whose} deletes, every published "
        f"version with it; give another --output-dir, or keep the repository outside {cleared}"
    )


def _repository_with_a_version(root: Path) -> Any:
    """A local repository at `root` holding spam v1 (weights and manifest)."""
    from model_repository import ModelRepository
    from tests.conftest import manifest_fields

    repo = ModelRepository(root)
    with repo.new_version("spam", **manifest_fields()) as draft:
        (draft.path / "weights").mkdir()
        (draft.path / "weights" / "model.safetensors").write_bytes(b"weights")
    return repo


@pytest.mark.parametrize("publish", [True, False])
@pytest.mark.parametrize("where", ["weights", "weights/repo", "checkpoints/deeper/repo", "tensorboard/repo"])
def test_a_model_repository_inside_a_folder_the_run_deletes_is_refused_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, publish: bool, where: str
) -> None:
    """`train -o RUN -r RUN/weights/repo`: the run deletes its folder's weights/ (an earlier run's) before it
    trains, and checkpoints/ after, and the repository with every version in it went with them. Refused
    before any training; --no-publish too, where the repository is LABELWISE_REPOSITORY's."""
    out = tmp_path / "run"
    root = out / where
    repo = _repository_with_a_version(root)
    monkeypatch.setenv("LABELWISE_REPOSITORY", str(root))
    flags = ["-r", str(root)] if publish else ["--no-publish"]
    command = ["train", "-s", "spam", "--strategy", "frozen", "--max-train-samples", "16", "-o", str(out)]
    result = CliRunner().invoke(app, [*command, *flags])
    assert result.exit_code == EXIT_USAGE, result.output
    cleared = out / where.split("/")[0]
    assert result.stderr.strip() == _refusal(root, cleared, f"a run in --output-dir {out}")
    assert repo.verify("spam", 1).version == 1
    assert not (out / "train_config.json").exists()  # no run was started


@pytest.mark.parametrize(
    ("command", "run", "where"),
    [
        (["compare", "--strategies", "frozen,lora"], "lora", "weights/repo"),
        (["compare", "--strategies", "frozen"], "frozen", "checkpoints"),
        (["tune", "--strategy", "frozen", "--trials", "1"], "trial-000", "tensorboard/repo"),
        (["tune", "--strategy", "frozen", "--trials", "1", "--publish"], "best", "weights/repo"),
    ],
)
def test_a_model_repository_in_a_run_folder_of_compare_or_tune_is_refused_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], run: str, where: str
) -> None:
    """compare's run folders (one per strategy) and tune's (trial-NNN/, best/) are train run folders in
    --output-dir: each run deletes its weights/, tensorboard/ and checkpoints/, and a repository there went
    with them. Refused before any training, as train refuses it."""
    out = tmp_path / "study"
    root = out / run / where
    repo = _repository_with_a_version(root)
    monkeypatch.setenv("LABELWISE_REPOSITORY", str(root))
    args = [*command, "-s", "spam", "--max-train-samples", "16", "-o", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == EXIT_USAGE, result.output
    cleared = out / run / where.split("/")[0]
    assert result.stderr.strip() == _refusal(root, cleared, f"the run in {out / run}")
    assert repo.verify("spam", 1).version == 1
    assert sorted(p.name for p in out.iterdir()) == [run]  # nothing else was written: no run started


@pytest.mark.parametrize(
    ("runs_inside", "where"),
    [
        ({"lora"}.__contains__, "frozen/weights/repo"),  # a strategy not compared: no run folder
        ({"lora"}.__contains__, "lora/notes/repo"),  # a folder the run keeps
        ({"lora"}.__contains__, "weights/repo"),  # compare's own folder is no run folder
        (None, "notes/weights/repo"),  # train: deeper than the run folder's own weights/
    ],
)
def test_a_repository_elsewhere_in_the_output_dir_is_not_refused(
    tmp_path: Path, runs_inside: object, where: str
) -> None:
    from labelwise.cli.options import refuse_repository_in_run_folder

    refuse_repository_in_run_folder(tmp_path, tmp_path / where, runs_inside=runs_inside)  # type: ignore[arg-type]


def test_study_run_folders_are_its_trials_and_best() -> None:
    from training.tuning import is_study_run_folder

    assert all(map(is_study_run_folder, ["best", "trial-000", "trial-042", "trial-1234"]))
    assert not any(
        map(is_study_run_folder, ["trial-", "trial-1", "trial-x00", "best2", "plots", "trial-0001"])
    )


@pytest.mark.parametrize("runs_inside", [None, {"lora"}.__contains__], ids=["train", "compare"])
def test_a_repository_reached_through_a_linked_weights_folder_is_refused(
    tmp_path: Path, runs_inside: object
) -> None:
    """RUN/weights a link to the folder that holds the repository: what the run writes and clears there
    lands in that folder, so it is refused as if the repository were in RUN/weights itself."""
    from labelwise.cli.options import refuse_repository_in_run_folder
    from model_repository import UsageError

    out = tmp_path / "out"
    run = out if runs_inside is None else out / "lora"
    run.mkdir(parents=True)
    (tmp_path / "elsewhere" / "repo").mkdir(parents=True)
    (run / "weights").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UsageError, match=f"is inside {re.escape(str(run / 'weights'))}, which"):
        refuse_repository_in_run_folder(out, run / "weights" / "repo", runs_inside=runs_inside)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "what"), [("lora", "a file, not a folder"), ("comparison.md", "is a folder")]
)
def test_compare_refuses_a_strategy_folder_or_comparison_file_in_the_way_before_training(
    tmp_path: Path, name: str, what: str
) -> None:
    """`compare -o X` with X/lora a file trained full and frozen, then failed as `error: NotADirectoryError`
    (exit 1); X/comparison.md a folder failed as `IsADirectoryError`, naming no option."""
    out = tmp_path / "cmp"
    out.mkdir()
    (out / name).write_text("x") if name == "lora" else (out / name).mkdir()
    result = CliRunner().invoke(app, ["compare", "-s", "spam", "--max-train-samples", "16", "-o", str(out)])
    assert result.exit_code == EXIT_USAGE, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: --output-dir {out}: {out / name} ") and what in line
    assert sorted(p.name for p in out.iterdir()) == [name]  # no strategy trained


def test_compare_refuses_a_folder_holding_runs_of_strategies_it_does_not_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`compare -o X --strategies full,lora`, then `--strategies lora` into X, left full/ (its weights and
    metrics) beside the new comparison of lora alone: one folder, two runs. Refused, naming it, and kept."""
    pytest.importorskip("torch")
    import training

    out = tmp_path / "cmp"
    for strategy in ("full", "lora"):  # what a run writes into its folder first, then its record
        (out / strategy).mkdir(parents=True)
        (out / strategy / "train_config.json").write_text("{}")
        (out / strategy / "metrics.json").write_text("{}")
    (out / "frozen").mkdir()  # no run there: nothing to mix up
    trained: list[tuple[str, ...]] = []

    def compare(scenario: str, *, strategies: tuple[str, ...], **_: object) -> None:
        trained.append(strategies)
        raise typer.Exit(0)

    monkeypatch.setattr(training, "compare_strategies", compare)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    for strategies, earlier, folders in (
        ("lora", "an earlier run of full", f"({out / 'full'})"),
        ("frozen", "earlier runs of full, lora", f"({out / 'full'}, {out / 'lora'})"),
    ):
        result = CliRunner().invoke(
            app, ["compare", "-s", "spam", "--strategies", strategies, "-o", str(out)]
        )
        assert result.exit_code == EXIT_USAGE, result.output
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"error: --output-dir {out} holds {earlier} {folders}, which --strategies ")
        assert "or give another --output-dir" in line
    assert trained == [] and sorted(p.relative_to(out) for p in out.rglob("*")) == before
    # the same strategies again, or more: each run folder is this comparison's own
    for strategies in ("full,lora", "lora,full,frozen"):
        result = CliRunner().invoke(
            app, ["compare", "-s", "spam", "--strategies", strategies, "-o", str(out)]
        )
        assert result.exit_code == 0, result.output
    assert trained == [("full", "lora"), ("lora", "full", "frozen")]


@pytest.mark.parametrize(("name", "flags"), [("trial-001", []), ("best", ["--publish", "-r", "repo"])])
def test_tune_refuses_a_file_where_a_run_of_the_study_goes_before_any_trial(
    tmp_path: Path, name: str, flags: list[str]
) -> None:
    """A file trial-001 failed trial 1 with a traceback and the study as `error: NotADirectoryError` (exit 1)
    once trial 0 had trained; best/ with --publish, once every trial had."""
    out = tmp_path / "study"
    out.mkdir()
    (out / name).write_text("x")
    flags = [str(tmp_path / flag) if flag == "repo" else flag for flag in flags]
    result = CliRunner().invoke(
        app, ["tune", "-s", "spam", "--strategy", "frozen", "-n", "2", "-o", str(out), *flags]
    )
    assert result.exit_code == EXIT_USAGE, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: --output-dir {out}: {out / name} is a file, not a folder")
    assert sorted(p.name for p in out.iterdir()) == [name]  # no trial ran
