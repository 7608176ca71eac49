"""One checksum helper: model_repository.identity (hashlib.file_digest) is the only code that hashes files."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from model_repository.identity import file_sha256

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("labelwise", "loadtests", "model_repository", "serving", "training")
HELPER = Path("model_repository/identity.py")


def _hashes_file_bytes(function: ast.AST) -> bool:
    """A function that touches hashlib and also opens or reads a file: a checksum of its own."""
    names = {n.id for n in ast.walk(function) if isinstance(n, ast.Name)}
    calls = {
        n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
        for n in ast.walk(function)
        if isinstance(n, ast.Call)
    }
    return "hashlib" in names and bool(calls & {"open", "read_bytes", "file_digest"})


def test_no_package_hashes_files_its_own_way() -> None:
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if rel == HELPER:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _hashes_file_bytes(node):
                    offenders.append(f"{rel}:{node.name}")
    assert offenders == [], f"use model_repository.identity.file_sha256 instead: {offenders}"


def test_the_check_would_catch_a_home_made_checksum() -> None:
    code = (
        "def digest(p):\n    import hashlib\n"
        "    with open(p, 'rb') as f:\n        return hashlib.sha256(f.read())\n"
    )
    assert _hashes_file_bytes(ast.parse(code).body[0])
    assert not _hashes_file_bytes(ast.parse("def key(u):\n    return hashlib.sha256(u.encode())\n").body[0])


def test_the_helper_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 5000  # over one read buffer
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
