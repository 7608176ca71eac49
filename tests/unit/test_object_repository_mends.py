"""Object-store repository edges found in review, over fsspec's in-memory store: a cached copy whose marker
file rotted is fetched again, a copy another process renamed into place is checked by its own stamp, a
base.json must name the folder it is in, a conditional PUT that meets another in flight (409) is tried
again, and a version just published is promoted from the copy it was published from."""

from __future__ import annotations

import hashlib
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from model_repository import (
    IntegrityError,
    ManifestError,
    ObjectStoreError,
    ObjectStoreRepository,
)
from tests.conftest import manifest_fields

pytestmark = pytest.mark.timeout(60)

FIELDS = manifest_fields(max_length_tokens=16)


class Bucket:
    """A bucket of its own in the process-wide memory store, and a repository URL under it."""

    def __init__(self) -> None:
        import fsspec

        self.fs = fsspec.filesystem("memory")
        self.name = f"mends-{uuid.uuid4().hex[:12]}"
        self.url = f"memory://{self.name}/repo"
        self.fs.pipe_file(f"/{self.name}/.keep", b"")

    def repo(self, cache: Path) -> ObjectStoreRepository:
        return ObjectStoreRepository(self.url, cache_dir=cache)

    def path(self, key: str) -> str:
        return f"/{self.name}/repo/{key}"


@pytest.fixture
def bucket() -> Iterator[Bucket]:
    pytest.importorskip("fsspec")
    made = Bucket()
    try:
        yield made
    finally:
        made.fs.rm(f"/{made.name}", recursive=True)


def _publish(repo: ObjectStoreRepository, scenario: str, payload: bytes = b"weights") -> int:
    with repo.new_version(scenario, **FIELDS) as draft:
        (draft.path / "weights").mkdir()
        (draft.path / "weights" / "model.bin").write_bytes(payload)
    return draft.version


def _count_downloads(monkeypatch: pytest.MonkeyPatch, repo: ObjectStoreRepository) -> list[str]:
    real, seen = repo.store.download, []

    def download(relative: str, local: Path) -> None:
        seen.append(relative)
        real(relative, local)

    monkeypatch.setattr(repo.store, "download", download)
    return seen


# ---- 1. a cached copy that rotted on disk is fetched again ------------------------------------------
@pytest.mark.parametrize(
    "rot",
    [
        pytest.param(lambda folder: (folder / "manifest.json").write_bytes(b""), id="truncated-manifest"),
        pytest.param(
            lambda folder: (folder / "manifest.json").write_bytes(b'{"schema_version": 1}'),
            id="other-manifest",
        ),
        pytest.param(lambda folder: (folder / "stray.bin").write_bytes(b"x"), id="stray-file"),
    ],
)
def test_a_cached_copy_that_rotted_is_fetched_again(bucket: Bucket, tmp_path: Path, rot) -> None:
    """docs/artifacts.md: a cached copy that rots on disk is fetched again, its manifest.json included."""
    repo = bucket.repo(tmp_path / "cache")
    version = _publish(repo, "spam")
    repo.verify("spam", version)
    folder = repo.version_path("spam", version)
    rot(folder)
    assert repo.verify("spam", version).version == version
    assert (folder / "manifest.json").read_bytes() == bucket.fs.cat_file(
        bucket.path(f"spam/{version}/manifest.json")
    )
    assert not (folder / "stray.bin").exists()
    rot(folder)  # another replica of the node, with a repository object of its own, promotes it
    bucket.repo(tmp_path / "cache").set_alias("spam", "production", version)
    assert repo.resolve("spam", "production") == version


def test_a_marker_file_that_rots_while_it_is_checked_is_fetched_again(
    bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy found current, whose manifest.json / base.json then fails to parse in the local check
    (ManifestError, not an IntegrityError), is fetched again once; a base's copy as a version's."""
    repo = bucket.repo(tmp_path / "cache")
    with repo.new_base("mini", "int8") as draft:
        (draft.path / "encoder.onnx").write_bytes(b"graph bytes")
    version = _publish(repo, "spam")
    for name in ("verify", "verify_base"):
        real, rotted = getattr(repo.cache, name), []

        def rotting(*args, real=real, rotted=rotted, **kwargs):
            if not rotted:
                folder = repo.version_path("spam", version) if args[0] == "spam" else repo.base_path(*args)
                marker = folder / ("manifest.json" if args[0] == "spam" else "base.json")
                rotted.append(marker)
                marker.write_bytes(marker.read_bytes()[:10])
            return real(*args, **kwargs)

        monkeypatch.setattr(repo.cache, name, rotting)
    assert repo.verify_base("mini", "int8")["key"] == "mini"
    assert repo.verify("spam", version, bases=False).version == version
    assert (repo.version_path("spam", version) / "manifest.json").read_bytes() == bucket.fs.cat_file(
        bucket.path(f"spam/{version}/manifest.json")
    )


# ---- 2. a copy another process renamed into place first is checked, not stamped over -----------------
def test_a_copy_another_process_renamed_first_is_checked_by_its_own_stamp(
    bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_repo = bucket.repo(tmp_path / "old-cache")
    _publish(old_repo, "spam", b"OLD-bytes")
    old_repo.verify("spam", 1)
    old_copy = tmp_path / "old-copy"  # replica A's copy of v1, made from the objects of then
    shutil.copytree(old_repo.version_path("spam", 1), old_copy)
    # The bucket is re-created: spam v1 now holds other bytes.
    bucket.fs.rm(bucket.path("spam"), recursive=True)
    assert _publish(bucket.repo(tmp_path / "publisher-cache"), "spam", b"NEW-bytes!") == 1

    reader = bucket.repo(tmp_path / "cache")
    target = reader.version_path("spam", 1)
    real, raced = reader.store.download, []

    def download(relative: str, local: Path) -> None:
        real(relative, local)
        if not raced:  # replica A, still reading the old listing, renames its copy into place first
            raced.append(relative)
            shutil.copytree(old_copy, target)

    monkeypatch.setattr(reader.store, "download", download)
    manifest = reader.verify("spam", 1)
    assert raced
    assert (target / "weights" / "model.bin").read_bytes() == b"NEW-bytes!"
    assert manifest.files["weights/model.bin"].sha256 == hashlib.sha256(b"NEW-bytes!").hexdigest()

    # A copy that another process made from the same objects is kept as it is, stamp and all.
    current = tmp_path / "current-copy"
    shutil.copytree(target, current)
    shutil.rmtree(target)
    raced.clear()
    reader.verify("spam", 1)
    assert raced and (target / "weights" / "model.bin").read_bytes() == b"NEW-bytes!"
    inode = (target / "weights" / "model.bin").stat().st_ino
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in current.iterdir())
    reader.verify("spam", 1)
    assert (target / "weights" / "model.bin").stat().st_ino == inode


# ---- 3. base.json must name the folder it is in -------------------------------------------------------
@pytest.mark.parametrize(("key", "precision"), [("mini", "fp32"), ("other", "int8")])
def test_a_base_moved_to_another_folder_is_refused_before_it_is_cached(
    bucket: Bucket, tmp_path: Path, key: str, precision: str
) -> None:
    repo = bucket.repo(tmp_path / "publisher-cache")
    with repo.new_base("mini", "int8") as draft:
        (draft.path / "encoder.onnx").write_bytes(b"graph bytes")
    assert draft.published
    for name in ("encoder.onnx", "base.json"):  # the objects copied under another key or folder
        data = bucket.fs.cat_file(bucket.path(f"_bases/mini/int8/{name}"))
        bucket.fs.pipe_file(bucket.path(f"_bases/{key}/{precision}/{name}"), data)

    reader = bucket.repo(tmp_path / "cache")
    assert reader.verify_base("mini", "int8")["precision"] == "int8"
    where = re.escape(f"({bucket.url}/_bases/{key}/{precision})")
    said = rf"base {key} {precision} {where}: base.json says base 'mini' 'int8', not '{key}' '{precision}'"
    with pytest.raises(ManifestError, match=said):
        reader.verify_base(key, precision)
    assert not reader.base_path(key, precision).exists()


# ---- 4. a conditional PUT answered 409 ConditionalRequestConflict is tried again -------------------------
def _conflict() -> OSError:
    """What s3fs raises for AWS's 409 to a conditional PUT racing another (a plain OSError, EIO)."""
    from botocore.exceptions import ClientError
    from s3fs.errors import translate_boto_error

    error = ClientError(
        {
            "Error": {"Code": "ConditionalRequestConflict", "Message": "A conflicting operation occurred"},
            "ResponseMetadata": {"HTTPStatusCode": 409},
        },
        "PutObject",
    )
    return translate_boto_error(error)


def test_a_conditional_put_that_meets_another_in_flight_is_tried_again(
    bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("s3fs")
    repo = bucket.repo(tmp_path / "cache")
    real, conflicts = repo.store.fs.pipe_file, []
    then = {"other": None}  # what another writer's PUT leaves on the key when its conflict is answered

    def pipe_file(path, data, **kwargs):
        racing = path.endswith("/held") or (
            path.endswith(("/_claims/1", "/manifest.json")) and sum(c == path for c in conflicts) < 2
        )
        if kwargs.get("mode") == "create" and racing:  # claim and manifest: twice each; held: always
            conflicts.append(path)
            if then["other"] is not None and not bucket.fs.exists(path):
                real(path, then["other"])
            raise _conflict()
        return real(path, data, **kwargs)

    monkeypatch.setattr(repo.store.fs, "pipe_file", pipe_file)
    started = time.monotonic()
    assert _publish(repo, "spam") == 1  # claim and manifest each conflicted twice, then landed
    assert repo.list_versions("spam") == [1]
    assert len(conflicts) == 4 and time.monotonic() - started < 5

    # Conflicting every time: read back as after a 412, or refused by name when nothing is there.
    then["other"] = b"another writer's"
    assert repo.store.create_bytes("spam/held", b"ours") is False
    bucket.fs.rm(bucket.path("spam/held"))
    then["other"] = b"ours"
    assert repo.store.create_bytes("spam/held", b"ours") is True
    bucket.fs.rm(bucket.path("spam/held"))
    then["other"] = None
    with pytest.raises(ObjectStoreError, match=r"spam/held: .*409 ConditionalRequestConflict.*try again"):
        repo.store.create_bytes("spam/held", b"ours")
    assert time.monotonic() - started < 10


# ---- 5. a version just published is promoted from the copy it was published from ---------------------
def test_a_version_just_published_is_promoted_without_a_download(
    bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = bucket.repo(tmp_path / "cache")
    with repo.new_base("mini", "int8") as base:
        (base.path / "encoder.onnx").write_bytes(b"graph bytes")
    version = _publish(repo, "spam", b"x" * 1000)
    downloads = _count_downloads(monkeypatch, repo)
    repo.set_alias("spam", "production", version)  # what `publish --alias` does next
    repo.verify_base("mini", "int8")
    assert downloads == []
    assert repo.resolve("spam", "production") == version
    # The stamp is what a fresh reader's verify makes: a copy trusted by this one is trusted by it too.
    fresh = bucket.repo(tmp_path / "cache")
    fresh_downloads = _count_downloads(monkeypatch, fresh)
    fresh.verify("spam", version)
    assert fresh_downloads == []


def test_a_published_draft_is_not_cached_when_the_listing_differs(
    bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An object that appears under the version between the upload and the listing (another writer): the
    draft is not stamped as the store's copy; verify then refuses the version by the store's listing."""
    repo = bucket.repo(tmp_path / "cache")
    real = repo.store.create_bytes

    def create_bytes(relative: str, data: bytes) -> bool:
        made = real(relative, data)
        if relative.endswith("/manifest.json"):
            bucket.fs.pipe_file(bucket.path(relative.replace("manifest.json", "stray.bin")), b"x")
        return made

    monkeypatch.setattr(repo.store, "create_bytes", create_bytes)
    version = _publish(repo, "spam")
    assert not repo.version_path("spam", version).exists()


def test_an_object_deleted_after_the_listing_is_refused_by_a_fresh_reader(
    bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The publisher's own copy is trusted now (above): a reader with an empty cache still downloads, and
    an object gone since its listing is an IntegrityError with nothing cached."""
    version = _publish(bucket.repo(tmp_path / "publisher-cache"), "spam")
    reader = bucket.repo(tmp_path / "cache")
    real = reader.store.download

    def download(relative: str, local: Path) -> None:
        bucket.fs.rm(bucket.path(relative))
        real(relative, local)

    monkeypatch.setattr(reader.store, "download", download)
    with pytest.raises(IntegrityError, match=r"'weights/model\.bin' is missing"):
        reader.verify("spam", version)
    assert not reader.version_path("spam", version).exists()


def test_an_s3_store_gives_up_on_a_silent_endpoint_in_seconds_not_minutes() -> None:
    """s3fs's 5 tries x botocore's 5 x a 15 s read held `repo list` on an endpoint that accepts and never
    answers for 6 min 58 s (62 s with these settings, measured on 127.0.0.1)."""
    pytest.importorskip("s3fs")
    from model_repository.storage import S3_READ_TIMEOUT_S, _filesystem

    fs = _filesystem("s3")
    assert fs.retries * S3_READ_TIMEOUT_S <= 30
    assert fs.config_kwargs["read_timeout"] == S3_READ_TIMEOUT_S
    assert fs.config_kwargs["retries"] == {"max_attempts": 1}  # s3fs's own tries only


@pytest.mark.parametrize("value", ["10s", "nan", "-1", "inf"])
def test_a_bad_base_claim_wait_is_refused_by_name_when_the_repository_opens(
    bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """$LABELWISE_BASE_CLAIM_WAIT_S is read when a writer loses a base's claim, after its run trained: a
    value that is not a number of seconds is refused, by name, when the repository opens (it was a bare
    ValueError from float() then)."""
    from model_repository import UsageError

    monkeypatch.setenv("LABELWISE_BASE_CLAIM_WAIT_S", value)
    with pytest.raises(UsageError, match=re.escape(f"LABELWISE_BASE_CLAIM_WAIT_S={value!r}")):
        bucket.repo(tmp_path / "cache")
    monkeypatch.setenv("LABELWISE_BASE_CLAIM_WAIT_S", " 2.5 ")
    assert bucket.repo(tmp_path / "cache").root == bucket.url


def test_alias_objects_named_like_a_version_or_latest_are_not_aliases(bucket: Bucket, tmp_path: Path) -> None:
    """As on a local root: `_aliases/2.json` and `_aliases/latest.json` left from before such names were
    refused are not listed, do not shadow the version or the newest, and are named for verify."""
    repo = bucket.repo(tmp_path / "cache")
    _publish(repo, "spam"), _publish(repo, "spam")
    repo.set_alias("spam", "production", 1)
    for name in ("2", "latest"):
        bucket.fs.pipe_file(bucket.path(f"spam/_aliases/{name}.json"), b'{"version": 1}')
    assert repo.read_aliases("spam") == {"production": 1}
    assert repo.reserved_alias_files("spam") == ["2", "latest"]
    assert repo.resolve("spam", "2") == 2 and repo.resolve("spam", "latest") == 2
    before = repo.fingerprint("spam", 2, "latest")
    bucket.fs.pipe_file(bucket.path("spam/_aliases/latest.json"), b'{"version": 2}')
    assert repo.fingerprint("spam", 2, "latest") == before


# ---- 6. the local cache stays bounded while publishing ----------------------------------------------
def _cached_versions(repo: ObjectStoreRepository, scenario: str) -> list[int]:
    folder = repo.scenario_path(scenario)
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir())


def test_a_publisher_keeps_no_more_cached_versions_than_cache_keep(bucket: Bucket, tmp_path: Path) -> None:
    """A publish keeps its upload as the cached copy (above); a training machine publishing a version a
    day kept every one of them, cache_keep applying only to verify."""
    repo = ObjectStoreRepository(bucket.url, cache_dir=tmp_path / "cache", cache_keep=2)
    versions = [_publish(repo, "spam", f"weights of v{n}".encode()) for n in range(4)]
    assert _cached_versions(repo, "spam") == versions[-2:]


def test_a_cache_disk_with_room_for_cache_keep_versions_verifies_the_next(
    bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copies beyond cache_keep were removed only after the new version verified: its download needed
    room for cache_keep + 1 copies, and on a disk without it every verify failed on the full disk, the
    prune that would have made room never reached."""
    import errno

    size = 100_000
    publisher = bucket.repo(tmp_path / "publisher")
    versions = [_publish(publisher, "spam", bytes([n]) * size) for n in range(3)]
    reader = ObjectStoreRepository(bucket.url, cache_dir=tmp_path / "reader", cache_keep=2)
    real = reader.store.download

    def download(relative: str, local: Path) -> None:  # a disk with room for two copies (and manifests)
        used = sum(p.stat().st_size for p in reader.cache.root.rglob("*") if p.is_file())
        if used + size > 2.5 * size:
            raise OSError(errno.ENOSPC, "No space left on device", str(local))
        real(relative, local)

    monkeypatch.setattr(reader.store, "download", download)
    for version in versions:
        assert reader.verify("spam", version).version == version
    assert _cached_versions(reader, "spam") == versions[-2:]
