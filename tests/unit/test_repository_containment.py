"""Every path a manifest or base.json names stays inside its folder and carries a checksum.

Each escape is tried twice: through `new_version` (publish must refuse it and publish nothing), and as
a version written on disk by hand, the way an attacker or a buggy tool would (`verify`, which serving
calls before loading, and `set_alias` must refuse it, and the alias keeps its version).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from model_repository import IntegrityError, LabelwiseError, ModelRepository
from model_repository.errors import UnsafePathError
from tests.conftest import manifest_fields

GRAPH = "onnx/model.fp32.onnx"
FIELDS: dict[str, Any] = manifest_fields()
Escape = Callable[[Path, Path, dict[str, Any]], str]


def _entry(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}


def _export(path: str, size: int = 5) -> dict[str, Any]:
    return {"precision": "fp32", "path": path, "size_bytes": size}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A graph outside the repository: what every escape tries to get served."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"evil")
    (folder / "head.npz").write_bytes(b"evil-head")
    return folder


@pytest.fixture
def repo(tmp_path: Path) -> ModelRepository:
    """A repository whose spam v1 is good and is production."""
    repo = ModelRepository(tmp_path / "repo")
    with repo.new_version("spam", **FIELDS, exports=[_export(GRAPH)]) as draft:
        (draft.path / "onnx").mkdir()
        (draft.path / GRAPH).write_bytes(b"graph")
        (draft.path / "labels.txt").write_text("negative\npositive\n")
    repo.set_alias("spam", "production", 1)
    return repo


# ---- each escape, as a version crafted by hand: (folder, outside, manifest dict) -> the bad path --------
def _relative(folder: Path, outside: Path, m: dict[str, Any]) -> str:
    rel = "../../../outside/model.onnx"  # <repo>/spam/2/../../../ is the folder holding outside/
    m["exports"] = [_export(rel, 4)]
    m["files"][rel] = _entry(b"evil")  # listed and checksummed: being outside is what is wrong
    return rel


def _absolute(folder: Path, outside: Path, m: dict[str, Any]) -> str:
    path = str(outside / "model.onnx")
    m["exports"] = [_export(path, 4)]
    m["files"][path] = _entry(b"evil")
    return path


def _symlinked_file(folder: Path, outside: Path, m: dict[str, Any]) -> str:
    (folder / GRAPH).unlink()
    (folder / GRAPH).symlink_to(outside / "model.onnx")
    m["files"][GRAPH] = _entry(b"evil")  # the checksum matches today; the file outside can change
    return GRAPH


def _symlinked_folder(folder: Path, outside: Path, m: dict[str, Any]) -> str:
    shutil.rmtree(folder / "onnx")
    (folder / "onnx").symlink_to(outside)
    m["exports"] = [_export("onnx/model.onnx", 4)]
    m["files"] = {"onnx/model.onnx": _entry(b"evil")}
    return "onnx"


def _not_checksummed(folder: Path, outside: Path, m: dict[str, Any]) -> str:
    (folder / "onnx" / "model.int8.onnx").write_bytes(b"unchecked")
    m["exports"] = [_export("onnx/model.int8.onnx", 9)]
    return "onnx/model.int8.onnx"


def _head_outside(folder: Path, outside: Path, m: dict[str, Any]) -> str:
    rel = "../../../outside/head.npz"
    m["head"] = {"kind": "linear", "path": rel}
    return rel


def _unlisted_file(folder: Path, outside: Path, m: dict[str, Any]) -> str:
    (folder / "lora.npz").write_bytes(b"read by a fixed name")  # serving opens it without a manifest field
    return "lora.npz"


CRAFTED = {
    "relative": _relative,
    "absolute": _absolute,
    "symlinked_file": _symlinked_file,
    "symlinked_folder": _symlinked_folder,
    "export_not_in_files": _not_checksummed,
    "head_outside": _head_outside,
    "unlisted_file": _unlisted_file,
}


def _craft(repo: ModelRepository, outside: Path, escape: Escape) -> str:
    """Write spam v2 by hand: v1's files and manifest, bent by escape. Return the path it names."""
    folder = repo.version_path("spam", 2)
    shutil.copytree(repo.version_path("spam", 1), folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = 2
    bad = escape(folder, outside, manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return bad


@pytest.mark.parametrize("escape", CRAFTED.values(), ids=CRAFTED.keys())
def test_crafted_version_is_refused_by_verify_and_set_alias(
    repo: ModelRepository, outside: Path, escape: Escape
) -> None:
    bad = _craft(repo, outside, escape)
    message = rf"spam v2: .*{re.escape(bad)}"
    with pytest.raises(UnsafePathError, match=message):
        repo.verify("spam", 2)
    with pytest.raises(UnsafePathError, match=message):
        repo.set_alias("spam", "production", 2)
    with pytest.raises(UnsafePathError) as refused:
        repo.verify("spam", 2)
    assert str(refused.value).count(repr(bad)) <= 1, refused.value  # the path named once, not twice
    assert repo.resolve("spam", "production") == 1  # the version already serving stays
    assert repo.verify("spam", 1).version == 1
    assert issubclass(UnsafePathError, IntegrityError) and issubclass(UnsafePathError, LabelwiseError)


# ---- each escape, through publish: nothing is published and no draft is left -------------------------
def _publish_relative(draft: Any, outside: Path) -> str:
    draft.fields["exports"] = [_export("../../../outside/model.onnx", 4)]
    return "../../../outside/model.onnx"


def _publish_absolute(draft: Any, outside: Path) -> str:
    draft.fields["exports"] = [_export(str(outside / "model.onnx"), 4)]
    return str(outside / "model.onnx")


def _publish_symlinked_file(draft: Any, outside: Path) -> str:
    (draft.path / "onnx").mkdir()
    (draft.path / GRAPH).symlink_to(outside / "model.onnx")
    draft.fields["exports"] = [_export(GRAPH, 4)]
    return GRAPH


def _publish_symlinked_folder(draft: Any, outside: Path) -> str:
    (draft.path / "onnx").symlink_to(outside)
    draft.fields["exports"] = [_export("onnx/model.onnx", 4)]
    return "onnx"


def _publish_not_in_files(draft: Any, outside: Path) -> str:
    draft.fields["exports"] = [_export(GRAPH)]  # the draft never wrote the graph: no checksum covers it
    return GRAPH


def _publish_head_outside(draft: Any, outside: Path) -> str:
    draft.fields["head"] = {"kind": "linear", "path": str(outside / "head.npz")}
    return str(outside / "head.npz")


PUBLISHED = {
    "relative": _publish_relative,
    "absolute": _publish_absolute,
    "symlinked_file": _publish_symlinked_file,
    "symlinked_folder": _publish_symlinked_folder,
    "export_not_in_files": _publish_not_in_files,
    "head_outside": _publish_head_outside,
}


@pytest.mark.parametrize("escape", PUBLISHED.values(), ids=PUBLISHED.keys())
def test_publish_refuses_and_publishes_nothing(
    repo: ModelRepository, outside: Path, escape: Callable[[Any, Path], str]
) -> None:
    named = []
    with (
        pytest.raises(UnsafePathError, match=r"spam .*draft, nothing published") as caught,
        repo.new_version("spam", **FIELDS) as draft,
    ):
        (draft.path / "labels.txt").write_text("negative\npositive\n")
        named.append(escape(draft, outside))
    assert named[0] in str(caught.value)
    assert repo.list_versions("spam") == [1]
    assert [p.name for p in repo.scenario_path("spam").iterdir() if p.name.startswith(".tmp-")] == []
    assert (outside / "model.onnx").read_bytes() == b"evil"  # nothing outside was touched


def test_a_normal_version_publishes_verifies_and_aliases(repo: ModelRepository) -> None:
    with repo.new_version("spam", **FIELDS, exports=[_export(GRAPH)]) as draft:
        (draft.path / "onnx").mkdir()
        (draft.path / GRAPH).write_bytes(b"graph")
        (draft.path / "head.npz").write_bytes(b"head")
        (draft.path / "onnx" / "current.onnx").symlink_to("model.fp32.onnx")  # inside: allowed
        draft.fields["head"] = {"kind": "linear", "path": "head.npz"}
    assert draft.version == 2
    manifest = repo.verify("spam", 2)
    assert set(manifest.files) == {GRAPH, "onnx/current.onnx", "head.npz"}
    repo.set_alias("spam", "production", 2)
    assert repo.resolve("spam", "production") == 2


# ---- shared bases under _bases/ -----------------------------------------------------------------------
def test_new_base_refuses_a_symlink_out(repo: ModelRepository, outside: Path) -> None:
    with (
        pytest.raises(UnsafePathError, match=r"base tiny-abc fp32 .*'encoder\.onnx' is a symlink"),
        repo.new_base("tiny-abc", "fp32") as draft,
    ):
        (draft.path / "encoder.onnx").symlink_to(outside / "model.onnx")
    assert not repo.has_base("tiny-abc", "fp32")
    assert not draft.published


def _base_escape_key(folder: Path, outside: Path, info: dict[str, Any]) -> str:
    info["files"]["../../../../outside/model.onnx"] = _entry(b"evil")
    return "../../../../outside/model.onnx"


def _base_symlink(folder: Path, outside: Path, info: dict[str, Any]) -> str:
    (folder / "encoder.onnx").unlink()
    (folder / "encoder.onnx").symlink_to(outside / "model.onnx")
    info["files"]["encoder.onnx"] = _entry(b"evil")
    return "encoder.onnx"


def _base_unlisted(folder: Path, outside: Path, info: dict[str, Any]) -> str:
    del info["files"]["encoder.onnx"]  # serving opens encoder.onnx by its fixed name
    return "encoder.onnx"


BASES = {"escaping_key": _base_escape_key, "symlink": _base_symlink, "unlisted": _base_unlisted}


@pytest.mark.parametrize("escape", BASES.values(), ids=BASES.keys())
def test_crafted_base_is_refused_and_so_are_its_versions(
    repo: ModelRepository, outside: Path, escape: Escape
) -> None:
    with repo.new_base("tiny-abc", "fp32") as base:
        (base.path / "encoder.onnx").write_bytes(b"graph")
    fields = {**FIELDS, "strategy": "frozen", "base_encoder": {"key": "tiny-abc", "precisions": ["fp32"]}}
    with repo.new_version("spam", **fields) as draft:
        (draft.path / "head.npz").write_bytes(b"head")
        draft.fields["head"] = {"kind": "linear", "path": "head.npz"}
    assert repo.verify("spam", draft.version)  # good until the base is bent by hand
    folder = repo.base_path("tiny-abc", "fp32")
    info = json.loads((folder / "base.json").read_text())
    bad = escape(folder, outside, info)
    (folder / "base.json").write_text(json.dumps(info))
    message = rf"base tiny-abc fp32: .*{re.escape(bad)}"
    with pytest.raises(UnsafePathError, match=message):
        repo.verify_base("tiny-abc", "fp32")
    with pytest.raises(UnsafePathError, match=message):
        repo.verify("spam", draft.version)
    with pytest.raises(UnsafePathError, match=message):
        repo.set_alias("spam", "production", draft.version)
    assert repo.resolve("spam", "production") == 1


def test_a_base_folder_that_leaves_the_base_is_refused(repo: ModelRepository) -> None:
    """manifest.base_encoder.folders names a folder under _bases/<key>/: a path is refused at parse time."""
    from pydantic import ValidationError

    from model_repository.manifest import BaseEncoderRef

    with pytest.raises(ValidationError, match="folders"):
        BaseEncoderRef(key="tiny-abc", precisions=["int8"], folders={"int8": "../../outside"})
    assert BaseEncoderRef(
        key="tiny-abc", precisions=["int8"], folders={"int8": "all-int8"}
    ).graph_folders() == ["all-int8"]
