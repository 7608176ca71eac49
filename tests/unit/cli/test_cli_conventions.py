"""CLI conventions: env vars shown on the options they feed, --json for scripts, exit codes of classify."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelwise.cli import app
from model_repository import EXIT_RUNTIME, EXIT_USAGE, ModelRepository
from tests.conftest import manifest_fields

FIELDS = manifest_fields()


def _invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})


def _repo(root: Path) -> ModelRepository:
    repo = ModelRepository(root)
    for scenario, versions in (("spam", 2), ("intent", 1)):
        for _ in range(versions):
            with repo.new_version(scenario, **FIELDS) as draft:
                (draft.path / "labels.txt").write_text("negative\npositive\n")
    repo.set_alias("spam", "production", 2)
    return repo


@pytest.mark.parametrize(
    ("command", "variables"),
    [
        (["classify"], ["LABELWISE_REPOSITORY", "LABELWISE_URL", "LABELWISE_API_KEY"]),
        (["repo", "list"], ["LABELWISE_REPOSITORY"]),
        (["train"], ["LABELWISE_REPOSITORY", "LABELWISE_DATA_DIR"]),
        (["evaluate"], ["LABELWISE_REPOSITORY"]),
        (["serve"], ["LABELWISE_REPOSITORY"]),
        (["promote"], ["LABELWISE_REPOSITORY"]),
        (["export"], ["LABELWISE_REPOSITORY"]),
    ],
)
def test_help_shows_the_environment_variables_each_option_reads(
    command: list[str], variables: list[str]
) -> None:
    result = _invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    for variable in variables:
        assert f"env var: {variable}" in result.output, (command, variable)


def test_root_help_documents_the_exit_codes() -> None:
    result = _invoke("--help")
    assert result.exit_code == 0
    assert "Exit codes: 0 success; 1 the command ran and failed; 2 bad usage or input" in result.output
    assert "shown beside it as [env var: ...]" in result.output  # not eaten as rich markup


def test_repo_list_and_show_print_json_for_scripts(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    # the repository comes from the environment variable the option declares
    listed = _invoke("repo", "list", "--json", env={"LABELWISE_REPOSITORY": str(repo.root)})
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == {
        "scenarios": [
            {"scenario": "intent", "versions": [1], "aliases": {}, "unpublished": [], "problem": None},
            {
                "scenario": "spam",
                "versions": [1, 2],
                "aliases": {"production": 2},
                "unpublished": [],
                "problem": None,
            },
        ]
    }
    shown = _invoke("repo", "show", "spam", "production", "--json", "-r", str(repo.root))
    assert shown.exit_code == 0 and len(shown.stdout.strip().splitlines()) == 1
    manifest = json.loads(shown.stdout)
    assert (manifest["scenario"], manifest["version"], manifest["labels"]) == (
        "spam",
        2,
        ["negative", "positive"],
    )


def test_classify_bad_usage_exits_2_with_one_line(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "hello"}\n')
    linked = tmp_path / "linked.jsonl"
    os.link(source, linked)
    cases = [
        (["-s", "x", "-i", str(source), "-o", str(tmp_path / "out.xlsx")], "unknown extension '.xlsx'"),
        (
            ["-s", "x", "-i", str(tmp_path / "absent.csv"), "-o", str(tmp_path / "o.csv")],
            "absent.csv does not exist",
        ),
        (["-s", "x", "-i", str(source), "-o", str(source)], "is the input file"),
        # a hard link to it: with --overwrite, writing it would have emptied the input
        (["-s", "x", "-i", str(source), "-o", str(linked), "--overwrite"], "is the input file"),
        (
            ["-s", "x", "-i", str(source), "-o", str(tmp_path / "o.csv"), "--concurrency", "0"],
            "--concurrency",
        ),
    ]
    for args, fragment in cases:
        result = _invoke("classify", "--no-progress", *args)
        assert result.exit_code == EXIT_USAGE, (args, result.output)
        assert result.stderr.strip().startswith("error: ") and fragment in result.stderr, result.stderr
    assert _invoke("classify", "-i", str(source)).exit_code == EXIT_USAGE  # click: missing options


def test_classify_on_a_scenario_the_repository_lacks_exits_1(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("ray")
    repo = _repo(tmp_path / "repo")
    source = tmp_path / "in.csv"
    source.write_text("text\nhello there\n")
    result = _invoke(
        "classify",
        "--no-progress",
        "-s",
        "absent",
        "-i",
        str(source),
        "-o",
        str(tmp_path / "o.csv"),
        "-r",
        str(repo.root),
    )
    assert result.exit_code == EXIT_RUNTIME, result.output
    assert "cannot load scenario 'absent' (production)" in result.stderr


@pytest.mark.parametrize("tail", ["/", "//", "/.", "/.."])
def test_an_output_file_named_as_a_folder_is_refused_by_every_command(tmp_path: Path, tail: str) -> None:
    """`-o adir.jsonl/` (classify) and `--docs report.md/` (results) name a folder: typer's Path dropped the
    slash, and the command wrote the file adir.jsonl or report.md, exit 0. Each is refused by its flag."""
    source = tmp_path / "in.csv"
    source.write_text("text\nhello\n")
    url = ["--url", "http://127.0.0.1:9", "--retry-for", "0"]
    for command, flag, name in (
        (["classify", "--no-progress", "-s", "spam", "-i", str(source), *url], "--output", "adir.jsonl"),
        (["results", "--report-only", "--out", str(tmp_path / "out")], "--docs", "report.md"),
    ):
        given = f"{tmp_path / name}{tail}"
        result = _invoke(*command, flag, given)
        assert result.exit_code == EXIT_USAGE, result.output
        assert (
            result.stderr.strip()
            == f"error: {flag} {given} names a folder, not a file: give the path of the file to write"
        )
        assert not (tmp_path / name).exists() and not (tmp_path / "out").exists()
