"""`make install` refuses a Python older than pyproject's requires-python before pip runs, and says how
to go on, whether the venv is to be made or is already there."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")

# A Python 3.10 as the Makefile sees it: the version check fails, `-V` names it, every other call (venv,
# pip) is logged and succeeds without doing anything.
FAKE_PYTHON = """#!/bin/sh
echo "$@" >> "{log}"
case "$*" in
  *version_info*) exit 1 ;;
  -V) echo "Python 3.10.12"; exit 0 ;;
esac
exit 0
"""


def _project(root: Path) -> Path:
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy(REPO / name, root / name)
    fake = root / "python3.10"
    fake.write_text(FAKE_PYTHON.format(log=root / "calls.log"))
    fake.chmod(0o755)
    return fake


def _install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", "-C", str(root), "install", "GPU=0", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _calls(root: Path) -> str:
    log = root / "calls.log"
    return log.read_text() if log.exists() else ""


def test_an_old_python_is_refused_before_a_venv_is_made(tmp_path: Path) -> None:
    fake = _project(tmp_path)
    done = _install(tmp_path, f"PYTHON={fake}")
    assert done.returncode != 0
    assert "is not Python 3.11 or later (Python 3.10.12)" in done.stdout
    assert "make install PYTHON=python3.11" in done.stdout
    assert "-m venv" not in _calls(tmp_path) and "-m pip" not in _calls(tmp_path)
    assert not (tmp_path / ".venv").exists()


def test_a_venv_of_an_old_python_is_refused_with_how_to_replace_it(tmp_path: Path) -> None:
    fake = _project(tmp_path)
    (tmp_path / ".venv/bin").mkdir(parents=True)
    shutil.copy(fake, tmp_path / ".venv/bin/python")
    done = _install(tmp_path, "PYTHON=python3")  # a good PYTHON does not help while the old venv stays
    assert done.returncode != 0
    assert ".venv runs Python 3.10.12; labelwise needs Python 3.11 or later" in done.stdout
    assert "rm -rf .venv && make install PYTHON=python3.11" in done.stdout
    assert "-m pip" not in _calls(tmp_path)
    assert not (tmp_path / ".venv/.installed").exists()
