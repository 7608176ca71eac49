"""`make clean` removes what builds and runs made and keeps the published models; `make distclean` too."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _tree(root: Path) -> None:
    shutil.copy(REPO / "Makefile", root / "Makefile")
    for folder in (
        "var/model-repository/sentiment/1",
        "var/peers/infinity",
        "var/bench",
        ".venv/bin",
        "build",
    ):
        (root / folder).mkdir(parents=True)
    (root / "var/model-repository/sentiment/1/manifest.json").write_text("{}")
    (root / "var/model-repository/sentiment/aliases.json").write_text("{}")
    (root / "var/loose-file.json").write_text("{}")


def test_clean_keeps_the_model_repository(tmp_path: Path) -> None:
    _tree(tmp_path)
    subprocess.run(["make", "-s", "-C", str(tmp_path), "clean"], check=True, timeout=60)
    assert (tmp_path / "var/model-repository/sentiment/1/manifest.json").is_file()
    assert (tmp_path / "var/model-repository/sentiment/aliases.json").is_file()
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.iterdir())
    assert left == ["Makefile", "var"]
    assert sorted(p.name for p in (tmp_path / "var").iterdir()) == ["model-repository"]


def test_distclean_removes_var(tmp_path: Path) -> None:
    _tree(tmp_path)
    subprocess.run(["make", "-s", "-C", str(tmp_path), "distclean"], check=True, timeout=60)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Makefile"]
