"""Review mends of the repository's commands as a user drives them: `labelwise promote`, `repo show`,
`repo verify` and `export` on versions that are not what they should be."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelwise.cli import app
from model_repository import EXIT_RUNTIME, ModelRepository, VersionNotFoundError
from tests.unit.test_repository_alias_mends import publish_servable


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


# ---- 1. a numbered folder without manifest.json is "no version N" to every command -------------------
@pytest.mark.parametrize("made", ["empty", "files, no manifest"])
def test_a_folder_without_its_manifest_is_no_version_to_every_command(tmp_path: Path, made: str) -> None:
    repo = ModelRepository(tmp_path)
    publish_servable(repo, "spam", b"one")
    publish_servable(repo, "spam", b"two")
    torn = repo.version_path("spam", 3)
    torn.mkdir()
    if made != "empty":
        (torn / "onnx").mkdir()
        (torn / "onnx" / "model.fp32.onnx").write_bytes(b"half uploaded")
    said = "scenario 'spam' has no version 3 (published: [1, 2]); its folder"
    commands = [
        ["promote", "-s", "spam", "-v", "3"],
        ["repo", "show", "spam", "3"],
        ["repo", "verify", "spam", "3"],
    ]
    if importlib.util.find_spec("torch") is not None:
        commands.append(["export", "-s", "spam", "-v", "3"])
    for command in commands:
        result = _invoke(*command, "-r", str(tmp_path))
        assert result.exit_code == EXIT_RUNTIME, (command, result.output)
        assert said in result.output and "has no manifest.json" in result.output, (command, result.output)
        assert "Traceback" not in result.output
    with pytest.raises(VersionNotFoundError, match=r"no version 3 \(published: \[1, 2\]\)"):
        repo.load_manifest("spam", 3)
    assert repo.aliases("spam") == {}  # nothing was promoted
    # a number with no folder at all: the same words, without the folder's
    result = _invoke("promote", "-s", "spam", "-v", "9", "-r", str(tmp_path))
    assert result.exit_code == EXIT_RUNTIME
    assert "scenario 'spam' has no version 9 (published: [1, 2])" in result.output
    assert "folder" not in result.output


def test_promote_refuses_a_version_number_below_1_as_usage(tmp_path: Path) -> None:
    publish_servable(ModelRepository(tmp_path), "spam")
    for number in ("0", "-1"):
        result = _invoke("promote", "-s", "spam", "-v", number, "-r", str(tmp_path))
        assert result.exit_code == 2, result.output
        assert "--version" in result.output
