"""Flags a command would silently ignore are refused (exit 2, one `error:` line naming them and why):
`labelwise classify` with --url (or LABELWISE_URL) and an in-process flag (--repository, --version,
--threads), without one and --api-key or --concurrency; `labelwise evaluate --precision torch` (the
default) with an engine flag (--lora-mode, --threads, --max-batch-tokens). Only flags typed on the command
line are refused: LABELWISE_REPOSITORY or LABELWISE_API_KEY, exported for other commands too, are not.
No model is needed: the refusals come before any loading, and the runs that pass them stop at a fake."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labelwise import evaluation, file_scoring
from labelwise.cli import app
from model_repository import EXIT_USAGE

URL = "http://127.0.0.1:8699"
# The variables these commands read, unset unless a test sets one: the outer shell's must not leak in.
CLEAN_ENV: dict[str, str | None] = {
    "LABELWISE_URL": None,
    "LABELWISE_API_KEY": None,
    "LABELWISE_REPOSITORY": None,
    "COLUMNS": "200",
}


def _invoke(*args: str, **env: str) -> Any:
    return CliRunner().invoke(app, list(args), env={**CLEAN_ENV, **env})


def _refused(result: Any, *fragments: str) -> str:
    """The one `error:` line of a usage refusal, checked to hold each fragment."""
    assert result.exit_code == EXIT_USAGE, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    source = tmp_path / "in.csv"
    source.write_text("text\nhello\nworld\n")
    return source, tmp_path / "out.jsonl"


@pytest.fixture
def scorers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple, dict]]:
    """Records the scorer `classify` builds (class name and arguments) instead of scoring: nothing is
    loaded and no request is sent."""
    built: list[tuple[str, tuple, dict]] = []

    def recorder(name: str) -> Any:
        def build(*args: Any, **kwargs: Any) -> None:
            built.append((name, args, kwargs))

        return build

    def fake_score_file(
        input_path: Path, output_path: Path, scenario: str, make_scorer: Any, **_: Any
    ) -> Any:
        make_scorer()
        return file_scoring.ScoreSummary(str(input_path), str(output_path), scenario, 0, 0, 0.0)

    monkeypatch.setattr(file_scoring, "HttpScorer", recorder("HttpScorer"))
    monkeypatch.setattr(file_scoring, "EngineScorer", recorder("EngineScorer"))
    monkeypatch.setattr(file_scoring, "score_file", fake_score_file)
    return built


def _classify(files: tuple[Path, Path], *args: str, **env: str) -> Any:
    source, out = files
    return _invoke("classify", "--no-progress", "-s", "spam", "-i", str(source), "-o", str(out), *args, **env)


# ---- classify: in-process flags with --url ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "flags"),
    [
        (["--version", "3"], ["--version"]),
        (["-v", "production"], ["--version"]),  # the default's value, typed: still ignored
        (["--threads", "2"], ["--threads"]),
        (["-r", "var/model-repository"], ["--repository"]),
        (["-r", "some/repo", "-v", "2", "--threads", "1"], ["--repository, --version, --threads apply"]),
    ],
)
def test_classify_with_url_refuses_in_process_flags(
    files: tuple[Path, Path], scorers: list, args: list[str], flags: list[str]
) -> None:
    line = _refused(
        _classify(files, "--url", URL, *args), *flags, "in-process scoring only", f"--url {URL}", "drop --url"
    )
    assert scorers == [] and not files[1].exists(), line


def test_classify_version_with_url_says_which_version_the_server_answers_with(
    files: tuple[Path, Path], scorers: list
) -> None:
    """HttpScorer's requests carry no version: the server answers with the alias it serves."""
    _refused(
        _classify(files, "--url", URL, "-v", "3"),
        "--version applies to in-process scoring only",
        "requests name no version",
        "the alias in its config, production by default",
    )


def test_classify_with_labelwise_url_refuses_in_process_flags(
    files: tuple[Path, Path], scorers: list
) -> None:
    _refused(
        _classify(files, "--threads", "2", LABELWISE_URL=URL),
        "--threads applies to in-process scoring only",
        f"LABELWISE_URL={URL} set",
        "unset LABELWISE_URL",
    )
    assert scorers == []


# ---- classify: client flags without --url ----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "flags"),
    [
        (["--api-key", "k"], "--api-key applies"),
        (["--concurrency", "8"], "--concurrency applies"),
        (["--concurrency", "4"], "--concurrency applies"),  # the default's value, typed
        (["--api-key", "k", "--concurrency", "2"], "--api-key, --concurrency apply"),
    ],
)
def test_classify_without_url_refuses_client_flags(
    files: tuple[Path, Path], scorers: list, args: list[str], flags: str
) -> None:
    _refused(_classify(files, *args), flags, "(--url) only", "scored in this process", "add --url")
    assert scorers == [] and not files[1].exists()


# ---- classify: what is not refused -----------------------------------------------------------------


def test_classify_env_vars_of_the_other_mode_are_not_refused(files: tuple[Path, Path], scorers: list) -> None:
    """LABELWISE_REPOSITORY with --url, LABELWISE_API_KEY without: exported for other commands too."""
    through = _classify(files, "--url", URL, LABELWISE_REPOSITORY="elsewhere")
    assert through.exit_code == 0, through.output
    in_process = _classify(files, "--overwrite", LABELWISE_API_KEY="secret")
    assert in_process.exit_code == 0, in_process.output
    assert [name for name, _, _ in scorers] == ["HttpScorer", "EngineScorer"]
    assert scorers[1][1][0] is None  # LABELWISE_REPOSITORY was not set for the in-process run


def test_classify_passes_each_mode_its_own_flags(files: tuple[Path, Path], scorers: list) -> None:
    through = _classify(files, "--url", URL, "--api-key", "k", "--concurrency", "2", "--json")
    assert through.exit_code == 0, through.output
    assert json.loads(through.stdout)["rows_scored"] == 0
    in_process = _classify(files, "-r", "repo", "-v", "3", "--threads", "2", "--overwrite")
    assert in_process.exit_code == 0, in_process.output
    assert scorers == [
        ("HttpScorer", (URL, "spam"), {"api_key": "k", "concurrency": 2}),
        ("EngineScorer", (Path("repo"), "spam"), {"version": "3", "threads": 2}),
    ]


# ---- evaluate: engine flags with --precision torch -------------------------------------------------


@pytest.fixture
def evaluated(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Records what `evaluate` would score with instead of scoring (no model, no torch)."""
    calls: list[dict[str, Any]] = []

    def fake_evaluate_version(repository: Any, scenario: str, **kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        return {"scenario": scenario, **kwargs}

    monkeypatch.setattr(evaluation, "evaluate_version", fake_evaluate_version)
    return calls


@pytest.mark.parametrize(
    ("args", "flags"),
    [
        (["--lora-mode", "shared"], "--lora-mode applies"),
        (["--lora-mode", "merged"], "--lora-mode applies"),  # the default's value, typed
        (["--threads", "2"], "--threads applies"),
        (["--max-batch-tokens", "64"], "--max-batch-tokens applies"),
        (
            ["--lora-mode", "shared", "--threads", "2", "--max-batch-tokens", "64"],
            "--lora-mode, --threads, --max-batch-tokens apply",
        ),
    ],
)
@pytest.mark.parametrize("precision", [[], ["--precision", "torch"]], ids=["default", "explicit"])
def test_evaluate_torch_refuses_engine_flags(
    evaluated: list, tmp_path: Path, args: list[str], flags: str, precision: list[str]
) -> None:
    result = _invoke("evaluate", "-s", "spam", "--split", "test", "-r", str(tmp_path), *precision, *args)
    line = _refused(result, flags, "--precision fp32, int8 or fp16", "give --precision fp32|int8|fp16")
    assert ("--precision torch (the default)" in line) == (not precision), line
    assert evaluated == []


@pytest.mark.parametrize("precision", ["fp32", "int8", "fp16"])
def test_evaluate_engine_precisions_take_the_engine_flags(
    evaluated: list, tmp_path: Path, precision: str
) -> None:
    args = ["--precision", precision, "--lora-mode", "shared", "--threads", "2", "--max-batch-tokens", "64"]
    result = _invoke("evaluate", "-s", "spam", "--split", "test", "-r", str(tmp_path), "--json", *args)
    assert result.exit_code == 0, result.output
    assert len(evaluated) == 1
    assert {k: evaluated[0][k] for k in ("precision", "lora_mode", "threads", "max_batch_tokens")} == {
        "precision": precision,
        "lora_mode": "shared",
        "threads": 2,
        "max_batch_tokens": 64,
    }


def test_evaluate_torch_without_engine_flags_runs(evaluated: list, tmp_path: Path) -> None:
    result = _invoke("evaluate", "-s", "spam", "--split", "test", "-r", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    assert [call["precision"] for call in evaluated] == ["torch"]
