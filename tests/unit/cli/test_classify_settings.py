"""`labelwise classify` and `labelwise doctor`: wrong settings and wrong --url values, and servers that
answer something else than the labelwise API, end in one `error:` line, never in a traceback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labelwise.cli import app
from labelwise.errors import ClientError
from labelwise.file_scoring import HttpScorer, check_url
from model_repository import UsageError
from tests.conftest import http_stub


def _run(args: list[str], **env: str) -> Any:
    return CliRunner().invoke(app, args, env=env)


def _input(tmp_path: Path) -> Path:
    source = tmp_path / "in.csv"
    source.write_text("text\nhello\nworld\n")
    return source


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("127.0.0.1:8699", "no http:// or https://"),
        ("ftp://127.0.0.1:8699", "scheme 'ftp'"),
        ("http://127.0.0.1:notaport", "not a valid URL"),
        ("http://127.0.0.1:99999", "not a valid URL"),
        ("http://:8699", "no host"),
    ],
)
def test_a_bad_url_is_a_usage_error(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        check_url(url)
    out = tmp_path / "out.jsonl"
    result = _run(["classify", "-s", "s", "-i", str(_input(tmp_path)), "-o", str(out), "--url", url])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not out.exists()
    assert check_url("https://example.org:8443/prefix") == "https://example.org:8443/prefix"


def test_negative_threads_is_a_usage_error(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = _run(["classify", "-s", "s", "-i", str(_input(tmp_path)), "-o", str(out), "--threads", "-3"])
    assert result.exit_code == 2 and "--threads must be 0" in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("config", "env", "message"),
    [
        ("num_gpus: -1\n", {}, "num_gpus: Input should be greater than or equal to 0"),
        ("unknown_field: 3\n", {}, "unknown_field: Extra inputs are not permitted"),
        (None, {"LABELWISE_NUM_GPUS": "abc"}, "num_gpus: Input should be a valid number"),
    ],
)
def test_doctor_refuses_invalid_settings_in_one_line(
    tmp_path: Path, config: str | None, env: dict[str, str], message: str
) -> None:
    pytest.importorskip("onnxruntime")
    args = ["doctor", "--repository", str(tmp_path)]
    if config is not None:
        (tmp_path / "serve.yaml").write_text(config)
        args += ["--config", str(tmp_path / "serve.yaml")]
    result = _run(args, **env)
    assert result.exit_code == 2, result.output
    assert f"error: invalid serving settings: {message}" in result.output
    assert isinstance(result.exception, SystemExit)


@pytest.fixture
def server() -> Iterator[tuple[dict[str, str], str]]:
    """A server on 127.0.0.1 whose answers `mode["get"]` and `mode["post"]` pick."""
    mode = {"get": "ok", "post": "ok"}

    class Handler(BaseHTTPRequestHandler):
        def _send(self, body: str, ctype: str = "application/json") -> None:
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            answers = {"html": "<html>hi</html>", "empty": "{}", "ok": json.dumps({"scenarios": []})}
            self._send(answers[mode["get"]])

        def do_POST(self) -> None:
            texts = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["texts"]
            if mode["post"] == "html":
                return self._send("<html>hi</html>", "text/html")
            if mode["post"] == "no-results":
                return self._send(json.dumps({"ok": True}))
            n = len(texts) - (mode["post"] == "short")
            body = {"scenario": "s", "version": 1, "results": [[{"label": "a", "score": 0.9}]] * n}
            self._send(json.dumps({**body, "truncated": [False] * n}))

        def log_message(self, *args: Any) -> None:
            pass

    with http_stub(Handler) as url:
        yield mode, url


@pytest.mark.parametrize(
    ("get", "post", "message"),
    [
        ("html", "ok", "did not answer as a labelwise server: JSONDecodeError"),
        ("empty", "ok", "did not answer as a labelwise server: KeyError: 'scenarios'"),
        ("ok", "html", "did not answer as a labelwise server: JSONDecodeError"),
        ("ok", "no-results", "answered no `results` list for 2 texts"),
        ("ok", "short", "answered 1 results for 2 texts"),
    ],
)
def test_a_server_that_answers_something_else_is_a_client_error(
    server: tuple[dict[str, str], str], tmp_path: Path, get: str, post: str, message: str
) -> None:
    mode, url = server
    mode.update(get=get, post=post)
    scorer = HttpScorer(url, "s")
    with pytest.raises(ClientError, match=message):
        scorer.score(["one", "two"])
    scorer.close()
    out = tmp_path / "out.jsonl"
    args = ["classify", "-s", "s", "-i", str(_input(tmp_path)), "-o", str(out), "--url", url, "--no-progress"]
    result = _run(args)
    assert result.exit_code == 1 and message in result.output and isinstance(result.exception, SystemExit)
    assert not out.exists()


def test_doctor_refuses_a_repository_folder_that_does_not_exist(tmp_path: Path) -> None:
    """As `labelwise serve` refuses it: not a clean report of an empty repository."""
    pytest.importorskip("onnxruntime")
    result = _run(["doctor", "--repository", str(tmp_path / "typo")])
    assert result.exit_code == 2, result.output
    assert "does not exist" in result.output
    a_file = tmp_path / "repo.txt"
    a_file.write_text("")
    result = _run(["doctor", "--repository", str(a_file)])  # it said "no scenario in the repository"
    assert result.exit_code == 2, result.output
    assert f"repository {a_file} is a file, not a folder of scenarios" in result.output


def test_a_text_over_the_servers_character_limit_is_scored_from_its_start(tmp_path: Path) -> None:
    """In-process scoring reads a 20,001-character text (the model reads its first tokens); through a
    server whose limit is 20,000 characters it was a 422 that stopped the file there."""
    seen: list[list[str]] = []

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._send(
                200, {"scenarios": [], "limits": {"max_texts_per_request": 64, "max_chars_per_text": 10}}
            )

        def do_POST(self) -> None:
            texts = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["texts"]
            seen.append(texts)
            if any(len(t) > 10 for t in texts):
                error = {
                    "type": "invalid_request",
                    "message": "texts.1: too long",
                    "code": 422,
                    "field": "texts.1",
                }
                return self._send(422, {"error": error})
            results = [[{"label": "a", "score": 0.9}]] * len(texts)
            self._send(
                200, {"scenario": "s", "version": 1, "results": results, "truncated": [True] * len(texts)}
            )

        def log_message(self, *args: Any) -> None:
            pass

    with http_stub(Handler) as url:
        scorer = HttpScorer(url, "s")
        try:
            scored = scorer.score(["short", "x" * 50])
        finally:
            scorer.close()
    assert [s.label for s in scored] == ["a", "a"]
    assert seen == [["short", "x" * 10]]


def test_promote_says_new_for_a_new_alias_and_doctor_names_packages_plainly(tmp_path: Path) -> None:
    from model_repository import ModelRepository
    from tests.unit.test_repository_alias_mends import publish_servable as publish  # promote refuses others

    repo = ModelRepository(tmp_path / "repo")
    publish(repo, "spam")
    publish(repo, "spam", b"two")
    args = ["promote", "-s", "spam", "-a", "staging", "-r", str(repo.root)]
    first = _run([*args, "-v", "1"])
    assert first.exit_code == 0 and "spam: staging -> 1 (new)" in first.output, first.output
    second = _run([*args, "-v", "2"])
    assert "spam: staging 1 -> 2" in second.output
    pytest.importorskip("onnxruntime")
    doctor = _run(["doctor", "-r", str(repo.root)])
    assert "onnxruntime packages: onnxruntime " in doctor.output and "{" not in doctor.output.splitlines()[0]


def test_a_jsonl_input_that_starts_with_a_bom_is_read(tmp_path: Path) -> None:
    from labelwise.file_scoring import read_texts

    source = tmp_path / "in.jsonl"
    source.write_bytes('\ufeff{"text": "a"}\n{"text": "b"}\n'.encode())
    assert [t for t in read_texts(source, "text") if isinstance(t, str)] == ["a", "b"]


def test_in_process_scoring_names_a_repository_that_is_a_file(tmp_path: Path) -> None:
    """Not "does not exist": the path is there, it is just not a folder of scenarios."""
    pytest.importorskip("onnxruntime")
    not_a_folder = tmp_path / "repo.txt"
    not_a_folder.write_text("")
    out = tmp_path / "out.jsonl"
    args = ["classify", "-s", "s", "-i", str(_input(tmp_path)), "-o", str(out), "-r", str(not_a_folder)]
    result = _run([*args, "--no-progress"])
    assert result.exit_code == 2, result.output
    assert f"--repository {not_a_folder} is a file, not a folder of scenarios" in result.output


def test_an_input_without_rows_says_so_not_that_the_output_holds_every_row(tmp_path: Path) -> None:
    # No row to score: the scorer is never made, so an empty repository folder is enough.
    source = tmp_path / "in.csv"
    source.write_text("text\n")
    out = tmp_path / "out.jsonl"
    repo = tmp_path / "repo"
    repo.mkdir()
    args = ["classify", "-s", "toy", "-i", str(source), "-o", str(out), "-r", str(repo), "--no-progress"]
    result = _run(args)
    assert result.exit_code == 0, result.output
    assert f"{source} holds no rows" in result.output, result.output
    assert "already holds every row" not in result.output
    # A second run on the (empty) output it wrote says the same.
    again = _run(args)
    assert again.exit_code == 0 and f"{source} holds no rows" in again.output, again.output


def test_scoring_a_version_without_onnx_graphs_says_how_to_export_it(
    tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    # A version published with torch weights only (--export none), scored in-process by --version.
    pytest.importorskip("torch")
    from model_repository import ModelRepository
    from tests.integration import published
    from training import custom_scenario, make_train_config, train_and_publish

    repo = ModelRepository(tmp_path / "repo")
    mapping = published.SCENARIOS["topic_frozen"][1]
    data = published._write_data(tmp_path / "data", mapping, seed=1)
    config = make_train_config(
        custom_scenario("topic_frozen", list(mapping.values()), data, max_length_tokens=24),
        "frozen",
        base_model=str(tiny_roberta_dir),
        output_dir=tmp_path / "run",
        learning_rate=1e-2,
        seed=1,
        **published.TRAINING,
    )
    train_and_publish(config, repo, export_precisions=[])
    out = tmp_path / "out.jsonl"
    args = ["classify", "-s", "topic_frozen", "-i", str(_input(tmp_path)), "-o", str(out)]
    result = _run([*args, "-r", str(repo.root), "--version", "latest", "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "published without an ONNX export" in result.output, result.output
    assert "labelwise export --scenario topic_frozen --version 1" in result.output, result.output
    assert not out.exists()
