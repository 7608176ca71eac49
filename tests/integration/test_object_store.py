"""The model repository in S3: a real S3 API (moto's server on 127.0.0.1), the real training + export
pipeline publishing into it, the CLI reading it, and a real Ray Serve app serving from it.

Credentials and endpoint reach every process (this one, the CLI, the Ray replicas) through the standard
AWS variables only, as they would in production.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from model_repository import (
    AliasNotFoundError,
    BaseEncoderRef,
    IntegrityError,
    InvalidNameError,
    ManifestError,
    MissingStoragePackageError,
    ModelRepository,
    ObjectStoreError,
    ObjectStoreRepository,
    RepositoryError,
    ScenarioNotFoundError,
    UnsafePathError,
    VersionNotFoundError,
    file_sha256,
)
from tests.conftest import manifest_fields

from .published import Reference, publish

pytestmark = pytest.mark.integration

BUCKET = "labelwise-test"
ROOT = f"s3://{BUCKET}/repo"
FULL, FROZEN = "sentiment_full", "topic_frozen"
TEXTS = ["The film was great today.", "My order was awful again.", "ok"]
APP_NAME = "labelwise-s3"
PREFIX = "/s3"
# Where botocore would otherwise look for credentials: files in $HOME, and the EC2 metadata endpoint
# (off 127.0.0.1, so never asked here).
NO_AMBIENT = {"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"}


@dataclass
class S3:
    endpoint: str
    env: dict[str, str]
    fs: object  # an s3fs filesystem of the test's own, to look at and bend the bucket's objects

    def keys(self, prefix: str) -> list[str]:
        return sorted(p.split(f"{BUCKET}/repo/", 1)[1] for p in self.fs.find(f"{BUCKET}/repo/{prefix}"))

    def read_json(self, key: str) -> dict:
        return json.loads(self.fs.cat_file(f"{BUCKET}/repo/{key}"))


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    import fsspec

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "labelwise-test",
        "AWS_SECRET_ACCESS_KEY": "labelwise-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "LABELWISE_REPOSITORY_CACHE": str(tmp_path_factory.mktemp("s3-cache")),
        **NO_AMBIENT,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        fs = fsspec.filesystem("s3", skip_instance_cache=True, use_listings_cache=False)
        fs.mkdir(BUCKET)
        yield S3(env["AWS_ENDPOINT_URL"], env, fs)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@dataclass
class S3App:
    s3: S3
    repo: ModelRepository
    client: httpx.Client
    tiny_dir: Path
    work_dir: Path
    references: dict[tuple[str, int], Reference]

    def wait_for(self, predicate, timeout_s: float, what: str):
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")

    def served_version(self, scenario: str) -> int | None:
        try:
            rows = self.client.get("/v1/scenarios").json()["scenarios"]
        except (httpx.HTTPError, KeyError, ValueError):
            return None
        return next((row.get("version") for row in rows if row["name"] == scenario), None)

    def check_answers(self, scenario: str, version: int) -> None:
        reference = self.references[(scenario, version)]
        expected = reference.probs(TEXTS)
        answer = self.client.post("/v1/classify", json={"scenario": scenario, "texts": TEXTS})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["version"] == version
        for row, probs in zip(body["results"], expected, strict=True):
            got = {item["label"]: item["score"] for item in row}
            np.testing.assert_allclose([got[label] for label in reference.labels], probs, atol=1e-4)


@pytest.fixture(scope="module")
def s3_app(s3: S3, tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3App]:
    pytest.importorskip("ray.serve")
    import ray
    from ray import serve

    from serving.app import build_app
    from serving.local_ray import start_local_ray, stop_local_ray

    from .conftest import _free_port

    if ray.is_initialized():
        # Replicas get the AWS variables from the environment Ray started with; a Ray started before
        # this module set them would run replicas without credentials.
        pytest.skip("a Ray instance started before the S3 variables were set is running in this session")
    repo = ModelRepository(ROOT)
    work = tmp_path_factory.mktemp("s3-runs")
    refs = {}
    for seed, name in enumerate([FULL, FROZEN], start=41):
        refs[(name, 1)] = publish(repo, name, tiny_roberta_dir, work, seed)
        repo.set_alias(name, "production", 1)
    port = _free_port()
    start_local_ray(port=port, num_cpus=2)
    app = build_app(
        {
            "repository": ROOT,
            "scenarios": [{"name": FULL}, {"name": FROZEN}],
            "max_batch_size": 32,
            "batch_wait_timeout_s": 0.05,
            "reload_poll_interval_s": 0.25,
            "num_cpus": 1,
        }
    )
    serve.run(app, name=APP_NAME, route_prefix=PREFIX, blocking=False)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}{PREFIX}", timeout=30)
    served = S3App(s3, repo, client, tiny_roberta_dir, work, refs)
    try:
        served.wait_for(
            lambda: served.served_version(FULL) == 1 and served.served_version(FROZEN) == 1,
            180,
            "both scenarios to load from S3",
        )
        yield served
    finally:
        client.close()
        serve.delete(APP_NAME)
        stop_local_ray()


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labelwise.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


# ---- the repository contract on S3 ------------------------------------------------------------------
def test_publish_writes_claim_files_then_manifest_and_a_fresh_reader_verifies_it(
    s3_app: S3App, tmp_path: Path
) -> None:
    keys = s3_app.s3.keys(FULL)
    assert f"{FULL}/_claims/1" in keys and f"{FULL}/1/manifest.json" in keys
    assert s3_app.s3.read_json(f"{FULL}/_aliases/production.json") == {"version": 1}
    manifest = s3_app.s3.read_json(f"{FULL}/1/manifest.json")
    # every object of the version is the manifest or a file it checksums, and nothing else
    assert {k.split("/", 2)[2] for k in keys if k.startswith(f"{FULL}/1/")} == {
        "manifest.json",
        *manifest["files"],
    }
    assert any(k.startswith("_bases/") and k.endswith("/base.json") for k in s3_app.s3.keys("_bases"))

    # another machine: nothing cached, the same URL
    reader = ObjectStoreRepository(ROOT, cache_dir=tmp_path / "cache")
    assert reader.list_scenarios() == sorted([FULL, FROZEN])
    assert reader.list_versions(FULL) == [1] and reader.aliases(FULL) == {"production": 1}
    assert reader.resolve(FROZEN, "production") == 1
    assert not reader.version_path(FULL, 1).exists()  # not downloaded until verified
    verified = reader.verify(FROZEN, 1)
    folder = reader.version_path(FROZEN, 1)
    assert folder.is_relative_to(tmp_path / "cache")
    for rel, entry in verified.files.items():
        assert file_sha256(folder / rel) == entry.sha256
    base = verified.base_encoder
    assert base is not None and (reader.base_path(base.key, base.precisions[0]) / "base.json").is_file()

    # bases=False (what `labelwise export` asks before it rebuilds a base): the version alone
    alone = ObjectStoreRepository(ROOT, cache_dir=tmp_path / "cache-alone")
    assert alone.verify(FROZEN, 1, bases=False).files == verified.files
    assert not (alone.base_path(base.key, base.precisions[0]) / "base.json").exists()


def test_cli_lists_verifies_and_promotes_through_the_aws_variables(s3_app: S3App) -> None:
    env = {"LABELWISE_REPOSITORY": ROOT}
    listed = _cli(env, "repo", "list")
    assert listed.returncode == 0, listed.stderr
    assert FULL in listed.stdout and FROZEN in listed.stdout
    verified = _cli(env, "repo", "verify", FULL, "1")
    assert verified.returncode == 0, verified.stderr
    promoted = _cli(env, "promote", "--scenario", FULL, "--version", "1", "--alias", "staging")
    assert promoted.returncode == 0, promoted.stderr
    assert s3_app.s3.read_json(f"{FULL}/_aliases/staging.json") == {"version": 1}
    missing = _cli(env, "promote", "--scenario", FULL, "--version", "7", "--alias", "staging")
    assert missing.returncode == 1 and "version 7" in missing.stderr
    assert s3_app.s3.read_json(f"{FULL}/_aliases/staging.json") == {"version": 1}


def test_classify_scores_a_file_in_process_from_the_bucket(s3_app: S3App, tmp_path: Path) -> None:
    """`labelwise classify -r s3://...` loads the scenario from the store as `labelwise serve` does (it
    took every root for a local folder and refused the URL as a folder that does not exist)."""
    source, out = tmp_path / "in.csv", tmp_path / "out.jsonl"
    source.write_text("text\n" + "".join(f"{t}\n" for t in TEXTS), encoding="utf-8")
    done = _cli({}, "classify", "-s", FULL, "-i", str(source), "-o", str(out), "-r", ROOT, "--no-progress")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    reference = s3_app.references[(FULL, 1)]
    for row, probs in zip(rows, reference.probs(TEXTS), strict=True):
        assert row["version"] == 1 and row["label"] == reference.labels[int(probs.argmax())]
        assert row["score"] == pytest.approx(float(probs.max()), abs=1e-4)
    assert len(rows) == len(TEXTS)


# ---- serving from S3 ---------------------------------------------------------------------------------
def test_replicas_serve_the_published_versions_from_s3(s3_app: S3App) -> None:
    s3_app.check_answers(FULL, 1)
    s3_app.check_answers(FROZEN, 1)


def test_a_torn_publish_is_never_listed_resolved_nor_served(s3_app: S3App) -> None:
    """What a publisher killed before its marker leaves: a claim and files, no manifest.json."""
    fs, base = s3_app.s3.fs, f"{BUCKET}/repo/{FULL}"
    torn = max(s3_app.repo.list_versions(FULL)) + 1
    fs.pipe_file(f"{base}/_claims/{torn}", b"{}")
    fs.copy(f"{base}/1/onnx", f"{base}/{torn}/onnx", recursive=True)
    assert s3_app.s3.keys(f"{FULL}/{torn}/")  # the files are there
    assert torn not in s3_app.repo.list_versions(FULL)
    assert s3_app.repo.resolve(FULL, "latest") != torn
    with pytest.raises(VersionNotFoundError, match=f"no version {torn}"):
        s3_app.repo.set_alias(FULL, "production", torn)
    # a buggy tool points the alias at it anyway: the replicas refuse it, v1 keeps answering
    fs.pipe_file(f"{base}/_aliases/production.json", json.dumps({"version": torn}).encode())
    try:
        s3_app.wait_for(
            lambda: f"names v{torn}, which is not published" in _last_error(s3_app, FULL),
            30,
            "the alias on the torn version to be refused",
        )
        assert s3_app.served_version(FULL) == 1
        s3_app.check_answers(FULL, 1)
    finally:
        s3_app.repo.set_alias(FULL, "production", 1)
    # the next publish skips the torn number rather than mixing its files with the old ones
    refs = publish(s3_app.repo, FULL, s3_app.tiny_dir, s3_app.work_dir, seed=52)
    version = s3_app.repo.list_versions(FULL)[-1]
    assert version == torn + 1
    s3_app.references[(FULL, version)] = refs


def _last_error(app: S3App, scenario: str) -> str:
    rows = app.client.get("/v1/scenarios").json()["scenarios"]
    row = next(r for r in rows if r["name"] == scenario)
    return str(row.get("last_error") or row.get("error") or "")


def test_an_alias_switch_in_s3_is_picked_up_by_the_poller(s3_app: S3App) -> None:
    latest = s3_app.repo.list_versions(FULL)[-1]
    if (FULL, latest) not in s3_app.references or latest == 1:
        s3_app.references[(FULL, latest + 1)] = publish(
            s3_app.repo, FULL, s3_app.tiny_dir, s3_app.work_dir, seed=53
        )
        latest += 1
    assert s3_app.served_version(FULL) == 1  # published is not promoted
    s3_app.repo.set_alias(FULL, "production", latest)
    s3_app.wait_for(lambda: s3_app.served_version(FULL) == latest, 60, f"v{latest} to serve")
    s3_app.check_answers(FULL, latest)
    s3_app.check_answers(FROZEN, 1)


# ---- bad input ---------------------------------------------------------------------------------------
def _bent_copy(s3: S3, repo: ModelRepository, version: int, bend) -> None:
    """Copy v1 of FULL to `version` by hand and bend its manifest (what an attacker or a buggy tool does)."""
    base = f"{BUCKET}/repo/{FULL}"
    s3.fs.copy(f"{base}/1", f"{base}/{version}", recursive=True)
    manifest = s3.read_json(f"{FULL}/1/manifest.json")
    manifest["version"] = version
    bend(manifest, f"{base}/{version}")
    s3.fs.pipe_file(f"{base}/{version}/manifest.json", json.dumps(manifest).encode())


def _escape_relative(m: dict, prefix: str) -> str:
    rel = "../1/onnx/model.fp32.onnx"
    m["exports"][0]["path"] = rel
    m["files"][rel] = m["files"]["onnx/model.fp32.onnx"]
    return rel


def _escape_absolute(m: dict, prefix: str) -> str:
    rel = f"/{BUCKET}/repo/{FULL}/1/onnx/model.fp32.onnx"
    m["exports"][0]["path"] = rel
    m["files"][rel] = m["files"]["onnx/model.fp32.onnx"]
    return rel


def _unlisted_object(m: dict, prefix: str) -> str:
    import fsspec

    fsspec.filesystem("s3", skip_instance_cache=True).pipe_file(f"{prefix}/lora.npz", b"unchecked")
    return "lora.npz"


def _export_not_in_files(m: dict, prefix: str) -> str:
    del m["files"]["onnx/model.fp32.onnx"]
    return "onnx/model.fp32.onnx"


ESCAPES = {
    "relative": _escape_relative,
    "absolute": _escape_absolute,
    "unlisted_object": _unlisted_object,
    "export_not_in_files": _export_not_in_files,
}


@pytest.mark.parametrize("bend", ESCAPES.values(), ids=ESCAPES.keys())
def test_a_crafted_version_in_s3_is_refused_and_nothing_lands_in_the_cache(
    s3: S3, s3_app: S3App, bend, tmp_path: Path
) -> None:
    version = 100 + list(ESCAPES.values()).index(bend)
    bad: list[str] = []
    _bent_copy(s3, s3_app.repo, version, lambda m, prefix: bad.append(bend(m, prefix)))
    reader = ObjectStoreRepository(ROOT, cache_dir=tmp_path / "cache")
    with pytest.raises(UnsafePathError, match=rf"{FULL} v{version}: .*{re.escape(bad[0])}"):
        reader.verify(FULL, version)
    with pytest.raises(UnsafePathError):
        reader.set_alias(FULL, "production", version)
    assert not reader.version_path(FULL, version).exists()
    assert reader.resolve(FULL, "production") == s3_app.repo.resolve(FULL, "production")


def test_a_corrupted_object_is_refused_before_it_is_cached(s3: S3, s3_app: S3App, tmp_path: Path) -> None:
    version = 120
    _bent_copy(s3, s3_app.repo, version, lambda m, prefix: None)
    graph = f"{BUCKET}/repo/{FULL}/{version}/onnx/model.fp32.onnx"
    data = bytearray(s3.fs.cat_file(graph))
    data[-1] ^= 0xFF  # same size, other bytes
    s3.fs.pipe_file(graph, bytes(data))
    reader = ObjectStoreRepository(ROOT, cache_dir=tmp_path / "cache")
    with pytest.raises(IntegrityError, match=r"'onnx/model\.fp32\.onnx' does not match its sha256"):
        reader.verify(FULL, version)
    assert not reader.version_path(FULL, version).exists()


def test_a_scheme_without_its_package_names_the_package(s3: S3) -> None:
    pytest.importorskip("fsspec")
    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed here")
    with pytest.raises(MissingStoragePackageError, match=r"gs:// .*'gcsfs'.*pip install gcsfs"):
        ModelRepository("gs://some-bucket/repo")
    result = _cli({"LABELWISE_REPOSITORY": "gs://some-bucket/repo"}, "repo", "list")
    assert result.returncode == 2
    assert "gcsfs" in result.stderr and "Traceback" not in result.stderr


def test_missing_credentials_are_refused_when_the_repository_opens(
    s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import ValidationError

    from serving.config import ServingConfig

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(
        ObjectStoreError, match=r"no credentials for the model repository s3://.*AWS_ACCESS_KEY_ID"
    ):
        ModelRepository(ROOT)
    with pytest.raises(ValidationError, match=r"repository\n.*no credentials"):
        ServingConfig(repository=ROOT)
    result = _cli({"LABELWISE_REPOSITORY": ROOT}, "repo", "list")
    assert result.returncode == 1 and "no credentials" in result.stderr and "Traceback" not in result.stderr


def test_a_missing_bucket_is_named(s3: S3) -> None:
    with pytest.raises(ObjectStoreError, match=r"bucket 'no-such-bucket' does not exist"):
        ModelRepository("s3://no-such-bucket/repo")


def test_a_writer_that_lost_a_base_claim_waits_for_the_winners_base_or_refuses(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version must never be sealed reading a base whose base.json is not there: the loser of the
    base's claim waits for the winner's, and a claim whose writer died while uploading is refused by
    name (its base would otherwise never come, and every version on it would be refused)."""
    import threading

    repo = ObjectStoreRepository(ROOT, cache_dir=tmp_path / "cache")

    def draft_base(key: str) -> bool:
        with repo.new_base(key, "int8", note="test") as draft:
            (draft.path / "encoder.onnx").write_bytes(b"graph bytes")
        return draft.published

    # A claim with no base.json behind it, and no writer left to finish it: refused, nothing uploaded.
    monkeypatch.setenv("LABELWISE_BASE_CLAIM_WAIT_S", "0.5")
    s3.fs.pipe(f"{BUCKET}/repo/_bases/stale-claim/_claims/int8", b"{}")
    with pytest.raises(RepositoryError, match=re.escape("did not appear within 0.5 s")):
        draft_base("stale-claim")
    assert not repo.has_base("stale-claim", "int8")
    assert s3.keys("_bases/stale-claim") == ["_bases/stale-claim/_claims/int8"]

    # The winner finishes while the loser waits: the loser keeps theirs.
    monkeypatch.setenv("LABELWISE_BASE_CLAIM_WAIT_S", "30")
    s3.fs.pipe(f"{BUCKET}/repo/_bases/slow-winner/_claims/int8", b"{}")
    finish = threading.Timer(
        0.5, lambda: s3.fs.pipe(f"{BUCKET}/repo/_bases/slow-winner/int8/base.json", b"{}")
    )
    finish.start()
    try:
        assert draft_base("slow-winner") is False
    finally:
        finish.join()
    assert repo.has_base("slow-winner", "int8")


# ---- small versions written straight through the repository API (no training) -----------------------
FIELDS = manifest_fields(strategy="frozen", max_length_tokens=16)


def _small_repo(s3: S3, tmp_path: Path, prefix: str) -> ObjectStoreRepository:
    """A fresh repository under its own prefix of the test bucket."""
    s3.fs.rm(f"{BUCKET}/{prefix}", recursive=True) if s3.fs.exists(f"{BUCKET}/{prefix}") else None
    return ObjectStoreRepository(f"s3://{BUCKET}/{prefix}", cache_dir=tmp_path / "cache")


def _small_version(repo: ModelRepository, scenario: str, payload: bytes = b"weights", **extra) -> int:
    with repo.new_version(scenario, **{**FIELDS, **extra}) as draft:
        (draft.path / "weights").mkdir()
        (draft.path / "weights" / "model.bin").write_bytes(payload)
        (draft.path / "labels.txt").write_text("negative\npositive\n")
    return draft.version


@pytest.mark.parametrize("body", [b"", b'{"version":"abc"}'])
def test_an_unreadable_alias_in_s3_is_named_listed_and_overwritten(
    s3: S3, tmp_path: Path, body: bytes
) -> None:
    from labelwise import catalog
    from tests.unit.test_repository_alias_mends import publish_servable  # promote refuses others

    repo = _small_repo(s3, tmp_path, "bad-alias")
    publish_servable(repo, "spam")
    publish_servable(repo, "spam")
    repo.set_alias("spam", "staging", 1)
    s3.fs.pipe(f"{BUCKET}/bad-alias/spam/_aliases/production.json", body)
    with pytest.raises(
        ManifestError, match=re.escape(f"s3://{BUCKET}/bad-alias/spam/_aliases/production.json")
    ):
        repo.resolve("spam", "production")
    (row,) = catalog.list_scenarios(repo)
    assert row.aliases == {"production": "unreadable", "staging": 1}
    assert catalog.promote(repo, "spam", 2, alias="staging") == 1  # the bad alias is not read
    assert catalog.promote(repo, "spam", 2) == catalog.UNREADABLE  # and it is overwritten
    assert repo.aliases("spam") == {"production": 2, "staging": 2}
    with pytest.raises(InvalidNameError, match="all-digit"):
        repo.set_alias("spam", "2", 1)


def _losing_responses(monkeypatch: pytest.MonkeyPatch, repo: ObjectStoreRepository, suffix: str) -> list[str]:
    """Conditional PUTs of keys ending in suffix land, but their response is lost: the client retries,
    and the retry meets the object the first try wrote (412, FileExistsError)."""
    real, lost = repo.store.fs.pipe_file, []

    def pipe_file(path, data, **kwargs):
        real(path, data, **kwargs)
        if kwargs.get("mode") == "create" and path.endswith(suffix):
            lost.append(path)
            real(path, data, **kwargs)  # the retry: raises FileExistsError

    monkeypatch.setattr(repo.store.fs, "pipe_file", pipe_file)
    return lost


def test_a_conditional_write_whose_response_was_lost_is_the_writers_own(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = _small_repo(s3, tmp_path, "lost-response")
    lost = _losing_responses(monkeypatch, repo, "/manifest.json")
    assert _small_version(repo, "spam") == 1
    assert lost and repo.list_versions("spam") == [1]

    monkeypatch.setenv("LABELWISE_BASE_CLAIM_WAIT_S", "0.5")
    lost = _losing_responses(monkeypatch, repo, "/_claims/int8")
    with repo.new_base("mini", "int8") as draft:
        (draft.path / "encoder.onnx").write_bytes(b"graph bytes")
    assert lost and draft.published and repo.has_base("mini", "int8")
    # Another writer's object is still another writer's.
    assert repo.store.create_bytes("_bases/mini/_claims/int8", b"someone else") is False


def test_a_refused_version_is_retried_on_s3_after_the_same_promotion_or_a_restored_base(
    s3: S3, tmp_path: Path
) -> None:
    import time

    repo = _small_repo(s3, tmp_path, "fingerprint")
    with repo.new_base("mini", "int8") as draft:
        (draft.path / "encoder.onnx").write_bytes(b"graph bytes")
    base = BaseEncoderRef(key="mini", precisions=["int8"])
    _small_version(repo, "spam", base_encoder=base)
    repo.set_alias("spam", "production", 1)
    before = repo.fingerprint("spam", 1, "production")
    time.sleep(1.1)  # LastModified has a one-second resolution
    repo.set_alias("spam", "production", 1)  # the same bytes, the same ETag
    promoted = repo.fingerprint("spam", 1, "production")
    assert promoted != before
    # The base is moved away, then restored: the version it was refused for is tried again.
    info = s3.fs.cat_file(f"{BUCKET}/fingerprint/_bases/mini/int8/base.json")
    s3.fs.rm(f"{BUCKET}/fingerprint/_bases/mini/int8/base.json")
    gone = repo.fingerprint("spam", 1, "production")
    assert gone != promoted
    s3.fs.pipe(f"{BUCKET}/fingerprint/_bases/mini/int8/base.json", info)
    assert repo.fingerprint("spam", 1, "production") not in (gone, promoted)


def test_a_base_is_rebuilt_on_s3_as_the_docs_say(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/artifacts.md: delete the objects under `_bases/<key>/int8/` and its claim object, re-export."""
    monkeypatch.setenv("LABELWISE_BASE_CLAIM_WAIT_S", "0.5")
    repo = _small_repo(s3, tmp_path, "rebuild")
    for payload in (b"old graph", b"new graph"):
        s3.fs.rm(f"{BUCKET}/rebuild/_bases/mini/int8", recursive=True) if repo.has_base(
            "mini", "int8"
        ) else None
        s3.fs.rm(f"{BUCKET}/rebuild/_bases/mini/_claims/int8") if payload == b"new graph" else None
        with repo.new_base("mini", "int8") as draft:
            (draft.path / "encoder.onnx").write_bytes(payload)
        assert draft.published
    assert s3.fs.cat_file(f"{BUCKET}/rebuild/_bases/mini/int8/encoder.onnx") == b"new graph"


def test_opening_a_repository_lists_only_its_own_prefix(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prefix-scoped policy allows ListBucket under the prefix only: opening must not list the root."""
    from model_repository import storage

    calls: list[tuple[str, dict]] = []
    real_filesystem = storage._filesystem

    def recording_filesystem(scheme: str):
        fs = real_filesystem(scheme)
        real_call, real_ls = fs.call_s3, fs.ls
        fs.call_s3 = lambda method, **kw: calls.append((method, kw)) or real_call(method, **kw)
        fs.ls = lambda path, **kw: calls.append(("ls", {"path": path})) or real_ls(path, **kw)
        return fs

    monkeypatch.setattr(storage, "_filesystem", recording_filesystem)
    ObjectStoreRepository(f"s3://{BUCKET}/never-written/deeper", cache_dir=tmp_path / "cache")  # empty: fine
    assert calls == [("list_objects_v2", {"Bucket": BUCKET, "MaxKeys": 1, "Prefix": "never-written/deeper/"})]
    with pytest.raises(ObjectStoreError, match=r"bucket 'no-such-bucket' does not exist"):
        ModelRepository("s3://no-such-bucket/repo")


def test_zero_byte_folder_markers_are_not_stray_files(s3: S3, tmp_path: Path) -> None:
    repo = _small_repo(s3, tmp_path, "markers")
    _small_version(repo, "spam")
    for marker in ("markers/spam/", "markers/spam/1/", "markers/spam/1/weights/"):
        s3.fs.pipe(f"{BUCKET}/{marker}", b"")
    assert sorted(repo.store.files("spam/1")) == ["labels.txt", "manifest.json", "weights/model.bin"]
    assert repo.verify("spam", 1).version == 1
    assert repo.list_scenarios() == ["spam"] and repo.list_versions("spam") == [1]


def test_resolving_an_alias_does_not_list_every_object(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What every replica does every poll: a GET of the alias and a HEAD of its manifest, no recursive
    listing of the scenario; serve-all's scenario listing goes one level deep."""
    repo = _small_repo(s3, tmp_path, "poll-cost")
    for _ in range(3):
        _small_version(repo, "spam")
    _small_version(repo, "eggs")
    repo.set_alias("spam", "production", 2)
    s3.fs.pipe(f"{BUCKET}/poll-cost/spam/9/weights/model.bin", b"torn")  # files, no manifest
    recursive: list[str] = []
    real_find = repo.store.fs.find

    def find(path, *args, **kwargs):
        recursive.append(path)
        return real_find(path, *args, **kwargs)

    monkeypatch.setattr(repo.store.fs, "find", find)
    assert repo.resolve("spam", "production") == 2
    assert repo.resolve("spam", "latest") == 3
    assert repo.list_scenarios() == ["eggs", "spam"]
    assert recursive == []
    with pytest.raises(AliasNotFoundError):
        repo.resolve("spam", "staging")
    with pytest.raises(ScenarioNotFoundError):
        repo.resolve("absent", "production")


def test_an_object_rewritten_in_the_store_is_not_hidden_by_a_warm_cache(s3: S3, tmp_path: Path) -> None:
    """The publisher's cache holds version 2; the store's object is then overwritten (same size, other
    bytes): verify and promote there must see what a replica with an empty cache sees."""
    repo = _small_repo(s3, tmp_path, "warm-cache")
    _small_version(repo, "spam")
    version = _small_version(repo, "spam", b"GOODv2")
    repo.verify("spam", version)  # cached now
    s3.fs.pipe(f"{BUCKET}/warm-cache/spam/{version}/weights/model.bin", b"EVILv2")
    with pytest.raises(IntegrityError, match=r"'weights/model\.bin' does not match its sha256"):
        repo.verify("spam", version)
    with pytest.raises(IntegrityError):
        repo.set_alias("spam", "production", version)
    assert repo.read_aliases("spam").get("production") is None
    # put back: the version verifies again, and a second verify reuses the cache
    s3.fs.pipe(f"{BUCKET}/warm-cache/spam/{version}/weights/model.bin", b"GOODv2")
    repo.verify("spam", version)
    cached = repo.cache.version_path("spam", version) / "weights" / "model.bin"
    inode = cached.stat().st_ino
    repo.verify("spam", version)
    assert cached.stat().st_ino == inode


def test_a_store_error_is_not_taken_for_a_missing_object(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = _small_repo(s3, tmp_path, "head-denied")
    _small_version(repo, "spam")

    def denied(*args, **kwargs):
        raise PermissionError("AccessDenied")

    monkeypatch.setattr(repo.store.fs, "info", denied)
    monkeypatch.setattr(repo.store.fs, "isfile", lambda *a, **k: False)  # what fsspec answers on any error
    with pytest.raises(ObjectStoreError, match="access denied"):
        repo.list_scenarios()


def test_an_object_deleted_after_the_listing_is_an_integrity_error(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = _small_version(_small_repo(s3, tmp_path, "deleted-late"), "spam")
    # The publisher's own copy is trusted (stamped when published): a reader on another node downloads.
    repo = ObjectStoreRepository(f"s3://{BUCKET}/deleted-late", cache_dir=tmp_path / "reader-cache")
    real_download = repo.store.download

    def download(relative: str, local: Path) -> None:
        if relative.endswith("weights/model.bin"):
            s3.fs.rm(f"{BUCKET}/deleted-late/{relative}")
        real_download(relative, local)

    monkeypatch.setattr(repo.store, "download", download)
    with pytest.raises(IntegrityError, match=r"'weights/model\.bin' is missing"):
        repo.verify("spam", version)


def test_a_manifest_listing_a_path_as_a_file_and_a_folder_is_an_integrity_error(
    s3: S3, tmp_path: Path
) -> None:
    """S3 holds both `weights` and `weights/model.bin`; a disk cannot: the copy is refused naming the
    version (an IntegrityError, refused once), not a raw FileExistsError retried as a failed read."""
    import hashlib

    version = _small_version(_small_repo(s3, tmp_path, "file-and-folder"), "spam")
    prefix = f"{BUCKET}/file-and-folder/spam/{version}"
    s3.fs.pipe_file(f"{prefix}/weights", b"x")
    manifest = json.loads(s3.fs.cat_file(f"{prefix}/manifest.json"))
    manifest["files"]["weights"] = {"sha256": hashlib.sha256(b"x").hexdigest(), "size_bytes": 1}
    s3.fs.pipe_file(f"{prefix}/manifest.json", json.dumps(manifest).encode())
    reader = ObjectStoreRepository(f"s3://{BUCKET}/file-and-folder", cache_dir=tmp_path / "reader-cache")
    listed = "manifest.json lists 'weights' as a file and as the folder of 'weights/model.bin'"
    with pytest.raises(IntegrityError, match=rf"spam v{version}: {listed}"):
        reader.verify("spam", version)
    assert not reader.version_path("spam", version).exists()


def test_a_version_published_again_under_its_number_changes_its_manifest_stamp(
    s3: S3, tmp_path: Path
) -> None:
    """A replica's poll takes the serving version's manifest stamp (one HEAD) and reads the manifest only
    when it changed (serving.engine.registry): on S3 the scenario removed and published again under the same
    number must change the stamp, and an unchanged version must keep it."""
    repo = _small_repo(s3, tmp_path, "stamp")
    version = _small_version(repo, "spam", b"first")
    stamp = repo.manifest_stamp("spam", version)
    assert stamp is not None and stamp == repo.manifest_stamp("spam", version)
    s3.fs.rm(f"{BUCKET}/stamp/spam", recursive=True)
    assert repo.manifest_stamp("spam", version) is None
    again = _small_version(_small_repo(s3, tmp_path / "again", "stamp"), "spam", b"other")
    assert again == version
    assert repo.manifest_stamp("spam", version) not in (None, stamp)
