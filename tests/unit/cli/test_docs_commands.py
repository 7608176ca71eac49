"""The docs' command lines against the CLI: every `labelwise ...` in README.md, docs/*.md and the chart's
README names a command that exists and only options that command takes, and every LABELWISE_* variable
they name is one the code reads. A renamed flag or variable fails here, not in a reader's terminal."""

from __future__ import annotations

import functools
import re
import shlex
from pathlib import Path

import pytest
import typer

from labelwise.cli import app
from serving.config import ServingConfig

ROOT = Path(__file__).resolve().parents[3]
# benchmarks.md and results.md are measurement logs: their command lines are what ran on the day.
DOCS = [
    ROOT / "README.md",
    ROOT / "helm" / "labelwise" / "README.md",
    *(p for p in sorted((ROOT / "docs").glob("*.md")) if p.name not in {"benchmarks.md", "results.md"}),
]
# The packages and files whose source may read a LABELWISE_* variable.
SOURCES = ["labelwise", "serving", "training", "model_repository", "loadtests", "deploy", "helm"]

_FENCE = re.compile(r"^\s*```\s*(\w*)")
_SHELL = {"bash", "sh", "shell", "console", "zsh"}
_INLINE = re.compile(r"`([^`\n]+)`")
_SEGMENT_END = {"|", "||", "&&", ";", "&", ">", ">>", "2>&1"}
_ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def _snippets(text: str) -> list[tuple[int, str]]:
    """(line number, shell text): each logical line of a shell block (`\\` continuations joined) and each
    inline code span; other blocks (diagrams, YAML, Python) are not shell."""
    found: list[tuple[int, str]] = []
    lines = text.splitlines()
    fence: str | None = None  # the open block's language
    i = 0
    while i < len(lines):
        if opened := _FENCE.match(lines[i]):
            fence = opened.group(1) if fence is None else None
        elif fence in _SHELL:
            start, line = i, lines[i]
            while line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i]
            found.append((start + 1, line))
        elif fence is None:
            found.extend((i + 1, span) for span in _INLINE.findall(lines[i]))
        i += 1
    return found


def _invocations(shell: str) -> list[list[str]]:
    """The argument lists of the `labelwise` commands a line of shell runs: a command that starts a
    segment (after `VAR=value` assignments), as `labelwise` or a venv's `.../bin/labelwise`."""
    try:
        tokens = shlex.split(shell, comments=True)
    except ValueError:  # an unclosed quote in prose
        tokens = shell.split()
    calls: list[list[str]] = []
    segment: list[str] = []
    for token in [*tokens, ";"]:
        if token not in _SEGMENT_END:
            segment.append(token)
            continue
        words = segment
        while words and (_ENV_ASSIGNMENT.match(words[0]) or words[0] in {"$", "sudo"}):
            words = words[1:]
        if words and (words[0] == "labelwise" or words[0].endswith("bin/labelwise")):
            calls.append(words[1:])
        segment = []
    return calls


@functools.cache
def _root_command() -> typer.core.TyperGroup:
    return typer.main.get_command(app)


def _problems(args: list[str]) -> list[str]:
    command = _root_command()
    path: list[str] = []
    words = list(args)
    while hasattr(command, "commands") and words and not words[0].startswith(("-", "[", "<")):
        name = words.pop(0)
        if name in ("...", "…"):
            return []
        if name not in command.commands:
            return [f"labelwise {' '.join([*path, name])}: no such command"]
        command = command.commands[name]
        path.append(name)
    known = {"--help"} | {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    problems = []
    for word in words:
        flag = word.lstrip("[(").rstrip("])").split("=")[0]
        if re.fullmatch(r"--?[A-Za-z][\w-]*", flag) and flag not in known:
            problems.append(f"labelwise {' '.join(path)}: no option {flag}")
    return problems


def _drift() -> list[str]:
    problems = []
    for doc in DOCS:
        for line_number, shell in _snippets(doc.read_text(encoding="utf-8")):
            for args in _invocations(shell):
                where = f"{doc.relative_to(ROOT)}:{line_number}"
                problems.extend(f"{where}: {problem}" for problem in _problems(args))
    return problems


def test_every_documented_command_line_names_real_commands_and_options() -> None:
    assert _drift() == []


def test_every_documented_labelwise_variable_is_read_by_the_code() -> None:
    # A ServingConfig field is read as LABELWISE_<FIELD> through its env prefix; the rest by name.
    fields = {f"LABELWISE_{name.upper()}" for name in ServingConfig.model_fields}
    source = (
        "\n".join(
            path.read_text(encoding="utf-8", errors="replace")
            for folder in SOURCES
            for path in (ROOT / folder).rglob("*")
            if path.suffix in {".py", ".yaml", ".tpl", ".sh"} and path.is_file()
        )
        + (ROOT / "Makefile").read_text()
        + (ROOT / "Dockerfile").read_text()
    )
    named = {
        (doc.relative_to(ROOT).as_posix(), variable)
        for doc in DOCS
        for variable in re.findall(r"\bLABELWISE_[A-Z0-9_]*[A-Z0-9]\b", doc.read_text(encoding="utf-8"))
    }
    unread = sorted(
        f"{doc}: {variable}"
        for doc, variable in named
        if variable not in fields and not re.search(rf"\b{variable}\b", source)
    )
    assert unread == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("```bash\nlabelwise train --scenario spam --strategy lora --alias production\n```", []),
        ("```\nlabelwise (CLI, client)\n   └─> training\n```", []),  # a diagram, not shell
        (
            "```bash\nlabelwise train --scenario spam \\\n  --epoch 2\n```",
            ["labelwise train: no option --epoch"],
        ),
        ("run `labelwise serve --adress ray://h:10001`", ["labelwise serve: no option --adress"]),
        (
            "```sh\nLABELWISE_REPOSITORY=s3://b/labelwise labelwise evalute -s spam\n```",
            ["labelwise evalute: no such command"],
        ),
        ("```console\n.venv/bin/labelwise repo list --json | head\n```", []),
        ("```console\n.venv/bin/labelwise repo lst\n```", ["labelwise repo lst: no such command"]),
        (
            "`labelwise doctor [--config serve.yaml]`, `labelwise export -s <scenario> -v <version> -p fp16`",
            [],
        ),
        # not a labelwise command: a namespace, a release, a bucket
        ("```bash\nkubectl get secret -n labelwise labelwise-api-key\nhelm test labelwise --logs\n```", []),
    ],
)
def test_the_check_reads_the_lines_a_reader_would_run(text: str, expected: list[str]) -> None:
    problems = [p for _, shell in _snippets(text) for args in _invocations(shell) for p in _problems(args)]
    assert problems == expected
