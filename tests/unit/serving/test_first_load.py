"""A replica's constructor returns once its first load has run: Ray Serve counts a replica running (and
KubeRay an upgraded cluster ready) when it returns, so one that returned before loading would get traffic
it could only answer 503."""

from __future__ import annotations

import asyncio
import time

import pytest

from model_repository import ModelRepository

from .conftest import SCENARIOS


def _payload(repo: ModelRepository, **fields: object) -> dict[str, object]:
    scenarios = [{"name": n} for n in SCENARIOS] + [{"name": "not_published"}]
    return {"repository": str(repo.root), "scenarios": scenarios, **fields}


def test_the_constructor_returns_with_every_scenario_loaded_or_refused(
    published_repo: ModelRepository,
) -> None:
    pytest.importorskip("ray.serve")
    from serving.app import ClassifierDeployment

    async def scenario() -> None:
        replica = ClassifierDeployment.__new__(ClassifierDeployment)
        await replica.__init__(_payload(published_repo))  # as Ray Serve builds it, without Ray
        try:
            states = {s.name: s for s in replica.service.registry.states()}
            assert all(states[name].loaded is not None for name in SCENARIOS), states
            # tried and refused (no such scenario), not still waiting for a first try
            assert states["not_published"].loaded is None
            assert "cannot resolve 'production'" in (states["not_published"].last_error or "")
            await replica.check_health()
        finally:
            replica.service.stop()

    asyncio.run(scenario())


def test_first_load_wait_zero_returns_at_once_and_the_load_goes_on(published_repo: ModelRepository) -> None:
    pytest.importorskip("ray.serve")
    from serving.app import ClassifierDeployment

    async def scenario() -> None:
        replica = ClassifierDeployment.__new__(ClassifierDeployment)
        await replica.__init__(_payload(published_repo, first_load_wait_s=0))
        try:
            registry = replica.service.registry
            assert all(s.loaded is None for s in registry.states())  # up at once, nothing loaded yet
            deadline = time.monotonic() + 60
            while registry.missing() != ["not_published"] and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert registry.missing() == ["not_published"]  # the load went on after the constructor
        finally:
            replica.service.stop()

    asyncio.run(scenario())


def test_first_load_gives_up_after_its_wait(published_repo: ModelRepository) -> None:
    """A load slower than first_load_wait_s leaves the replica up and still loading (False), not stuck."""
    pytest.importorskip("ray.serve")
    from serving.config import ServingConfig
    from serving.service import ClassifierService

    config = ServingConfig(repository=str(published_repo.root), scenarios=[{"name": n} for n in SCENARIOS])

    async def scenario() -> None:
        service = ClassifierService(config)
        release = asyncio.Event()
        poll_once = service.registry.poll_once

        def slow_poll() -> list:  # the first pass waits for the test; later ones run as they are
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=30)
            return poll_once()

        loop = asyncio.get_running_loop()
        service.registry.poll_once = slow_poll  # type: ignore[method-assign]
        service.start()
        try:
            started = time.monotonic()
            assert await service.first_load(0.3) is False
            assert 0.25 <= time.monotonic() - started < 5
            release.set()
            assert await service.first_load(30) is True
            assert not service.registry.missing()
        finally:
            service.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize(("request_timeout_s", "expected"), [(30.0, 35.0), (5.0, 20.0), (120.0, 125.0)])
def test_a_draining_replica_has_the_longest_request_and_a_margin(
    request_timeout_s: float, expected: float
) -> None:
    """Serve kills a draining replica after graceful_shutdown_timeout_s: never before a request it holds may
    still be answered (request_timeout_s)."""
    pytest.importorskip("ray.serve")
    from serving.app import classifier_options
    from serving.config import ServingConfig

    config = ServingConfig(request_timeout_s=request_timeout_s)
    for serves_http in (True, False):
        assert classifier_options(config, serves_http)["graceful_shutdown_timeout_s"] == expected
