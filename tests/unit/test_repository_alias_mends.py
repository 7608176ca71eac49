"""Review mends: a base folder that is another base's, aliases on versions no replica can load, drafts
interrupted publishes leave, and a local repository that unpickles as itself."""

from __future__ import annotations

import copy
import json
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


# ---- 6. repository commands found in review -----------------------------------------------------------


def test_an_empty_or_file_repository_is_refused_not_read_as_this_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """typer made `-r ""` into Path('.'): `promote -r "$UNSET"` moved an alias in whatever repository the
    current folder was; a file was listed as a repository with no scenarios (exit 0)."""
    repo = ModelRepository(tmp_path / "repo")
    publish_servable(repo, "spam")
    monkeypatch.chdir(repo.root)
    for args in (
        ["repo", "list"],
        ["repo", "verify", "spam"],
        ["promote", "-s", "spam", "-v", "1", "-a", "x"],
    ):
        result = _invoke(*args, "-r", "")
        assert result.exit_code == 2 and "is empty" in result.output, (args, result.output)
    assert repo.alias_version("spam", "x") is None
    afile = tmp_path / "notes.txt"
    afile.write_text("hello")
    listed = _invoke("repo", "list", "-r", str(afile))
    assert listed.exit_code == 2 and "is a file, not a folder of scenarios" in listed.output
    device = tmp_path / "null"
    device.symlink_to(os.devnull)  # listed as an empty repository, exit 0
    for args in (["repo", "list"], ["repo", "show", "spam"], ["promote", "-s", "spam", "-v", "1"]):
        result = _invoke(*args, "-r", str(device))
        assert result.exit_code == 2, (args, result.output)
        assert f"--repository {device} is not a folder of scenarios" in result.output


def test_promote_says_an_unreadable_alias_was_rewritten_and_list_flags_an_unpublished_one(
    tmp_path: Path,
) -> None:
    repo = ModelRepository(tmp_path)
    publish_servable(repo, "spam")
    aliases = repo.scenario_path("spam") / "_aliases"
    aliases.mkdir(exist_ok=True)
    (aliases / "staging.json").write_text('{"version": 2.0}')
    (aliases / "canary.json").write_text('{"version": 7}')
    moved = _invoke("promote", "-s", "spam", "-v", "1", "-a", "staging", "-r", str(tmp_path))
    assert moved.exit_code == 0 and "staging -> 1 (its alias file was unreadable: rewritten)" in moved.output
    table = _invoke("repo", "list", "-r", str(tmp_path))
    assert "canary→7 (not published), staging→1 " in table.output
    listed = json.loads(_invoke("repo", "list", "--json", "-r", str(tmp_path)).output)
    assert listed["scenarios"][0]["unpublished"] == ["canary"]


@pytest.mark.parametrize("damage", ["_aliases is a file", "production.json is a folder"])
def test_a_damaged_aliases_folder_is_named_by_promote_list_show_and_a_poll(
    damage: str, tmp_path: Path
) -> None:
    """promote printed a bare `FileExistsError` / `IsADirectoryError`; list and show said the scenario had
    no alias at all, and a serve-all replica listed it as skipped (no alias) with no word of the damage."""
    repo = ModelRepository(tmp_path)
    publish_servable(repo, "spam")
    aliases = repo.scenario_path("spam") / "_aliases"
    if damage == "_aliases is a file":
        aliases.write_text("")
        bad, said = aliases, f"{aliases} is a file, not a folder"
    else:
        (aliases / "production.json").mkdir(parents=True)
        bad, said = (
            aliases / "production.json",
            f"alias file {aliases / 'production.json'} is a folder, not a file",
        )
    promoted = _invoke("promote", "-s", "spam", "-v", "1", "-r", str(tmp_path))
    assert promoted.exit_code == EXIT_RUNTIME, promoted.output
    assert promoted.output.count("\n") == 1 and promoted.output.startswith(f"error: {said}"), promoted.output
    assert "promote a version to" in promoted.output and "Error: [Errno" not in promoted.output
    shown = _invoke("repo", "show", "spam", "production", "-r", str(tmp_path))
    assert shown.exit_code == EXIT_RUNTIME and said in shown.output, shown.output
    listed = json.loads(_invoke("repo", "list", "--json", "-r", str(tmp_path)).output)["scenarios"][0]
    assert listed["versions"] == [1]
    if damage == "_aliases is a file":  # the scenario is listed, its aliases column says why none is read
        assert said in listed["problem"] and listed["aliases"] == {}, listed
    else:
        assert listed["aliases"] == {"production": "unreadable"} and listed["problem"] is None, listed
    pytest.importorskip("onnxruntime")
    from serving.engine import EngineSettings, ScenarioRegistry

    settings = EngineSettings(["CPUExecutionProvider"], ["fp32"], intra_op_threads=1)
    registry = ScenarioRegistry(repo, None, "production", settings)
    registry.poll_once()  # no exception, and the scenario is not mistaken for one without the alias
    state = registry.states()[0]
    assert registry.skipped() == [] and said in (state.last_error or ""), state
    assert registry.missing() == ["spam"] and str(bad) in state.last_error  # /readyz names it, not ready


@pytest.mark.parametrize("first", ["promote", "train --alias"])
def test_promotes_of_one_scenario_run_one_at_a_time(
    first: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow promote (verifying its version) started first overwrote a rollback started after it: both
    exit 0, the rollback undone. With the scenario locked, the rollback waits and writes last. So does a
    rollback started while `labelwise train --alias` points the alias at the version it just published
    (training.publish.point_alias, which wrote without the lock)."""
    import threading

    from labelwise.catalog import promote
    from training.publish import point_alias

    repo = ModelRepository(tmp_path)
    publish_servable(repo, "spam", b"v1")
    publish_servable(repo, "spam", b"v2")
    promote(repo, "spam", 1)
    verifying, release = threading.Event(), threading.Event()
    verify = ModelRepository.verify

    def slow_verify(self, scenario, version, bases=True):  # type: ignore[no-untyped-def]
        if version == 2:
            verifying.set()
            assert release.wait(10)
        return verify(self, scenario, version, bases)

    monkeypatch.setattr(ModelRepository, "verify", slow_verify)
    if first == "promote":
        slow = threading.Thread(target=promote, args=(ModelRepository(tmp_path), "spam", 2))
    else:
        published = repo.load_manifest("spam", 2)
        slow = threading.Thread(target=point_alias, args=(ModelRepository(tmp_path), published, "production"))
    slow.start()
    assert verifying.wait(10)
    rollback = threading.Thread(target=promote, args=(ModelRepository(tmp_path), "spam", 1))
    rollback.start()
    rollback.join(0.3)
    assert rollback.is_alive()  # waiting for the slow promote's lock, not writing under it
    release.set()
    slow.join(10), rollback.join(10)
    assert repo.alias_version("spam", "production") == 1  # the rollback, started last, holds


def test_doctor_verifies_each_version_as_a_replica_loads_it(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    repo = ModelRepository(tmp_path)
    publish_servable(repo, "spam")
    from labelwise.catalog import promote

    promote(repo, "spam", 1)
    graph = repo.version_path("spam", 1) / layout.graph_file("fp32")
    graph.write_bytes(graph.read_bytes() + b"!")
    result = _invoke("doctor", "-r", str(tmp_path))
    assert "spam: v1: refused at load:" in result.output, result.output


def test_alias_files_named_like_a_version_or_latest_never_shadow_it_and_verify_names_them(
    tmp_path: Path,
) -> None:
    """`_aliases/3.json` and `_aliases/latest.json`, written before such names were refused (5 December
    2026): repo list showed them beside the versions as `3→1, latest→1`, an unknown alias's error listed
    them, a serve of v3 or 'latest' was retried when they changed, and repo verify said nothing."""
    repo = ModelRepository(tmp_path)
    for _ in range(3):
        publish_servable(repo, "spam")
    repo.set_alias("spam", "production", 2)
    aliases = repo.scenario_path("spam") / "_aliases"
    (aliases / "3.json").write_text('{"version": 1}')
    (aliases / "latest.json").write_text('{"version": 1}')
    assert repo.resolve("spam", "3") == 3 and repo.resolve("spam", "latest") == 3
    assert repo.read_aliases("spam") == {"production": 2}
    listed = json.loads(_invoke("repo", "list", "--json", "-r", str(tmp_path)).output)["scenarios"][0]
    assert listed["aliases"] == {"production": 2}, listed
    table = _invoke("repo", "list", "-r", str(tmp_path)).output
    assert "production→2" in table and "3→" not in table and "latest→" not in table, table
    for ref in ("3", "latest"):
        shown = _invoke("repo", "show", "spam", ref, "--json", "-r", str(tmp_path))
        assert json.loads(shown.output)["version"] == 3, shown.output
    unknown = _invoke("repo", "show", "spam", "staging", "-r", str(tmp_path))
    assert "(aliases: ['production'])" in unknown.output, unknown.output
    for ref in ("3", "latest"):  # a served number or 'latest' is not retried when a leftover file changes
        before = repo.fingerprint("spam", 3, ref)
        (aliases / f"{ref}.json").write_text('{"version": 2}')
        assert repo.fingerprint("spam", 3, ref) == before
    verified = _invoke("repo", "verify", "spam", "-r", str(tmp_path))
    assert verified.exit_code == EXIT_RUNTIME, verified.output
    assert "OK spam v3" in verified.output and verified.output.count("error:") == 1, verified.output
    assert "spam/_aliases/3.json (v2), spam/_aliases/latest.json (v2)" in verified.output, verified.output
    assert (
        "labelwise promote -s spam -v N -a NAME" in verified.output and "remove the file" in verified.output
    )
    (aliases / "3.json").unlink(), (aliases / "latest.json").unlink()
    assert _invoke("repo", "verify", "spam", "-r", str(tmp_path)).exit_code == 0
