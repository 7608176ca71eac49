"""The object-store repository's local cache is bounded: after a version verifies, the scenario's cached
version folders beyond the `cache_keep` most recently verified (LABELWISE_REPOSITORY_CACHE_KEEP, 3) are
removed, safely when other processes of the node share the cache. Over the same real S3 API the
object-store tests use (moto's server on 127.0.0.1), not a mock of the store."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from model_repository import ModelRepository, ObjectStoreRepository, UsageError
from model_repository import object_repository as object_repository_module
from model_repository.object_repository import _discard
from tests.integration.test_object_store import (  # the moto server fixture, and cheap versions
    BUCKET,
    S3,
    _small_repo,
    _small_version,
    s3,  # noqa: F401
)

pytestmark = pytest.mark.timeout(120)

SCENARIO, OTHER = "spam", "eggs"
CACHE_KEEP_ENV = "LABELWISE_REPOSITORY_CACHE_KEEP"  # the documented name, spelled out


@pytest.fixture(scope="module", autouse=True)
def _fresh_moto() -> Iterator[None]:
    """moto keeps its buckets in this process, not in the server the fixture starts: test_object_store.py,
    whose `s3` fixture this module borrows, leaves its bucket behind, and `s3` would fail to create it
    again (or this module's, for that one). Reset as the server's POST /moto-api/reset does, before `s3`
    starts (autouse: set up first) and after it stopped."""
    pytest.importorskip("moto.server")
    from moto.moto_api._internal.models import moto_api_backend

    moto_api_backend.reset()
    yield
    moto_api_backend.reset()


def _numbered(folder: Path) -> set[int]:
    """The numbered version folders (not symlinks) of a cached scenario."""
    return {int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir() and not p.is_symlink()}


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def _count_downloads(monkeypatch: pytest.MonkeyPatch, repo: ObjectStoreRepository) -> list[str]:
    real, seen = repo.store.download, []

    def download(relative: str, local: Path) -> None:
        seen.append(relative)
        real(relative, local)

    monkeypatch.setattr(repo.store, "download", download)
    return seen


@pytest.fixture
def published(s3: S3, tmp_path: Path) -> str:  # noqa: F811
    """Five small versions of spam, one of eggs and one base, published from a cache of their own: a
    reader on another node downloads what it verifies. Returns the repository URL."""
    publisher = _small_repo(s3, tmp_path / "publisher", "prune")
    for n in range(1, 6):
        assert _small_version(publisher, SCENARIO, f"weights of v{n}".encode()) == n
    assert _small_version(publisher, OTHER) == 1
    with publisher.new_base("mini", "int8") as draft:
        (draft.path / "encoder.onnx").write_bytes(b"graph bytes")
    return f"s3://{BUCKET}/prune"


def _plant_neighbours(scenario_dir: Path, tmp_path: Path) -> dict[Path, bytes]:
    """What a scenario folder of the cache may hold besides version folders; none of it is a version."""
    scenario_dir.mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "outside-the-cache"
    (outside / "onnx").mkdir(parents=True)
    (outside / "onnx" / "model.fp32.onnx").write_bytes(b"not ours")
    planted = {
        scenario_dir / "_aliases" / "production.json": b'{"version": 1}',
        scenario_dir / "_claims" / "1": b"claim",
        scenario_dir / ".last-version": b"5",
        scenario_dir / ".tmp-0123456789abcdef0123456789abcdef" / "draft.bin": b"a publish in flight",
        scenario_dir / "notes" / "readme.txt": b"hand-made",
        scenario_dir / "9": b"a file named like a version",
        outside / "onnx" / "model.fp32.onnx": b"not ours",
    }
    for path, body in planted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    (scenario_dir / "8").symlink_to(outside, target_is_directory=True)  # a link named like a version
    return planted


def test_verify_keeps_only_the_most_recently_verified_versions(
    published: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reader = ObjectStoreRepository(published, cache_dir=tmp_path / "reader", cache_keep=2)
    assert reader.cache_keep == 2
    reader.verify(OTHER, 1)
    assert reader.verify_base("mini", "int8")["key"] == "mini"
    other_files = {p: p.read_bytes() for p in _files(reader.version_path(OTHER, 1))}
    base_files = {p: p.read_bytes() for p in _files(reader.base_path("mini"))}
    assert other_files and base_files
    scenario_dir = reader.scenario_path(SCENARIO)
    planted = _plant_neighbours(scenario_dir, tmp_path)

    files: dict[int, list[Path]] = {}
    with caplog.at_level(logging.INFO, logger="model_repository.object_repository"):
        for n in range(1, 6):
            assert reader.verify(SCENARIO, n).version == n
            files[n] = _files(reader.version_path(SCENARIO, n))
            assert files[n] and all(p.is_file() for p in files[n])
            assert _numbered(scenario_dir) == {max(n - 1, 1), n}

    assert _numbered(scenario_dir) == {4, 5}
    for n in (1, 2, 3):
        assert not reader.version_path(SCENARIO, n).exists()
        assert not any(p.exists() for p in files[n])
    for n in (4, 5):
        assert all(p.is_file() for p in files[n])
    assert "removed the local copies of v3" in caplog.text and CACHE_KEEP_ENV in caplog.text
    # nothing that is not a numbered version folder of spam was touched; no trash is left behind
    for path, body in planted.items():
        assert path.read_bytes() == body
    assert (scenario_dir / "8").is_symlink()
    assert {p.name for p in scenario_dir.iterdir() if p.name.startswith(".tmp-")} == {
        ".tmp-0123456789abcdef0123456789abcdef"
    }
    assert {p: p.read_bytes() for p in _files(reader.version_path(OTHER, 1))} == other_files
    assert {p: p.read_bytes() for p in _files(reader.base_path("mini"))} == base_files


def test_a_pruned_version_is_downloaded_again_and_recency_is_by_verify(
    published: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = ObjectStoreRepository(published, cache_dir=tmp_path / "reader", cache_keep=2)
    for n in range(1, 6):
        reader.verify(SCENARIO, n)
    scenario_dir = reader.scenario_path(SCENARIO)
    assert _numbered(scenario_dir) == {4, 5}

    # Another process of the node (a repository object of its own, the same cache): verifying 4 again
    # downloads nothing and makes it the most recently verified...
    again = ObjectStoreRepository(published, cache_dir=tmp_path / "reader", cache_keep=2)
    downloads = _count_downloads(monkeypatch, again)
    again.verify(SCENARIO, 4)
    assert downloads == []
    # ...so verifying the pruned 1 downloads it, checks it, and removes 5 (verified before 4), not 4.
    manifest = again.verify(SCENARIO, 1)
    assert sorted(downloads) == sorted(f"{SCENARIO}/1/{rel}" for rel in manifest.files)
    assert _numbered(scenario_dir) == {1, 4}
    assert (again.version_path(SCENARIO, 1) / "weights" / "model.bin").read_bytes() == b"weights of v1"


def test_a_copy_pruned_while_another_process_checks_it_is_fetched_again(
    published: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process prunes the copy between this one's download and its local check (the folder goes
    at once, renamed aside), or between two file calls of the check: fetched again once, verified."""
    reader = ObjectStoreRepository(published, cache_dir=tmp_path / "reader", cache_keep=2)
    downloads = _count_downloads(monkeypatch, reader)
    real_verify = reader.cache.verify
    for n, failure in ((1, None), (2, FileNotFoundError)):
        pruned: list[int] = []

        def pruned_under_it(scenario, version, *args, failure=failure, pruned=pruned, **kwargs):
            if not pruned:
                pruned.append(version)
                assert _discard(reader.version_path(scenario, version))
                if failure is not None:
                    raise failure(f"{reader.version_path(scenario, version)}/weights/model.bin")
            return real_verify(scenario, version, *args, **kwargs)

        monkeypatch.setattr(reader.cache, "verify", pruned_under_it)
        downloads.clear()
        manifest = reader.verify(SCENARIO, n)
        assert pruned == [n]
        assert len(downloads) == 2 * len(manifest.files)  # fetched twice
        assert (reader.version_path(SCENARIO, n) / "weights" / "model.bin").read_bytes() == (
            f"weights of v{n}".encode()
        )


def test_a_folder_another_process_pruned_first_and_a_failing_prune_do_not_fail_verify(
    published: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    reader = ObjectStoreRepository(published, cache_dir=tmp_path / "reader", cache_keep=1)
    reader.verify(SCENARIO, 1)
    reader.verify(SCENARIO, 2)
    scenario_dir = reader.scenario_path(SCENARIO)
    assert _numbered(scenario_dir) == {2}

    # another process removes 2 between this one's listing and its rename: skipped, nothing raised
    real_discard, raced = object_repository_module._discard, []

    def removed_first(folder: Path) -> bool:
        raced.append(folder.name)
        shutil.rmtree(folder)
        return real_discard(folder)

    monkeypatch.setattr(object_repository_module, "_discard", removed_first)
    assert reader.verify(SCENARIO, 3).version == 3
    assert raced == ["2"] and _numbered(scenario_dir) == {3}
    monkeypatch.setattr(object_repository_module, "_discard", real_discard)

    def broken(*args, **kwargs):
        raise PermissionError("read-only cache")

    monkeypatch.setattr(reader, "_prune_cache", broken)
    with caplog.at_level(logging.WARNING, logger="model_repository.object_repository"):
        assert reader.verify(SCENARIO, 4).version == 4
    assert "could not prune the local cache" in caplog.text and "read-only cache" in caplog.text
    assert _numbered(scenario_dir) == {3, 4}


@pytest.mark.parametrize(
    ("env", "param", "expected"),
    [
        (None, None, 3),
        ("", None, 3),
        ("0", None, 3),
        ("5", None, 5),
        (" 2 ", None, 2),
        ("5", 2, 2),  # the parameter wins
        ("abc", 1, 1),  # and the variable is not read then
        (None, 0, 3),
    ],
)
def test_cache_keep_comes_from_the_parameter_else_the_variable(
    s3: S3,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: str | None,
    param: int | None,
    expected: int,
) -> None:
    if env is None:
        monkeypatch.delenv(CACHE_KEEP_ENV, raising=False)
    else:
        monkeypatch.setenv(CACHE_KEEP_ENV, env)
    url = f"s3://{BUCKET}/keep"
    assert ObjectStoreRepository(url, cache_dir=tmp_path, cache_keep=param).cache_keep == expected
    if param is None:
        assert ModelRepository(url).cache_keep == expected


@pytest.mark.parametrize("env", ["abc", "-1", "1.5", "2x", "three"])
def test_a_bad_cache_keep_variable_is_refused_by_name_when_the_repository_opens(
    s3: S3,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: str,
) -> None:
    monkeypatch.setenv(CACHE_KEEP_ENV, env)
    for url in (f"s3://{BUCKET}/keep", "s3://no-such-bucket/keep"):  # before the store is asked
        with pytest.raises(UsageError, match=rf"{CACHE_KEEP_ENV}={env!r}.*whole number"):
            ObjectStoreRepository(url, cache_dir=tmp_path)
    with pytest.raises(UsageError, match=CACHE_KEEP_ENV):
        ModelRepository(f"s3://{BUCKET}/keep")
    assert os.environ[CACHE_KEEP_ENV] == env


@pytest.mark.parametrize("param", [-1, True, 1.5, "2"])
def test_a_bad_cache_keep_parameter_is_refused_by_name(s3: S3, tmp_path: Path, param) -> None:  # noqa: F811
    with pytest.raises(UsageError, match=r"cache_keep=.*whole number"):
        ObjectStoreRepository(f"s3://{BUCKET}/keep", cache_dir=tmp_path, cache_keep=param)
