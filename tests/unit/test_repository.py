"""The model repository contract: write-once versions, atomic aliases, verification."""

from __future__ import annotations

import json
import multiprocessing as mp
import re
from pathlib import Path

import pytest

from model_repository import (
    AliasNotFoundError,
    IntegrityError,
    InvalidNameError,
    ManifestError,
    ModelRepository,
    ScenarioNotFoundError,
    SchemaVersionError,
    VersionNotFoundError,
)
from tests.conftest import manifest_fields

FIELDS = manifest_fields()


def publish(repo: ModelRepository, scenario: str, payload: bytes = b"weights", **extra) -> int:
    with repo.new_version(scenario, **{**FIELDS, **extra}) as draft:
        (draft.path / "weights").mkdir()
        (draft.path / "weights" / "model.bin").write_bytes(payload)
        (draft.path / "labels.txt").write_text("negative\npositive\n")
    return draft.version


def test_publish_resolve_and_manifest(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    assert publish(repo, "spam") == 1
    assert publish(repo, "spam", b"better", parent_version=1) == 2
    assert repo.list_scenarios() == ["spam"]
    assert repo.list_versions("spam") == [1, 2]
    assert repo.resolve("spam", "latest") == 2
    assert repo.resolve("spam", 1) == 1
    manifest = repo.verify("spam", 2)
    assert manifest.parent_version == 1
    assert set(manifest.files) == {"weights/model.bin", "labels.txt"}
    assert manifest.files["weights/model.bin"].size_bytes == len(b"better")
    # no temporary folders are left behind
    assert sorted(p.name for p in (tmp_path / "spam").iterdir() if not p.name.startswith(".")) == ["1", "2"]
    assert (tmp_path / "spam" / ".last-version").read_text() == "2"  # the highest number ever given


def test_alias_switch(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    publish(repo, "spam")
    publish(repo, "spam")
    with pytest.raises(AliasNotFoundError, match="production"):
        repo.resolve("spam", "production")
    repo.set_alias("spam", "production", 1)
    repo.set_alias("spam", "staging", 2)
    assert repo.resolve("spam", "production") == 1
    repo.set_alias("spam", "production", 2)
    assert repo.aliases("spam") == {"production": 2, "staging": 2}
    with pytest.raises(VersionNotFoundError, match="version 7"):
        repo.set_alias("spam", "production", 7)


def test_failed_draft_publishes_nothing(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    with pytest.raises(RuntimeError), repo.new_version("spam", **FIELDS) as draft:
        (draft.path / "half.bin").write_bytes(b"x")
        raise RuntimeError("training interrupted")
    with pytest.raises(ScenarioNotFoundError, match="spam"):
        repo.list_versions("spam")
    assert [p.name for p in (tmp_path / "spam").iterdir()] == []


def test_invalid_manifest_fields_publish_nothing(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    with (
        pytest.raises(ManifestError, match="labels"),
        repo.new_version("spam", **{**FIELDS, "labels": ["a"]}),
    ):
        pass
    assert repo.list_scenarios() == []


@pytest.mark.parametrize(
    "name", ["../etc", "a/b", "..", "Spam", "", "white space", "-x", "x" * 65, "spam\n", "spam\r\n"]
)
def test_bad_names_rejected_before_writing(tmp_path: Path, name: str) -> None:
    repo = ModelRepository(tmp_path / "root")
    with pytest.raises(InvalidNameError, match="invalid scenario name"), repo.new_version(name, **FIELDS):
        pass
    with pytest.raises(InvalidNameError):
        repo.resolve(name, "production")
    assert not (tmp_path / "root").exists() or list((tmp_path / "root").iterdir()) == []


def test_only_ascii_digit_folders_are_versions(tmp_path: Path) -> None:
    """str.isdigit() takes superscripts ('2' raised) and other scripts' digits; a folder so named is not a
    version (int() would fail on one, or read another as 1)."""
    repo = ModelRepository(tmp_path)
    publish(repo, "spam")
    for odd in ("\u00b2", "\u0661", "\uff12"):  # superscript two, Arabic-Indic one, fullwidth two
        (repo.scenario_path("spam") / odd).mkdir()
    assert repo.list_versions("spam") == [1]
    assert repo.resolve("spam", "latest") == 1


def test_a_failed_alias_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import model_repository.repository as repository_module

    repo = ModelRepository(tmp_path)
    publish(repo, "spam")

    def disk_full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(repository_module.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        repo.set_alias("spam", "production", 1)
    monkeypatch.undo()
    assert [p.name for p in (repo.scenario_path("spam") / "_aliases").iterdir()] == []
    assert repo.aliases("spam") == {}


def test_bad_alias_names(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    publish(repo, "spam")
    with pytest.raises(InvalidNameError, match="alias"):
        repo.set_alias("spam", "../prod", 1)
    with pytest.raises(InvalidNameError, match="reserved"):
        repo.set_alias("spam", "latest", 1)


@pytest.mark.parametrize("body", [b"", b'{"version":"abc"}', b"null", b'{"version": 0}', b"\xff"])
def test_an_unreadable_alias_file_is_a_manifest_error_naming_it(tmp_path: Path, body: bytes) -> None:
    repo = ModelRepository(tmp_path)
    publish(repo, "spam")
    repo.set_alias("spam", "staging", 1)
    bad = tmp_path / "spam" / "_aliases" / "production.json"
    bad.write_bytes(body)
    for call in (lambda: repo.resolve("spam", "production"), lambda: repo.aliases("spam")):
        with pytest.raises(ManifestError, match=re.escape(str(bad))):
            call()
    assert repo.resolve("spam", "staging") == 1
    states = repo.read_aliases("spam")
    assert states["staging"] == 1 and isinstance(states["production"], ManifestError)
    with pytest.raises(AliasNotFoundError, match="production"):  # the known list still names it
        repo.resolve("spam", "canary")
    repo.set_alias("spam", "production", 1)  # an unreadable alias is overwritten
    assert repo.aliases("spam") == {"production": 1, "staging": 1}


def test_an_all_digit_alias_name_is_refused(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    publish(repo, "spam")
    with pytest.raises(InvalidNameError, match="all-digit"):
        repo.set_alias("spam", "2", 1)
    repo.set_alias("spam", "v2", 1)
    assert repo.aliases("spam") == {"v2": 1}


def test_unknown_scenario_and_version(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    with pytest.raises(ScenarioNotFoundError, match="'intent'"):
        repo.resolve("intent", "production")
    publish(repo, "spam")
    with pytest.raises(VersionNotFoundError, match="no version 3"):
        repo.resolve("spam", 3)
    with pytest.raises(VersionNotFoundError, match="no version 3"):
        repo.load_manifest("spam", 3)


def test_verify_detects_altered_truncated_and_missing_files(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    publish(repo, "spam", b"0123456789")
    weights = tmp_path / "spam" / "1" / "weights" / "model.bin"
    weights.write_bytes(b"0123456780")  # same size, different bytes
    with pytest.raises(IntegrityError, match=r"weights/model.bin.*sha256"):
        repo.verify("spam", 1)
    weights.write_bytes(b"01234")
    with pytest.raises(IntegrityError, match=r"weights/model.bin.*5 bytes"):
        repo.verify("spam", 1)
    weights.unlink()
    with pytest.raises(IntegrityError, match=r"weights/model.bin.*missing"):
        repo.verify("spam", 1)


def test_malformed_and_wrong_schema_manifest(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    publish(repo, "spam")
    path = tmp_path / "spam" / "1" / "manifest.json"
    good = json.loads(path.read_text())
    path.write_text(json.dumps({**good, "schema_version": 99}))
    with pytest.raises(SchemaVersionError, match="schema version 99"):
        repo.verify("spam", 1)
    path.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        repo.verify("spam", 1)
    bad = dict(good)
    del bad["labels"]
    path.write_text(json.dumps(bad))
    with pytest.raises(ManifestError, match="labels"):
        repo.verify("spam", 1)
    path.unlink()  # a folder without its manifest is no version: as resolve says of it
    with pytest.raises(
        VersionNotFoundError, match=r"no version 1 \(published: \[\]\); its folder .* has no manifest"
    ):
        repo.verify("spam", 1)


def _publisher(root: str, tag: int, queue: mp.Queue) -> None:
    repo = ModelRepository(root)
    versions = [publish(repo, "race", f"{tag}-{i}".encode() * 1000) for i in range(5)]
    queue.put((tag, versions))


def test_concurrent_publishers_get_distinct_whole_versions(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_publisher, args=(str(tmp_path), tag, queue)) for tag in range(3)]
    for proc in procs:
        proc.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    all_versions = sorted(v for vs in results.values() for v in vs)
    assert all_versions == list(range(1, 16))
    repo = ModelRepository(tmp_path)
    for tag, versions in results.items():
        for i, version in enumerate(versions):
            manifest = repo.verify("race", version)  # each version is whole and consistent
            assert (tmp_path / "race" / str(version) / "weights" / "model.bin").read_bytes() == (
                f"{tag}-{i}".encode() * 1000
            )
            assert manifest.version == version


def test_base_encoder_written_once(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    with repo.new_base("tiny-abc", "fp32", model_id="tiny") as first:
        (first.path / "encoder.onnx").write_bytes(b"graph-1")
    with repo.new_base("tiny-abc", "fp32", model_id="tiny") as second:
        (second.path / "encoder.onnx").write_bytes(b"graph-2")
    assert first.published and not second.published
    assert (repo.base_path("tiny-abc", "fp32") / "encoder.onnx").read_bytes() == b"graph-1"
    assert repo.verify_base("tiny-abc", "fp32")["info"]["model_id"] == "tiny"
    (repo.base_path("tiny-abc", "fp32") / "encoder.onnx").write_bytes(b"graph-X")
    with pytest.raises(IntegrityError, match=r"encoder\.onnx"):
        repo.verify_base("tiny-abc", "fp32")
