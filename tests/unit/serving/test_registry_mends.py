"""ScenarioRegistry in serve-all mode when the repository vanishes or holds nothing to serve, before its
first listing, and when a load fails for the machine's sake; the loaded-version series of a scenario that
is gone. A real repository of tiny versions; load_scenario stands in for ONNX Runtime where noted (as in
test_registry.py), the registry's own logic is what runs."""

from __future__ import annotations

import asyncio
import shutil
import types
from pathlib import Path
from typing import Any

import pytest

from model_repository import ModelRepository
from tests.conftest import manifest_fields
from tests.unit.serving.conftest import RegistryClock

FIELDS = manifest_fields(max_length_tokens=16)


def _repo(root: Path, names: tuple[str, ...] = ("spam", "ham")) -> ModelRepository:
    repo = ModelRepository(root)
    for name in names:
        with repo.new_version(name, **FIELDS) as draft:
            (draft.path / "labels.txt").write_text("negative\npositive\n")
        repo.set_alias(name, "production", 1)
    return repo


def _fake_load(repo: Any, name: str, version: int, *args: Any) -> Any:
    manifest = types.SimpleNamespace(strategy="full")
    return types.SimpleNamespace(name=name, version=version, shared=None, precision="fp32", manifest=manifest)


def _registry(repo: ModelRepository, monkeypatch: pytest.MonkeyPatch, load: Any = _fake_load) -> Any:
    import serving.engine.registry as registry_module
    from serving.engine import EngineSettings, ScenarioRegistry

    monkeypatch.setattr(registry_module, "load_scenario", load)
    settings = EngineSettings(["CPUExecutionProvider"], ["fp32"], intra_op_threads=1)
    return ScenarioRegistry(repo, None, "production", settings)


def test_a_repository_root_gone_for_a_poll_unloads_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A volume unmounted or a folder being replaced lists nothing for a moment: the scenarios serving keep
    serving (a listing error), rather than being forgotten with the replica still saying ready."""
    repo = _repo(tmp_path / "repo")
    registry = _registry(repo, monkeypatch)
    registry.poll_once()
    assert registry.served() == {"spam", "ham"} and registry.missing() == []
    moved = tmp_path / "moved"
    repo.root.rename(moved)
    registry.poll_once()
    assert registry.served() == {"spam", "ham"} and registry.get("spam").version == 1
    assert "lists no scenario while 2 are serving" in registry.listing_error
    moved.rename(repo.root)
    registry.poll_once()
    assert registry.listing_error is None and registry.served() == {"spam", "ham"}


def test_a_repository_with_nothing_to_serve_is_not_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving.errors import NotReadyError, UnknownScenarioError

    empty = ModelRepository(tmp_path / "empty")
    empty.root.mkdir()
    registry = _registry(empty, monkeypatch)
    with pytest.raises(NotReadyError, match="not been listed yet"):  # 503, retried: not a 404
        registry.get("spam")
    registry.poll_once()
    assert registry.missing() == ["(no scenario with the 'production' alias in the repository)"]
    with pytest.raises(UnknownScenarioError):  # listed: a name it does not hold is unknown
        registry.get("spam")


def test_a_load_that_ran_out_of_memory_is_tried_again_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry_clock: RegistryClock
) -> None:
    """MemoryError (or a device out of memory while two versions are resident) is the machine's, not the
    version's: retried after IO_REFUSAL_RETRY_S, then twice as long each time; a checksum refusal is not."""
    import serving.engine.registry as registry_module
    from serving.errors import ModelLoadError

    failures = {"left": 2}

    def load(*args: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            try:
                raise MemoryError("std::bad_alloc")
            except MemoryError as exc:
                raise ModelLoadError("spam v1 failed to load: MemoryError: std::bad_alloc") from exc
        return _fake_load(*args)

    repo = _repo(tmp_path / "repo", ("spam",))
    registry = _registry(repo, monkeypatch, load)
    monkeypatch.setattr(registry_module, "IO_REFUSAL_RETRY_S", 0.05)
    assert [(e.version, e.refused) for e in registry.poll_once()] == [(1, True)]
    assert registry.poll_once() == []  # not at once
    registry_clock.advance(0.04)
    assert registry.poll_once() == []  # nor before IO_REFUSAL_RETRY_S
    registry_clock.advance(0.02)
    assert [(e.version, e.refused) for e in registry.poll_once()] == [(1, True)]  # the second refusal
    registry_clock.advance(0.06)
    assert registry.poll_once() == []  # now 0.1 s: twice as long
    registry_clock.advance(0.05)
    assert [(e.version, e.refused) for e in registry.poll_once()] == [(1, False)]
    assert registry.missing() == []


def test_a_removed_scenario_leaves_the_loaded_version_series(
    published_repo: ModelRepository, tmp_path: Path
) -> None:
    pytest.importorskip("ray.serve")
    from serving.config import ServingConfig
    from serving.service import ClassifierService

    repo = ModelRepository(tmp_path / "repo")
    shutil.copytree(published_repo.root, repo.root)
    config = ServingConfig(repository=str(repo.root), reload_poll_interval_s=0.05)

    async def scenario() -> tuple[str, str]:
        service = ClassifierService(config)
        service.start()
        try:
            for _ in range(600):
                if not service.registry.missing():
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.2)  # a poll after the loads sets the series
            before = _loaded_lines(service)
            shutil.rmtree(repo.scenario_path("frozen_two"))
            for _ in range(100):
                if "frozen_two" not in service.registry.served():
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            return before, _loaded_lines(service)
        finally:
            service.stop()

    before, after = asyncio.run(scenario())
    assert 'scenario="frozen_two"' in before and 'scenario="frozen_three"' in before
    assert 'scenario="frozen_two"' not in after and 'scenario="frozen_three"' in after


def _loaded_lines(service: Any) -> str:
    from prometheus_client import generate_latest

    text = generate_latest(service.metrics.registry).decode()
    return "\n".join(line for line in text.splitlines() if line.startswith("labelwise_loaded_version{"))
