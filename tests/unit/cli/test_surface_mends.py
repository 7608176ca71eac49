"""Review mends of the CLI's surface: `repo show` on a copied version folder, help texts that say what the
code does, and output piped into a reader that stops early (`| head`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelwise.cli import app
from model_repository import EXIT_RUNTIME, ModelRepository
from tests.conftest import manifest_fields

FIELDS = manifest_fields()
ROOT = Path(__file__).resolve().parents[3]


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_repo_show_of_a_copied_version_folder_prints_it_and_fails_naming_the_mismatch(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    for _ in range(2):
        with repo.new_version("spam", **FIELDS) as draft:
            (draft.path / "labels.txt").write_text("negative\npositive\n")
    shutil.copytree(repo.version_path("spam", 1), repo.version_path("spam", 5))  # a copied folder
    for ref in ("5", "latest"):
        shown = _invoke("repo", "show", "spam", ref, "--json", "-r", str(tmp_path))
        assert shown.exit_code == EXIT_RUNTIME, shown.output
        assert json.loads(shown.stdout)["version"] == 1  # what the folder holds, still shown
        assert shown.stderr == (
            "error: spam v5: manifest says spam v1; the folder was copied or moved, and `repo verify`, "
            "`promote` and serving refuse it\n"
        )
        assert _invoke("repo", "verify", "spam", ref, "-r", str(tmp_path)).exit_code == EXIT_RUNTIME
    # the version it was copied from, and an untouched one, are shown as before
    for ref in ("1", "2"):
        shown = _invoke("repo", "show", "spam", ref, "-r", str(tmp_path))
        assert (shown.exit_code, shown.stderr) == (0, ""), shown.output
        assert json.loads(shown.stdout)["version"] == int(ref)


@pytest.mark.parametrize(
    "command",
    [
        ["repo", "list"],
        ["repo", "show"],
        ["repo", "verify"],
        ["export"],
        ["train"],
        ["evaluate"],
        ["promote"],
        ["classify"],
        ["serve"],
        ["doctor"],
        ["compare"],
        ["robustness"],
        ["export-bench"],
    ],
)
def test_repository_help_names_object_store_urls(command: list[str]) -> None:
    result = _invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "a folder or" in result.output and "s3://BUCKET/PREFIX" in result.output, result.output
    assert "Root folder" not in result.output


@pytest.mark.parametrize("command", [["repo", "show"], ["repo", "verify"]])
def test_the_version_argument_says_it_takes_a_number_an_alias_or_latest(command: list[str]) -> None:
    result = _invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "A version number, an alias (e.g. production) or 'latest'" in result.output, result.output


def _run_into_a_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m labelwise.cli ARGS` with its stdout a pipe nobody reads any more, as `| head` leaves
    it once head has its lines (the read end is closed before the command has imported, let alone written)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "labelwise.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    stderr = proc.stderr.read()
    return subprocess.CompletedProcess(proc.args, proc.wait(timeout=120), "", stderr)


def test_output_piped_into_a_reader_that_stopped_ends_quietly(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    with repo.new_version("spam", **FIELDS) as draft:
        (draft.path / "labels.txt").write_text("negative\npositive\n")
    for args in (["repo", "show", "spam", "-r", str(tmp_path)], ["repo", "list", "-r", str(tmp_path)]):
        done = _run_into_a_closed_pipe(*args)
        # was: `error: BrokenPipeError: [Errno 32] Broken pipe` (typer.echo), exit 1
        assert (done.returncode, done.stderr) == (EXIT_RUNTIME, ""), (args, done.stderr)


def test_a_broken_pipe_that_is_not_stdout_is_one_error_line() -> None:
    """A BrokenPipeError from elsewhere (a socket whose peer went) while stdout is fine is an OSError like any
    other: one line and exit 1, not a traceback (the quiet exit is for a reader of stdout that stopped)."""
    import typer

    from labelwise.cli import LabelwiseGroup

    broken = typer.Typer(cls=LabelwiseGroup)

    @broken.command()
    def send() -> None:
        raise BrokenPipeError(32, "Broken pipe")

    @broken.command()
    def other() -> None:  # two commands: `send` stays a subcommand
        pass

    done = CliRunner().invoke(broken, ["send"])
    assert done.exit_code == EXIT_RUNTIME, done.output
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    assert "error: BrokenPipeError: [Errno 32] Broken pipe" in done.output


def test_results_help_shows_the_out_default_rich_markup_ate() -> None:
    # was "Cell results, runs and the repository ." : its "[default: ...]" was read as rich markup
    result = _invoke("results", "--help")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())
    assert "the repository (default runs/results, runs/ being $LABELWISE_RUNS_DIR when that is set)" in text


def test_doctor_verifies_the_version_the_alias_names_not_what_a_copied_manifest_says(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from tests.unit.test_repository_alias_mends import publish_servable

    repo = ModelRepository(tmp_path)
    publish_servable(repo, "spam")
    shutil.copytree(repo.version_path("spam", 1), repo.version_path("spam", 5))  # says spam v1
    (tmp_path / "spam" / "_aliases").mkdir()
    (tmp_path / "spam" / "_aliases" / "production.json").write_text('{"version": 5}')
    result = _invoke("doctor", "-r", str(tmp_path))
    assert result.exit_code == 0, result.output
    # was "spam: v1 full: fp32 ...": v1 verified in place of v5, which every replica refuses to load
    assert "spam: v5: refused at load: spam v5: manifest says spam v1" in result.stdout, result.stdout


@pytest.mark.parametrize("command", ["train", "compare"])
def test_class_weights_help_says_auto_is_off_with_weighted_sampling(command: str) -> None:
    # was "auto: on when max/min class ratio > 3": auto is off with weighted sampling (training.trainer),
    # and 3 is the scenario's imbalance_ratio, which a scenario may set
    from training.metrics import use_class_weights

    assert use_class_weights("auto", [40, 10], threshold=3.0) and not use_class_weights("auto", [30, 10], 3.0)
    result = _invoke(command, "--help")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())
    assert "exceeds the scenario's imbalance_ratio (3 unless set), off with weighted sampling" in text, text


def test_serve_ingress_mode_help_says_the_config_sets_the_default(tmp_path: Path) -> None:
    # was "combined (default) or separate": a config's ingress_mode wins when the option is not given
    from labelwise.server import plan_server
    from serving import ServingConfig

    flat = tmp_path / "serve.yaml"
    flat.write_text("ingress_mode: separate\n")
    assert plan_server(flat, repository=tmp_path, direct_ingress=False).config.ingress_mode == "separate"
    assert ServingConfig.model_fields["ingress_mode"].default == "combined"
    result = _invoke("serve", "--help")
    assert result.exit_code == 0, result.output
    assert "combined or separate (default: the config's, else combined)" in result.output, result.output


def test_tune_max_steps_help_names_no_epochs_flag_tune_lacks() -> None:
    # was "whatever --epochs says", shared with train: tune has no --epochs (epochs are searched)
    result = _invoke("tune", "--help")
    assert result.exit_code == 0, result.output
    assert "--epochs" not in result.output
    text = " ".join(result.output.replace("│", " ").split())
    assert "Train every trial this many optimizer steps whatever its epochs (then not searched)" in text
