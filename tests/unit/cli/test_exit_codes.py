"""`labelwise` turns every LabelwiseError into one stderr line and its exit code; usage errors exit 2."""

from __future__ import annotations

import logging
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelwise.cli import app
from model_repository import EXIT_RUNTIME, EXIT_USAGE, LabelwiseError, ModelRepository, UsageError

ROOT = Path(__file__).resolve().parents[3]


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _assert_one_error_line(stderr: str, *fragments: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_version_prints_the_installed_version() -> None:
    result = _invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"labelwise {version('labelwise')}"


def test_python_dash_m_runs_the_same_command(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "labelwise.cli", "repo", "show", "absent", "-r", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == EXIT_RUNTIME
    _assert_one_error_line(out.stderr, "absent")
    assert out.stdout == ""


@pytest.mark.parametrize(
    "args",
    [["--no-such-option"], ["repo", "show"], ["no-such-command"], ["train", "--strategy", "lora"]],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = _invoke(*args)
    assert result.exit_code == EXIT_USAGE
    assert "Traceback" not in result.output


def test_missing_scenario_is_a_runtime_failure(tmp_path: Path) -> None:
    result = _invoke("repo", "show", "absent", "-r", str(tmp_path))
    assert result.exit_code == EXIT_RUNTIME
    _assert_one_error_line(result.stderr, "scenario 'absent' has no published version")
    assert result.stdout == ""


def test_an_invalid_name_is_bad_input(tmp_path: Path) -> None:
    result = _invoke("repo", "verify", "Not Valid", "-r", str(tmp_path))
    assert result.exit_code == EXIT_USAGE
    _assert_one_error_line(result.stderr, "invalid scenario name 'Not Valid'")


def test_promote_refuses_an_absent_version(tmp_path: Path) -> None:
    result = _invoke("promote", "--scenario", "absent", "--version", "3", "-r", str(tmp_path))
    assert result.exit_code == EXIT_RUNTIME
    _assert_one_error_line(result.stderr, "absent")
    assert ModelRepository(tmp_path).list_scenarios() == []


def test_train_with_a_missing_scenario_yaml_is_bad_input(tmp_path: Path) -> None:
    scenario = tmp_path / "absent.yaml"
    result = _invoke("train", "--scenario", str(scenario), "--strategy", "lora", "--no-publish")
    assert result.exit_code == EXIT_USAGE
    _assert_one_error_line(result.stderr, str(scenario), "does not exist")


def test_serve_with_a_missing_config_fails_before_ray(tmp_path: Path) -> None:
    result = _invoke("serve", "--config", str(tmp_path / "absent.yaml"))
    assert result.exit_code == EXIT_USAGE
    _assert_one_error_line(result.stderr, "absent.yaml")
    assert "labelwise serving" not in result.output


def test_a_repository_folder_that_does_not_exist_is_refused_not_served_empty(tmp_path: Path) -> None:
    # A typo, or the wrong folder (the demo publishes to var/demo-repository): not an empty repository.
    missing = tmp_path / "no-such-repository"
    result = _invoke("serve", "--repository", str(missing), "--port", "8999")
    assert result.exit_code == EXIT_USAGE
    _assert_one_error_line(result.stderr, str(missing), "does not exist", "var/demo-repository")
    assert "labelwise serving" not in result.output
    result = _invoke("repo", "list", "--repository", str(missing))
    assert result.exit_code == EXIT_USAGE
    _assert_one_error_line(result.stderr, str(missing), "does not exist")
    assert not missing.exists()
    assert _invoke("repo", "list", "--repository", str(tmp_path), "--json").exit_code == 0  # empty: fine


def test_a_multi_line_message_is_printed_on_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    class Broken(LabelwiseError):
        exit_code = 7

    def fail(*_args: object) -> None:
        raise Broken("first line\n  second line\n")

    monkeypatch.setattr("labelwise.cli.repo.show_version", fail)
    result = _invoke("repo", "show", "x", "-r", str(tmp_path))
    assert result.exit_code == 7
    assert result.stderr == "error: first line; second line\n"


def test_a_usage_error_from_a_library_exits_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def fail(*_args: object) -> None:
        raise UsageError("bad ref 'x'")

    monkeypatch.setattr("labelwise.cli.repo.verify_version", fail)
    result = _invoke("repo", "verify", "s", "x", "-r", str(tmp_path))
    assert (result.exit_code, result.stderr) == (EXIT_USAGE, "error: bad ref 'x'\n")


def test_other_exceptions_are_bugs_and_propagate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def fail(*_args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("labelwise.cli.repo.show_version", fail)
    result = _invoke("repo", "show", "x", "-r", str(tmp_path))
    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError)


def test_a_missing_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    class NoImports:
        @staticmethod
        def import_module(name: str) -> None:
            raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr("labelwise.extras.importlib", NoImports)
    result = _invoke("export", "--scenario", "s", "-r", str(tmp_path))
    assert result.exit_code == EXIT_USAGE
    _assert_one_error_line(result.stderr, "torch is not installed", "pip install 'labelwise[training]'")


def test_export_refuses_an_absent_version_as_promote_and_evaluate_do_saying_nothing_else(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A version that is not published: exit 1 and one line from each, and export's `-p fp16` says
    nothing about the fp32 it would have exported for a version it will not export."""
    pytest.importorskip("torch", reason="the training extra is not installed")
    from tests.conftest import manifest_fields

    repo = ModelRepository(tmp_path)
    with repo.new_version("spam", **manifest_fields()) as draft:
        (draft.path / "weights.txt").write_text("w")
    where = ("-s", "spam", "-v", "9", "-r", str(tmp_path))
    for args in (["promote"], ["evaluate", "--split", "test"], ["export"], ["export", "-p", "fp16"]):
        with caplog.at_level(logging.INFO):
            result = _invoke(*args, *where)
        assert result.exit_code == EXIT_RUNTIME, (args, result.output)
        _assert_one_error_line(result.stderr, "scenario 'spam' has no version 9 (published: [1])")
        assert result.stdout == ""
        assert "fp32 too" not in caplog.text, args
    assert repo.list_versions("spam") == [1]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("body,label\nhello,a\n", "missing column 'text' (columns: ['body', 'label'])"),
        ("text,label\n", "has no non-empty text in its 'text' column: nothing to measure"),
        ("text,label\n,a\n", "has no non-empty text in its 'text' column: nothing to measure"),
        ("", "is empty: expected a CSV whose header names a 'text' column"),
        (("texts.jsonl", '{"text": "hi"}\n'), "export-bench reads a CSV (.csv) with a 'text' column"),
    ],
)
def test_export_bench_data_without_texts_is_bad_input(
    tmp_path: Path, content: str | tuple[str, str], says: str
) -> None:
    """A CSV without a text column failed with exit 1; one with no texts printed a table of 0.0 seq/s and
    exited 0; an empty one said '(columns: None)', and a JSON lines file was read as a CSV whose column was
    its first line. Each is refused (exit 2) naming the file, before the version is opened."""
    pytest.importorskip("onnxruntime")
    name, content = content if isinstance(content, tuple) else ("texts.csv", content)
    data = tmp_path / name
    data.write_text(content)
    (tmp_path / "repo").mkdir()
    result = _invoke("export-bench", "-s", "spam", "--data", str(data), "-r", str(tmp_path / "repo"))
    assert result.exit_code == EXIT_USAGE, result.output
    _assert_one_error_line(result.stderr, str(data), says)


def test_export_bench_rows_must_be_at_least_one(tmp_path: Path) -> None:
    data = tmp_path / "texts.csv"
    data.write_text("text\nhello\n")
    result = _invoke("export-bench", "-s", "spam", "--data", str(data), "--rows", "0")
    assert result.exit_code == EXIT_USAGE
    assert "--rows" in result.output and "Traceback" not in result.output


def test_export_bench_of_a_version_without_a_cpu_graph_fails_naming_the_export(tmp_path: Path) -> None:
    """A torch-only version (`--export none`) printed an empty table and exited 0."""
    pytest.importorskip("onnxruntime")
    from tests.conftest import manifest_fields

    repo = ModelRepository(tmp_path / "repo")
    with repo.new_version("spam", **manifest_fields()) as draft:
        (draft.path / "weights").mkdir()
        (draft.path / "weights" / "model.safetensors").write_bytes(b"weights")
    data = tmp_path / "texts.csv"
    data.write_text("text\nhello\n")
    result = _invoke("export-bench", "-s", "spam", "--data", str(data), "-r", str(tmp_path / "repo"))
    assert result.exit_code == EXIT_RUNTIME, result.output
    _assert_one_error_line(
        result.stderr,
        "spam v1 has no CPU ONNX graph to measure (its exports: none); run `labelwise export --scenario spam "
        "--version 1 -p fp32,int8`",
    )
