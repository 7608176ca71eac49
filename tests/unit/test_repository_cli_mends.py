"""Review mends of the repository's commands as a user drives them: `labelwise promote`, `repo show`,
`repo verify` and `export` on versions that are not what they should be."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelwise.cli import app
from model_repository import EXIT_RUNTIME, ModelRepository, RepositoryURLError, VersionNotFoundError
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


@pytest.mark.parametrize("command", ["show", "verify"])
@pytest.mark.parametrize("number", ["0", "00", "-1"])
def test_repo_refuses_a_version_number_below_1_as_usage_as_promote_does(
    tmp_path: Path, command: str, number: str
) -> None:
    """`repo show spam 0` said "no version 0" and exited 1, where `promote -v 0` is bad usage (exit 2)."""
    publish_servable(ModelRepository(tmp_path), "spam")
    result = _invoke("repo", command, "-r", str(tmp_path), "spam", "--", number)
    assert result.exit_code == 2, result.output
    assert "Invalid value for 'version'" in result.output and "numbered from 1" in result.output
    assert "no version" not in result.output


# ---- 2. a folder named `07` (a copy, a restore) is not v7 -----------------------------------------------
def test_a_zero_padded_folder_is_not_listed_as_the_version_it_cannot_be_read_as(tmp_path: Path) -> None:
    """`cp -r 2 07`: it was listed as v7 (and as `latest`), yet v7 is read from `7/`, so every command
    then said "no version 7 (published: [1, 2, 7])" and `latest` named nothing readable."""
    repo = ModelRepository(tmp_path)
    publish_servable(repo, "spam", b"one")
    publish_servable(repo, "spam", b"two")
    shutil.copytree(repo.version_path("spam", 2), tmp_path / "spam" / "07")
    shutil.copytree(repo.version_path("spam", 2), tmp_path / "spam" / "0")
    assert repo.list_versions("spam") == [1, 2]
    assert repo.resolve("spam", "latest") == 2
    assert repo.load_manifest("spam", 2).version == 2
    result = _invoke("repo", "list", "--json", "-r", str(tmp_path))
    assert result.exit_code == 0 and '"versions": [1, 2]' in result.output, result.output
    result = _invoke("promote", "-s", "spam", "-v", "7", "-r", str(tmp_path))
    assert result.exit_code == EXIT_RUNTIME
    assert "scenario 'spam' has no version 7 (published: [1, 2])" in result.output
    assert publish_servable(repo, "spam", b"three") == 8  # the next number still skips past 07


def test_a_zero_padded_prefix_in_an_object_store_is_not_listed_either(tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    from tests.unit.test_object_repository_mends import Bucket

    bucket = Bucket()
    try:
        repo = bucket.repo(tmp_path / "cache")
        publish_servable(repo, "spam", b"one")
        publish_servable(repo, "spam", b"two")
        for rel in bucket.fs.find(bucket.path("spam/2")):
            bucket.fs.pipe_file(rel.replace("/spam/2/", "/spam/07/"), bucket.fs.cat_file(rel))
        assert repo.list_versions("spam") == [1, 2]
        assert repo.resolve("spam", "latest") == 2
        with pytest.raises(VersionNotFoundError, match=r"no version 7 \(published: \[1, 2\]\)"):
            repo.resolve("spam", "7")
    finally:
        bucket.fs.rm(f"/{bucket.name}", recursive=True)


# ---- 3. a repository URL no store opens from is bad input, not a traceback ----------------------------
@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("github://org/repo", "a github:// URL cannot be a model repository"),
        ("nosuch://bucket/repo", "unknown repository URL scheme nosuch://"),
        ("http://127.0.0.1:1/repo", "a http:// URL cannot be a model repository"),
    ],
)
def test_a_repository_url_whose_filesystem_needs_more_than_a_url_is_refused_as_usage(
    url: str, said: str
) -> None:
    """github:// (as ftp://) filesystems want constructor arguments (an org and repo, a host): fsspec's
    TypeError went out of every command as a traceback, exit 1; an unknown scheme exited 1 too; http://
    opened, then failed every call as `open-prefix: NonHttpUrlClientError` (exit 1)."""
    pytest.importorskip("fsspec")
    for command in (["repo", "list"], ["promote", "-s", "spam", "-v", "1"]):
        result = _invoke(*command, "-r", url)
        assert result.exit_code == 2, (command, result.output)
        assert said in result.output and "Traceback" not in result.output, result.output
    with pytest.raises(RepositoryURLError, match="s3://BUCKET/PREFIX"):
        ModelRepository(url if not url.startswith("nosuch") else "s3://")


def test_a_url_with_no_bucket_is_named_as_a_url_not_as_a_missing_folder() -> None:
    """`-r s3://` went through Path() as the folder `s3:`: "--repository s3: does not exist"."""
    for command in (["repo", "list"], ["promote", "-s", "spam", "-v", "1"], ["repo", "show", "spam"]):
        result = _invoke(*command, "-r", "s3://")
        assert result.exit_code == 2, (command, result.output)
        assert "names no bucket: use s3://BUCKET/PREFIX" in " ".join(result.output.split()), result.output


# ---- a number of thousands of digits (past int()'s limit) is no version, not a traceback -----------------
def test_a_version_or_alias_file_of_thousands_of_digits_is_refused_in_one_line(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    publish_servable(repo, "spam")
    huge = "9" * 5000
    for command in (["repo", "show", "spam", huge], ["repo", "verify", "spam", huge]):
        result = _invoke(*command, "-r", str(tmp_path))
        assert result.exit_code == EXIT_RUNTIME, result.output
        assert "scenario 'spam' has no version 99999999999999999999… (5000 digits)" in result.output
    alias_file = tmp_path / "spam" / "_aliases" / "production.json"
    alias_file.parent.mkdir()
    alias_file.write_text(f'{{"version": {huge}}}')
    result = _invoke("repo", "list", "--json", "-r", str(tmp_path))
    assert result.exit_code == 0 and '"aliases": {"production": "unreadable"}' in result.output, result.output
    result = _invoke("repo", "show", "spam", "production", "-r", str(tmp_path))
    assert result.exit_code == EXIT_RUNTIME and f"alias file {alias_file} is unreadable" in result.output
    result = _invoke("promote", "-s", "spam", "-v", "1", "-r", str(tmp_path))  # rewritten, as any unreadable
    assert result.exit_code == 0, result.output
    assert "its alias file was unreadable: rewritten" in result.output
    assert repo.resolve("spam", "production") == 1


def test_a_manifest_that_does_not_match_the_schema_says_each_field_in_one_short_line(tmp_path: Path) -> None:
    """It was pydantic's whole text: error count, type tags, documentation URLs, and the manifest's every
    field dumped as the input of each error."""
    repo = ModelRepository(tmp_path)
    publish_servable(repo, "spam")
    path = repo.version_path("spam", 1) / "manifest.json"
    path.write_text(path.read_text().replace('"negative"', '"negative", "negative"'))
    result = _invoke("repo", "show", "spam", "1", "-r", str(tmp_path))
    assert result.exit_code == EXIT_RUNTIME, result.output
    said = f"error: {path}: does not match the manifest schema: labels: "
    assert result.output.startswith(said), result.output
    assert "errors.pydantic.dev" not in result.output and "input_value" not in result.output


def test_repo_list_of_a_scenario_or_version_folder_names_the_repository(tmp_path: Path) -> None:
    """`repo list -r repo/spam` (or `repo/spam/1`) printed an empty table, exit 0, as for an empty
    repository: it is refused naming the repository the folder is in."""
    repo = ModelRepository(tmp_path / "repo")
    publish_servable(repo, "spam")
    for inside, what in (
        (repo.root / "spam", "a scenario's folder"),
        (repo.root / "spam" / "1", "a version's"),
    ):
        result = _invoke("repo", "list", "-r", str(inside))
        assert result.exit_code == 2, result.output
        assert f"is {what}" in result.output and f"the repository is {repo.root.resolve()}" in result.output
    # deeper: the repository's _bases, a scenario's _aliases, a version's onnx/ (an empty table, exit 0)
    for inside in (repo.root / "_bases", repo.root / "spam" / "_aliases", repo.root / "spam" / "1" / "onnx"):
        inside.mkdir(exist_ok=True)
        result = _invoke("repo", "list", "-r", str(inside))
        assert result.exit_code == 2, (inside, result.output)
        assert "is a folder inside a repository" in result.output, result.output
        assert f"the repository is {repo.root.resolve()}" in result.output, result.output
    (tmp_path / "empty").mkdir()
    assert _invoke("repo", "list", "-r", str(tmp_path / "empty")).exit_code == 0  # an empty repository


@pytest.mark.parametrize("command", ["show", "verify"])
def test_repo_reads_a_version_number_with_spaces_as_promote_does(tmp_path: Path, command: str) -> None:
    """`repo show spam " 1"` was refused as "invalid alias name ' 1'", where `promote -v " 1"` takes v1."""
    publish_servable(ModelRepository(tmp_path), "spam")
    result = _invoke("repo", command, "-r", str(tmp_path), "spam", " 1")
    assert result.exit_code == 0, result.output
    assert "alias" not in result.output and ('"version": 1' in result.output or "spam v1" in result.output)


@pytest.mark.parametrize("folder", ["models[prod]", "models[/old]"])
def test_repo_list_prints_a_repository_path_with_brackets_as_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: str
) -> None:
    """The table's problem cell names the repository's path, and Rich read `[...]` in it as markup:
    `models[prod]` was printed as `models`, and `models[/old]` failed with a MarkupError traceback."""
    monkeypatch.chdir(tmp_path)  # a short path: the table's cell holds it whole
    repo = ModelRepository(folder)
    publish_servable(repo, "spam")
    (repo.scenario_path("spam") / "_aliases").write_text("")  # the problem cell names its path
    result = _invoke("repo", "list", "-r", folder)
    assert result.exit_code == 0, result.output
    assert f"{folder}/spam/_aliases is a file" in result.output, result.output


def test_repo_list_names_a_long_repository_path_whole(tmp_path: Path) -> None:
    """The problem cell cut a path longer than the column with "…": the file to move away was not named."""
    repo = ModelRepository(tmp_path / ("deep-" * 12) / "models")
    publish_servable(repo, "spam")
    (repo.scenario_path("spam") / "_aliases").write_text("")
    result = _invoke("repo", "list", "-r", str(repo.root))
    assert result.exit_code == 0 and "…" not in result.output, result.output
    cells = "".join(ch for ch in result.output if ch not in "│ \n")  # the cell, its folded lines joined
    assert f"{repo.root}/spam/_aliasesisafile" in cells, result.output
