"""Review mends of the CLI's surface: `repo show` on a copied version folder, help texts that say what the
code does, and output piped into a reader that stops early (`| head`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelwise.cli import app
from model_repository import EXIT_RUNTIME, ModelRepository
from tests.conftest import manifest_fields

FIELDS = manifest_fields()


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
