"""The object-store repository on S3 (moto in this process, no server): edges an operator meets."""

from __future__ import annotations

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
