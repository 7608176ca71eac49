"""Review mends: a base folder that is another base's, aliases on versions no replica can load, drafts
interrupted publishes leave, and a local repository that unpickles as itself."""

from __future__ import annotations

import copy
import logging
import os
import pickle
import shutil
import time
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelwise.cli import app
from model_repository import (
    EXIT_RUNTIME,
    BaseEncoderRef,
    ExportRecord,
    HeadSpec,
    Manifest,
    ManifestError,
    ModelRepository,
    layout,
)
from model_repository.repository import serving_problem
from tests.conftest import manifest_fields

FIELDS = manifest_fields()
DAY = 24 * 3600


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def publish_torch_only(repo: ModelRepository, scenario: str, payload: bytes = b"weights") -> int:
    """A version as `--export none` publishes it: torch weights, no graph."""
    with repo.new_version(scenario, **FIELDS) as draft:
        (draft.path / layout.WEIGHTS_DIR).mkdir()
        (draft.path / layout.WEIGHTS_DIR / "model.safetensors").write_bytes(payload)
    return draft.version


def publish_servable(repo: ModelRepository, scenario: str, payload: bytes = b"graph") -> int:
    """A version with an ONNX graph of its own (fake bytes: promote does not open it)."""
    with repo.new_version(scenario, **FIELDS) as draft:
        (draft.path / layout.ONNX_DIR).mkdir()
        (draft.path / layout.graph_file("fp32")).write_bytes(payload)
        draft.fields["exports"] = [
            ExportRecord(precision="fp32", path=layout.graph_file("fp32"), size_bytes=len(payload))
        ]
    return draft.version


def _base(repo: ModelRepository, key: str, folder: str, graph: bytes) -> None:
    with repo.new_base(key, folder) as draft:
        (draft.path / layout.ENCODER_FILE).write_bytes(graph)


# ---- 1. a base folder is the base its base.json names ----------------------------------------------
def test_a_base_folder_restored_from_another_base_is_refused_as_a_moved_version_is(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    _base(repo, "mini-aaa", "int8", b"mini graph")
    _base(repo, "bert-bbb", "int8", b"bert graph, another model")
    with repo.new_version("spam", **{**FIELDS, "strategy": "frozen"}) as draft:
        (draft.path / layout.HEAD_FILE).write_bytes(b"head")
        draft.fields["head"] = HeadSpec(kind="linear", path=layout.HEAD_FILE)
        draft.fields["base_encoder"] = BaseEncoderRef(key="mini-aaa", precisions=["int8"])
    repo.verify("spam", 1)
    # an operator restores mini's int8 folder from the wrong backup folder
    shutil.rmtree(repo.base_path("mini-aaa", "int8"))
    shutil.copytree(repo.base_path("bert-bbb", "int8"), repo.base_path("mini-aaa", "int8"))
    with pytest.raises(ManifestError, match=r"base mini-aaa int8: base\.json says base 'bert-bbb' 'int8'"):
        repo.verify_base("mini-aaa", "int8")
    with pytest.raises(ManifestError, match="restored from another base"):
        repo.verify("spam", 1)  # so the version is refused, not served with bert's encoder
    # another precision's folder of the same base is refused as well
    shutil.rmtree(repo.base_path("mini-aaa", "int8"))
    _base(repo, "mini-aaa", "fp32", b"mini fp32 graph")
    shutil.copytree(repo.base_path("mini-aaa", "fp32"), repo.base_path("mini-aaa", "int8"))
    with pytest.raises(ManifestError, match=r"says base 'mini-aaa' 'fp32', not 'mini-aaa' 'int8'"):
        repo.verify_base("mini-aaa", "int8")
    assert repo.verify_base("mini-aaa", "fp32")["key"] == "mini-aaa"


# ---- 2. promote refuses a version no replica can load ------------------------------------------------
def test_promote_refuses_a_torch_only_version_and_names_the_export_command(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    publish_servable(repo, "spam")
    publish_torch_only(repo, "spam")
    assert _invoke("promote", "-s", "spam", "-v", "1", "-r", str(tmp_path)).exit_code == 0
    result = _invoke("promote", "-s", "spam", "-v", "2", "-r", str(tmp_path))
    assert result.exit_code == EXIT_RUNTIME
    line = result.stderr.strip()
    assert line.startswith("error: not pointing spam production at v2: spam v2 cannot be served"), line
    assert "no ONNX export" in line and "`labelwise export --scenario spam --version 2`" in line
    assert repo.aliases("spam") == {"production": 1}  # untouched
    # the low-level set_alias still points any verified version (internal tools, tests)
    repo.set_alias("spam", "scratch", 2)


def _manifest(**fields) -> Manifest:
    return Manifest(scenario="spam", version=3, **{**FIELDS, **fields})


def test_serving_problem_follows_the_loader() -> None:
    sha = {"sha256": "0" * 64, "size_bytes": 1}
    base = BaseEncoderRef(key="mini-aaa", precisions=["int8"])
    head = HeadSpec(kind="linear", path=layout.HEAD_FILE)
    assert "spam v3 cannot be served" in str(serving_problem(_manifest()))
    # a graph of its own, recorded or only at its fixed path (the loader opens both)
    exported = ExportRecord(precision="int8", path=layout.graph_file("int8"), size_bytes=1)
    assert serving_problem(_manifest(exports=[exported])) is None
    assert serving_problem(_manifest(files={layout.graph_file("fp32"): sha})) is None
    # a GPU graph alone: no CPU replica (int8, then fp32) loads it
    assert "only GPU graphs (fp16)" in str(serving_problem(_manifest(files={layout.graph_file("fp16"): sha})))
    # frozen: head on the shared base encoder; without either, nothing to run
    assert serving_problem(_manifest(strategy="frozen", head=head, base_encoder=base)) is None
    assert serving_problem(_manifest(strategy="frozen", base_encoder=base)) is not None
    assert serving_problem(_manifest(strategy="frozen", head=head)) is not None
    # lora without a merged graph: lora_mode shared needs its adapter, head and base
    lora = dict(strategy="lora", head=head, base_encoder=base)
    assert serving_problem(_manifest(**lora, files={layout.LORA_FILE: sha})) is None
    assert serving_problem(_manifest(**lora)) is not None


# ---- 4. drafts interrupted publishes leave -----------------------------------------------------------
def _draft(parent: Path, age_s: float, size: int = 1000) -> Path:
    folder = parent / f".tmp-{uuid.uuid4().hex}"
    (folder / "weights").mkdir(parents=True)
    (folder / "weights" / "model.safetensors").write_bytes(b"x" * size)
    when = time.time() - age_s
    for path in [*folder.rglob("*"), folder]:
        os.utime(path, (when, when))
    return folder


def test_publishing_removes_drafts_over_a_day_old_and_keeps_younger_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = ModelRepository(tmp_path)
    publish_servable(repo, "spam")
    scenario, bases = repo.scenario_path("spam"), repo.base_path("mini-aaa")
    bases.mkdir(parents=True)
    old, young = _draft(scenario, DAY + 60), _draft(scenario, DAY - 3600)
    old_base, young_base = _draft(bases, 3 * DAY), _draft(bases, 60)
    other = _draft(repo.scenario_path("eggs"), 2 * DAY)  # another scenario's: its own publish removes it
    with caplog.at_level(logging.WARNING, logger="model_repository.repository"):
        publish_servable(repo, "spam", b"two")
        _base(repo, "mini-aaa", "int8", b"graph")
    assert not old.exists() and young.is_dir()
    assert not old_base.exists() and young_base.is_dir()
    assert other.is_dir()
    said = caplog.text
    assert str(old) in said and str(old_base) in said and "interrupted publish" in said
    assert str(young) not in said and str(young_base) not in said
    assert repo.list_versions("spam") == [1, 2] and repo.has_base("mini-aaa", "int8")


def test_a_draft_written_into_recently_is_not_stale_even_if_its_folder_is_old(tmp_path: Path) -> None:
    """A publish writes deep inside its draft: the newest entry's time is the draft's age."""
    repo = ModelRepository(tmp_path)
    draft = _draft(repo.scenario_path("spam"), 2 * DAY)
    (draft / "weights" / "model.safetensors").touch()  # being written now
    publish_servable(repo, "spam")
    assert draft.is_dir()


def test_doctor_reports_leftover_drafts_with_size_age_and_how_to_remove_them(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    repo = ModelRepository(tmp_path)
    publish_servable(repo, "spam")
    repo.base_path("mini-aaa").mkdir(parents=True)
    version_draft = _draft(repo.scenario_path("spam"), 3 * DAY, size=2_500_000)
    base_draft = _draft(repo.base_path("mini-aaa"), 600)
    first = _draft(repo.scenario_path("eggs"), 60)  # a first publish of a scenario that never finished
    result = _invoke("doctor", "-r", str(tmp_path))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "leftover drafts (publishes that never finished): 3, 2.5 MB" in out, out
    assert f"{version_draft}: 2.5 MB, 72.0 h old" in out
    assert f"{base_draft}: 0.0 MB, 10 min old" in out and str(first) in out
    assert "rm -rf <path>" in out and "over 24 h old" in out
    assert version_draft.is_dir()  # reported, never removed by doctor
    shutil.rmtree(version_draft), shutil.rmtree(base_draft), shutil.rmtree(first)
    assert "leftover drafts" not in _invoke("doctor", "-r", str(tmp_path)).output


# ---- 5. a local repository unpickles and copies as itself ------------------------------------------
def test_a_local_repository_unpickles_as_itself_whatever_labelwise_repository_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = ModelRepository(tmp_path)
    publish_servable(repo, "spam")
    data = pickle.dumps(repo)
    monkeypatch.setenv("LABELWISE_REPOSITORY", "s3://bucket/prefix")  # no request is made
    for back in (pickle.loads(data), copy.copy(repo), copy.deepcopy(repo)):
        assert type(back) is ModelRepository and back.root == tmp_path
        assert back.list_versions("spam") == [1]
