"""Local repository edges found in review: a numbered folder without its manifest (a torn mirror) is not a
version, a deleted version's number is never given again, a base.json that is not a JSON object is a
ManifestError, and a draft's absolute symlink is refused before it is published."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from model_repository import (
    BaseEncoderRef,
    ManifestError,
    ModelRepository,
    UnsafePathError,
    VersionNotFoundError,
)

from .test_repository import FIELDS, publish


def test_a_numbered_folder_without_its_manifest_is_not_a_version(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    publish(repo, "spam")
    publish(repo, "spam", b"two")
    torn = repo.version_path("spam", 3)
    (torn / "weights").mkdir(parents=True)  # a mirror copied while version 3 was half uploaded
    (torn / "weights" / "model.bin").write_bytes(b"half")
    (tmp_path / "repo" / "eggs" / "1").mkdir(parents=True)  # a scenario holding only such a folder

    assert repo.list_versions("spam") == [1, 2]
    assert repo.resolve("spam", "latest") == 2
    assert repo.list_scenarios() == ["spam"]
    assert publish(repo, "spam", b"four") == 4  # the torn number is not given again either


def test_a_deleted_versions_number_is_never_given_again(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    publish(repo, "spam")
    publish(repo, "spam", b"two")
    repo.set_alias("spam", "staging", 2)
    shutil.rmtree(repo.version_path("spam", 2))
    assert publish(repo, "spam", b"new") == 3
    assert repo.list_versions("spam") == [1, 3]
    # the alias left on the deleted number names no other model: it stays broken, and says so
    assert repo.resolve("spam", "staging") == 2
    with pytest.raises(VersionNotFoundError):
        repo.verify("spam", 2)


@pytest.mark.parametrize("content", [b"[]", b"[1]", b"\xff\xfe{", b"null"])
def test_a_base_json_that_is_not_an_object_is_a_manifest_error(tmp_path: Path, content: bytes) -> None:
    repo = ModelRepository(tmp_path / "repo")
    with repo.new_base("mini", "int8") as draft:
        (draft.path / "encoder.onnx").write_bytes(b"graph")
    version = publish(repo, "spam", base_encoder=BaseEncoderRef(key="mini", precisions=["int8"]))
    (repo.base_path("mini", "int8") / "base.json").write_bytes(content)
    with pytest.raises(ManifestError, match=r"base\.json is not"):
        repo.verify("spam", version)
    with pytest.raises(ManifestError, match=r"base\.json is not"):
        repo.base_info("mini", "int8")


def test_a_draft_with_an_absolute_symlink_publishes_nothing(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    publish(repo, "spam")
    refused = pytest.raises(UnsafePathError, match="absolute symlink")
    with refused, repo.new_version("spam", **FIELDS) as draft:
        (draft.path / "weights").mkdir()
        (draft.path / "weights" / "model.bin").write_bytes(b"two")
        os.symlink(draft.path / "weights" / "model.bin", draft.path / "alias.bin")
    assert repo.list_versions("spam") == [1]
    # a relative link moves with the folder and stays allowed
    with repo.new_version("spam", **FIELDS) as draft:
        (draft.path / "weights").mkdir()
        (draft.path / "weights" / "model.bin").write_bytes(b"three")
        os.symlink("weights/model.bin", draft.path / "alias.bin")
    assert repo.verify("spam", draft.version).version == draft.version


@pytest.mark.parametrize("root", ["", "  "])
def test_an_empty_repository_root_is_refused_not_taken_for_the_current_folder(root: str) -> None:
    from model_repository import UsageError

    with pytest.raises(UsageError, match="empty string"):
        ModelRepository(root)


def test_a_version_folder_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    outside = ModelRepository(tmp_path / "elsewhere")
    publish(outside, "spam")
    publish(outside, "spam", b"two")  # its manifest says spam v2, as the link's name does
    repo = ModelRepository(tmp_path / "repo")
    publish(repo, "spam")
    os.symlink(outside.version_path("spam", 2), repo.version_path("spam", 2))
    with pytest.raises(UnsafePathError, match="is a symlink"):
        repo.verify("spam", 2)
    with pytest.raises(UnsafePathError):
        repo.set_alias("spam", "production", 2)


def test_a_full_disk_while_numbering_publishes_nothing_and_says_so(tmp_path: Path, monkeypatch) -> None:
    """The number is recorded before the version is renamed into place: an error there publishes nothing
    (an error after the rename would report a failure for a version that was published)."""
    import model_repository.repository as repository

    repo = ModelRepository(tmp_path / "repo")
    publish(repo, "spam")

    def full(path: Path, payload: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(repository, "_write_json_atomic", full)
    with pytest.raises(OSError, match="No space"):
        publish(repo, "spam", b"two")
    assert repo.list_versions("spam") == [1]


def test_a_base_folder_without_its_base_json_is_replaced_by_the_next_writer(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    with repo.new_base("mini", "int8") as draft:
        (draft.path / "encoder.onnx").write_bytes(b"graph")
    (repo.base_path("mini", "int8") / "base.json").unlink()  # torn: the folder stays, its record is gone
    with repo.new_base("mini", "int8") as draft:
        (draft.path / "encoder.onnx").write_bytes(b"graph")
    assert draft.published
    assert repo.verify_base("mini", "int8")["key"] == "mini"
