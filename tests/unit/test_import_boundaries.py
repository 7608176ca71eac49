"""Imports run one way: training -> model_repository <- serving."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import importlib, pkgutil, sys
import {package}
for info in pkgutil.walk_packages({package}.__path__, "{package}."):
    importlib.import_module(info.name)
print(" ".join(sorted(m for m in {banned!r} if m in sys.modules)))
"""


@pytest.mark.parametrize(
    ("package", "banned"),
    [
        ("serving", ("torch", "peft", "training", "transformers")),
        ("training", ("ray",)),
        ("model_repository", ("torch", "ray", "serving", "training", "onnxruntime")),
    ],
)
def test_package_does_not_import(package: str, banned: tuple[str, ...]) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(package=package, banned=banned)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "", f"importing every module of {package} loaded: {out.stdout.strip()}"


def test_cli_starts_without_heavy_imports() -> None:
    probe = (
        "import sys, labelwise.cli; "
        "print(' '.join(m for m in ('torch', 'ray', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == ""
