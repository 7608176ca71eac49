"""The object-store repository on S3 (moto in this process, no server): edges an operator meets."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from model_repository import ObjectStoreRepository
from tests.conftest import manifest_fields

from .s3_in_process import Bucket, s3_bucket_fixture  # noqa: F401 (the s3_bucket fixture)

pytestmark = pytest.mark.timeout(120)

FIELDS = manifest_fields(max_length_tokens=16)


def _publish(repo: ObjectStoreRepository, scenario: str, payload: bytes = b"weights") -> int:
    with repo.new_version(scenario, **FIELDS) as draft:
        (draft.path / "model.bin").write_bytes(payload)
    assert draft.version is not None
    return draft.version


def test_a_url_with_an_empty_path_segment_publishes_where_it_is_read(
    s3_bucket: Bucket, tmp_path: Path
) -> None:
    """`s3://bucket//repo` (an empty `$PREFIX`): its objects were keyed `/repo/...`, which no listing shows,
    so the version it published was never listed, verified nor served, even by the same URL."""
    doubled = f"s3://{s3_bucket.name}//repo"
    repo = ObjectStoreRepository(doubled, cache_dir=tmp_path / "a")
    version = _publish(repo, "spam")
    assert f"repo/spam/{version}/manifest.json" in s3_bucket.object_keys()
    for url in (doubled, s3_bucket.url("repo")):
        reader = ObjectStoreRepository(url, cache_dir=tmp_path / "b")
        assert reader.list_versions("spam") == [version]
        assert reader.verify("spam", version).version == version


def test_a_download_a_killed_process_left_in_the_cache_is_removed_once_stale(
    s3_bucket: Bucket, tmp_path: Path
) -> None:
    """A replica killed while it downloaded a version (OOM, a lost node) left `.tmp-<hex>` under the
    cache's scenario folder; replicas never publish, so nothing ever removed it: verify removes one untouched
    for STALE_DRAFT_S, as a publish does, and leaves a younger one (another process's download)."""
    import os

    from model_repository.repository import STALE_DRAFT_S

    version = _publish(ObjectStoreRepository(s3_bucket.url(), cache_dir=tmp_path / "publisher"), "spam")
    replica = ObjectStoreRepository(s3_bucket.url(), cache_dir=tmp_path / "cache")
    folder = replica.scenario_path("spam")
    stale, young = folder / f".tmp-{'a' * 32}", folder / f".tmp-{'b' * 32}"
    for left in (stale, young):
        (left / "weights").mkdir(parents=True)
        (left / "weights" / "model.bin").write_bytes(b"half a model")
    old = time.time() - STALE_DRAFT_S - 60
    for path in (stale / "weights" / "model.bin", stale / "weights", stale):
        os.utime(path, (old, old))
    assert replica.verify("spam", version).version == version
    assert not stale.exists() and young.is_dir()


def test_a_bucket_that_does_not_exist_is_refused_as_usage_naming_it(
    s3_bucket: Bucket, tmp_path: Path
) -> None:
    """`-r s3://no-such-bucket/repo` (a typo'd bucket) exited 1, where a local `-r /nope` exits 2."""
    from typer.testing import CliRunner

    from labelwise.cli import app
    from model_repository import EXIT_USAGE, RepositoryURLError

    url = f"s3://{s3_bucket.name}-missing/repo"
    said = f"cannot open the model repository {url}: bucket '{s3_bucket.name}-missing' does not exist"
    with pytest.raises(RepositoryURLError, match=said):
        ObjectStoreRepository(url, cache_dir=tmp_path)
    for command in (["repo", "list"], ["promote", "-s", "spam", "-v", "1"]):
        result = CliRunner().invoke(app, [*command, "-r", url])
        assert result.exit_code == EXIT_USAGE, (command, result.output)
        assert said in " ".join(result.output.split()) and "Traceback" not in result.output, result.output
