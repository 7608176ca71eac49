"""Repository roots: which are local folders, which are object-store URLs, and what a bad one says."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from model_repository import (
    MissingStoragePackageError,
    ModelRepository,
    ObjectStoreError,
    UnsafePathError,
    is_object_store,
    parse_root,
)
from model_repository.storage import ObjectStore


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        ("s3://bucket/prefix/", "s3://bucket/prefix"),
        ("S3://bucket", "s3://bucket"),
        (Path("s3://bucket/prefix"), "s3://bucket/prefix"),  # pathlib collapsed it to s3:/bucket/prefix
        ("s3:/bucket/prefix", "s3://bucket/prefix"),  # str() of that Path (the CLI's --repository)
        ("gs://bucket/a/b", "gs://bucket/a/b"),
        # an empty `$PREFIX` in `s3://bucket/$PREFIX/repo`: read as --repository reads it (through pathlib)
        ("s3://bucket//repo", "s3://bucket/repo"),
        ("s3:///bucket/a//b///", "s3://bucket/a/b"),
        ("file:///srv/models", Path("/srv/models")),
        # percent-encoded, as Path.as_uri() writes it; it was read as the folder `/srv/my%20models%20%C3%A9`
        ("file:///srv/my%20models%20%C3%A9", Path("/srv/my models é")),
        (Path("file:///srv/my%20models"), Path("/srv/my models")),  # collapsed to file:/srv/... by pathlib
        # RFC 8089: the host localhost is this machine; it was read as the folder /localhost/srv/models
        ("file://localhost/srv/models", Path("/srv/models")),
        ("FILE://LocalHost/srv/my%20models", Path("/srv/my models")),
        ("var/model-repository", Path("var/model-repository")),
        (Path("/abs/repo"), Path("/abs/repo")),
    ],
)
def test_parse_root(root: str | Path, expected: str | Path) -> None:
    assert parse_root(root) == expected
    assert is_object_store(root) == isinstance(expected, str)


def test_a_url_without_a_bucket_is_refused() -> None:
    with pytest.raises(ObjectStoreError, match=r"names no bucket: use s3://BUCKET/PREFIX"):
        parse_root("s3://")


@pytest.mark.parametrize("url", ["file://fileserver/srv/models", "file://localhost:8000/srv/models"])
def test_a_file_url_naming_another_host_is_refused_as_usage(url: str) -> None:
    """It was read as the folder /fileserver/srv/models: a repository made (or said missing) there."""
    from typer.testing import CliRunner

    from labelwise.cli import app
    from model_repository import RepositoryURLError

    host = url.split("/")[2]
    with pytest.raises(
        RepositoryURLError, match=rf"names the host '{host}': a file:// root is a folder on this"
    ):
        parse_root(url)
    result = CliRunner().invoke(app, ["repo", "list", "-r", url])
    said = " ".join(result.output.replace("│", " ").split())  # typer's error box, unwrapped
    assert result.exit_code == 2 and f"names the host '{host}'" in said, result.output


def test_the_cli_reads_a_file_url_on_localhost_as_its_folder(tmp_path: Path) -> None:
    """--repository went through Path(), which made `file://localhost/x` into `file:/localhost/x`: the
    folder /localhost/x, said not to exist."""
    from typer.testing import CliRunner

    from labelwise.cli import app
    from tests.unit.test_repository_alias_mends import publish_servable

    publish_servable(ModelRepository(tmp_path), "spam")
    result = CliRunner().invoke(app, ["repo", "list", "--json", "-r", f"file://localhost{tmp_path}"])
    assert result.exit_code == 0 and '"spam"' in result.output, result.output


def test_local_roots_stay_local_repositories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = ModelRepository(f"file://{tmp_path}")
    assert type(repo) is ModelRepository and repo.root == tmp_path
    monkeypatch.setenv("LABELWISE_REPOSITORY", str(tmp_path / "env-root"))
    assert ModelRepository().root == tmp_path / "env-root"


def test_an_unknown_scheme_and_a_missing_package_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fsspec")
    with pytest.raises(ObjectStoreError, match=r"unknown repository URL scheme nosuch://"):
        ModelRepository("nosuch://bucket/repo")
    if importlib.util.find_spec("gcsfs") is None:
        monkeypatch.setenv("LABELWISE_REPOSITORY", "gs://bucket/repo")
        with pytest.raises(MissingStoragePackageError, match=r"'gcsfs'.*pip install gcsfs") as caught:
            ModelRepository()
        assert caught.value.exit_code == 2


def test_object_keys_never_leave_the_root() -> None:
    pytest.importorskip("s3fs")
    store = ObjectStore("s3://bucket/repo")  # no request is made until a call
    assert store.key("spam/1/manifest.json") == "bucket/repo/spam/1/manifest.json"
    for bad in ("../other/x", "spam/../../x", "/bucket/other", "a\\b"):
        with pytest.raises(UnsafePathError, match="leaves the repository root"):
            store.key(bad)
    with pytest.raises(UnsafePathError, match="outside the repository root"):
        store.relative("bucket/repository-2/spam/1/manifest.json")
