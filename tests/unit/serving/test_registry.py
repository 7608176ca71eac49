"""ScenarioRegistry on a real repository: isolation between scenarios, serve-all readiness, retries."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from model_repository import ModelRepository
from serving.errors import UnknownScenarioError
from tests.conftest import manifest_fields, write_toy_csv
from tests.unit.serving.conftest import RegistryClock


def _publish(repo: ModelRepository, work: Path, base: Path, name: str, seed: int) -> int:
    from training import custom_scenario, make_train_config, train_and_publish

    labels = ("positive", "negative")
    data = work / "data" / name
    write_toy_csv(data / "train.csv", 8, seed=seed, labels=labels)
    write_toy_csv(data / "validation.csv", 4, seed=seed + 100, labels=labels)
    config = make_train_config(
        custom_scenario(name, list(labels), data, max_length_tokens=16),
        "frozen",
        base_model=str(base),
        output_dir=work / "runs" / f"{name}-{seed}",
        max_steps=2,
        batch_size=8,
        early_stopping_patience=None,
        seed=seed,
    )
    return train_and_publish(config, repo, export_precisions=["fp32"]).version


@pytest.fixture(scope="module")
def repo(tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    pytest.importorskip("onnxruntime", reason="the serving extra is not installed")
    work = tmp_path_factory.mktemp("registry")
    repository = ModelRepository(work / "repo")
    for seed, name in enumerate(("alpha", "beta", "gamma"), start=1):
        _publish(repository, work, tiny_roberta_dir, name, seed)
    repository.set_alias("alpha", "production", 1)
    repository.set_alias("beta", "production", 1)  # gamma: versions, no alias
    return repository


def _registry(repo: ModelRepository, scenarios: dict[str, str] | None):
    from serving.engine import EngineSettings, ScenarioRegistry

    settings = EngineSettings(["CPUExecutionProvider"], ["fp32"], intra_op_threads=1)
    return ScenarioRegistry(repo, scenarios, "production", settings)


def test_serve_all_readiness_skips_scenarios_without_the_alias_and_forgets_removed_ones(
    repo: ModelRepository, tmp_path: Path
) -> None:
    copy = ModelRepository(tmp_path / "repo")
    shutil.copytree(repo.root, copy.root)
    registry = _registry(copy, None)
    # Before a listing has succeeded there is nothing to serve yet: not ready (not "nothing missing").
    assert registry.missing() == ["(repository not listed yet)"]
    registry.poll_once()
    assert registry.missing() == [] and registry.skipped() == ["gamma"]
    assert registry.served() == {"alpha", "beta"}
    with pytest.raises(UnknownScenarioError, match="'gamma' is not served: it has no 'production' alias"):
        registry.get("gamma")  # not "unknown": it is in the repository, listed as skipped
    with pytest.raises(UnknownScenarioError, match=r"^unknown scenario"):
        registry.get("delta")
    shutil.rmtree(copy.scenario_path("gamma"))
    registry.poll_once()
    assert [s.name for s in registry.states()] == ["alpha", "beta"]


def test_a_garbage_alias_stops_only_its_own_scenario_and_is_reported_once(
    repo: ModelRepository, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = ModelRepository(tmp_path / "repo")
    shutil.copytree(repo.root, copy.root)
    alias = copy.scenario_path("alpha") / "_aliases" / "production.json"
    alias.write_bytes(b"\xff\xfe not json")
    registry = _registry(copy, {"alpha": "production", "beta": "production"})
    with caplog.at_level("WARNING", logger="labelwise.serving"):
        for _ in range(3):
            registry.poll_once()
    assert registry.missing() == ["alpha"]  # beta loaded despite alpha's garbage
    state = {s.name: s for s in registry.states()}["alpha"]
    assert "ManifestError" in state.last_error and str(alias) in state.last_error
    assert sum("scenario alpha" in r.getMessage() for r in caplog.records) == 1  # once, not per poll
    alias.write_text('{"version": 1}')
    registry.poll_once()
    assert registry.missing() == [] and state.last_error is None


def _with_beta_head_corrupted(repo: ModelRepository, root: Path) -> tuple[ModelRepository, Path, bytes]:
    """A copy of repo whose beta v1 head.npz has its last byte flipped; (copy, head path, good bytes)."""
    copy = ModelRepository(root)
    shutil.copytree(repo.root, copy.root)
    head = copy.version_path("beta", 1) / "head.npz"
    good = head.read_bytes()
    head.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
    return copy, head, good


def test_a_refused_version_is_retried_when_its_files_change(repo: ModelRepository, tmp_path: Path) -> None:
    copy, head, good = _with_beta_head_corrupted(repo, tmp_path / "repo")
    registry = _registry(copy, {"beta": "production"})
    events = registry.poll_once()
    assert [(e.name, e.version, e.refused) for e in events] == [("beta", 1, True)]
    assert registry.poll_once() == []  # same files: not tried again
    head.write_bytes(good)
    events = registry.poll_once()
    assert [(e.name, e.version, e.refused) for e in events] == [("beta", 1, False)]
    assert registry.missing() == []


def test_a_scenario_removed_and_published_again_serves_its_new_v1_not_the_old_one(
    repo: ModelRepository, tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    copy = ModelRepository(tmp_path / "repo")
    shutil.copytree(repo.root, copy.root)
    registry = _registry(copy, {"alpha": "production"})
    registry.poll_once()
    old = registry.get("alpha").manifest
    shutil.rmtree(copy.scenario_path("alpha"))  # removed: the loaded version keeps serving meanwhile
    assert registry.poll_once() == [] and registry.get("alpha").manifest == old
    # Trained again from scratch: numbered from 1 again (the folder and its .last-version are gone).
    assert _publish(copy, tmp_path / "work", tiny_roberta_dir, "alpha", seed=7) == 1
    copy.set_alias("alpha", "production", 1)
    new = copy.load_manifest("alpha", 1)
    assert new != old
    events = registry.poll_once()
    assert [(e.name, e.version, e.previous, e.refused) for e in events] == [("alpha", 1, 1, False)]
    assert registry.get("alpha").manifest == new
    assert registry.poll_once() == [] and registry.states()[0].last_error is None


def _republished_between_polls(
    repo: ModelRepository, tiny_roberta_dir: Path, tmp_path: Path, *, broken: bool
) -> tuple[ModelRepository, object]:
    """A copy of repo serving alpha v1 from a registry, then alpha removed and published again as v1 (a
    new model) with no poll in between, as a folder moved over the old one; broken: the new v1's head.npz
    has its last byte flipped. (copy, registry)"""
    copy = ModelRepository(tmp_path / "repo")
    shutil.copytree(repo.root, copy.root)
    registry = _registry(copy, {"alpha": "production"})
    registry.poll_once()
    shutil.rmtree(copy.scenario_path("alpha"))
    assert _publish(copy, tmp_path / "work", tiny_roberta_dir, "alpha", seed=7) == 1
    copy.set_alias("alpha", "production", 1)
    if broken:
        head = copy.version_path("alpha", 1) / "head.npz"
        good = head.read_bytes()
        head.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
    return copy, registry


def test_a_version_published_again_under_its_number_between_two_polls_serves_the_new_one(
    repo: ModelRepository, tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    """No poll saw alpha missing: the new v1 is noticed by its manifest's stat, not by a gap."""
    copy, registry = _republished_between_polls(repo, tiny_roberta_dir, tmp_path, broken=False)
    old, new = registry.get("alpha").manifest, copy.load_manifest("alpha", 1)
    assert new != old
    events = registry.poll_once()
    assert [(e.name, e.version, e.previous, e.refused) for e in events] == [("alpha", 1, 1, False)]
    assert registry.get("alpha").manifest == new
    assert registry.poll_once() == [] and registry.states()[0].last_error is None


def test_a_broken_version_published_again_under_its_number_leaves_the_old_one_serving(
    repo: ModelRepository, tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    _, registry = _republished_between_polls(repo, tiny_roberta_dir, tmp_path, broken=True)
    serving = registry.get("alpha")
    events = registry.poll_once()
    assert [(e.name, e.version, e.previous, e.refused) for e in events] == [("alpha", 1, 1, True)]
    assert registry.get("alpha") is serving
    (state,) = registry.states()
    assert "REFUSED v1" in state.last_error and "head.npz" in state.last_error
    assert registry.poll_once() == []  # same files: not tried again, and the error stays reported
    assert registry.get("alpha") is serving and "REFUSED v1" in state.last_error


def test_a_version_refused_while_its_base_was_half_mirrored_is_retried_once_the_graph_arrives(
    repo: ModelRepository, tmp_path: Path
) -> None:
    """rclone copies in no set order: base.json can land before the graph it lists (here as rclone's
    partial file). The base's other files are in the fingerprint, so the finished copy brings it back."""
    copy = ModelRepository(tmp_path / "repo")
    shutil.copytree(repo.root, copy.root)
    base = copy.load_manifest("beta", 1).base_encoder
    (graph,) = [p for p in copy.base_path(base.key, "fp32").iterdir() if p.suffix == ".onnx"]
    partial = graph.with_name(f"{graph.name}.a1b2c3.partial")
    graph.rename(partial)
    registry = _registry(copy, {"beta": "production"})
    assert [(e.name, e.version, e.refused) for e in registry.poll_once()] == [("beta", 1, True)]
    assert registry.poll_once() == []  # nothing changed: not tried again
    partial.rename(graph)  # the copy finished; base.json is as it was
    assert [(e.name, e.version, e.refused) for e in registry.poll_once()] == [("beta", 1, False)]
    assert registry.missing() == []


def test_a_version_refused_for_a_failed_read_is_tried_again_and_a_bad_one_is_not(
    repo: ModelRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry_clock: RegistryClock
) -> None:
    """A read that failed (an object store's timeout, an I/O error) says nothing about the version: it is
    loaded again after IO_REFUSAL_RETRY_S though its files are the same. A version whose files are bad
    stays refused until they change, however long."""
    import serving.engine.registry as registry_module

    class FlakyRead(ModelRepository):
        failures = 1

        def verify(self, scenario, version, *args, **kwargs):  # type: ignore[no-untyped-def]
            if self.failures:
                self.failures -= 1
                raise TimeoutError("read timed out")  # what s3fs raises on a slow GET
            return super().verify(scenario, version, *args, **kwargs)

    copy = FlakyRead(tmp_path / "repo")
    shutil.copytree(repo.root, copy.root)
    monkeypatch.setattr(registry_module, "IO_REFUSAL_RETRY_S", 0.05)
    registry = _registry(copy, {"alpha": "production"})
    assert [(e.version, e.refused) for e in registry.poll_once()] == [(1, True)]
    assert registry.poll_once() == []  # not at once: one read a period, not one per poll
    registry_clock.advance(0.04)
    assert registry.poll_once() == []  # nor before IO_REFUSAL_RETRY_S
    registry_clock.advance(0.02)
    assert [(e.version, e.refused) for e in registry.poll_once()] == [(1, False)]
    assert registry.missing() == []

    bad, _, _ = _with_beta_head_corrupted(repo, tmp_path / "bad")
    registry = _registry(bad, {"beta": "production"})
    assert [(e.version, e.refused) for e in registry.poll_once()] == [(1, True)]
    registry_clock.advance(3600)
    assert registry.poll_once() == []  # a checksum refusal is not a failed read: not tried again


def test_a_failed_listing_in_serve_all_mode_still_reloads_the_known_scenarios(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A transient error listing the repository must not skip every scenario's reload (nor log a
    traceback every poll): it is noted once, and the scenarios already known are polled."""
    import types

    import serving.engine.registry as registry_module

    fields = manifest_fields(max_length_tokens=16)
    repo = ModelRepository(tmp_path / "repo")
    for _ in range(2):
        with repo.new_version("spam", **fields) as draft:
            (draft.path / "labels.txt").write_text("negative\npositive\n")
    repo.set_alias("spam", "production", 1)

    def fake_load(repo, name, version, *args):
        manifest = types.SimpleNamespace(strategy="full")
        return types.SimpleNamespace(version=version, shared=None, precision="fp32", manifest=manifest)

    monkeypatch.setattr(registry_module, "load_scenario", fake_load)
    registry = _registry(repo, None)
    registry.poll_once()
    assert registry.get("spam").version == 1

    def listing_fails() -> list[str]:
        raise TimeoutError("the store timed out")

    monkeypatch.setattr(repo, "list_scenarios", listing_fails)
    repo.set_alias("spam", "production", 2)
    with caplog.at_level("INFO", logger="labelwise.serving"):
        events = registry.poll_once()
        registry.poll_once()
        assert [(e.name, e.version) for e in events] == [("spam", 2)]
        assert registry.get("spam").version == 2
        assert "TimeoutError" in registry.listing_error
        warned = [r for r in caplog.records if "cannot list the scenarios" in r.getMessage()]
        assert len(warned) == 1 and warned[0].exc_info is None  # once, no traceback
        monkeypatch.undo()
        monkeypatch.setattr(registry_module, "load_scenario", fake_load)
        registry.poll_once()
    assert registry.listing_error is None


def test_versions_on_two_sessions_of_one_base_never_share_a_pass(
    repo: ModelRepository, tmp_path: Path
) -> None:
    """A base exported again is a new session for the versions loaded after it, while those already serving
    keep the old one: their rows must not be grouped into one pass (it runs on the first row's session)."""
    from serving.engine import BaseEncoderCache, EngineSettings, load_scenario
    from training import custom_scenario, make_train_config, train_and_publish

    work = tmp_path / "frozen"
    write_toy_csv(work / "data" / "train.csv", 8, seed=5)
    write_toy_csv(work / "data" / "validation.csv", 4, seed=105)
    config = make_train_config(
        custom_scenario(
            "frozen_one", ["positive", "negative", "neutral"], work / "data", max_length_tokens=16
        ),
        "frozen",
        base_model=str(repo.load_manifest("alpha", 1).base_model.id),
        output_dir=work / "run",
        max_steps=2,
        early_stopping_patience=None,
    )
    train_and_publish(config, repo, export_precisions=["fp32"])
    settings = EngineSettings(["CPUExecutionProvider"], ["fp32"], intra_op_threads=1)
    one = load_scenario(repo, "frozen_one", 1, settings, BaseEncoderCache())
    two = load_scenario(repo, "frozen_one", 1, settings, BaseEncoderCache())  # another session, same files
    assert one.base_graph is not two.base_graph and one.group_key != two.group_key
    again = load_scenario(repo, "frozen_one", 1, settings, cache := BaseEncoderCache())
    assert again.group_key == load_scenario(repo, "frozen_one", 1, settings, cache).group_key
