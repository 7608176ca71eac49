"""ClassifierService.check_health, what Ray Serve's health check calls: it passes on a working replica and
fails, naming the scenario, when a loaded graph's ONNX Runtime session fails, so that Ray replaces it."""

from __future__ import annotations

import asyncio

import pytest

from model_repository import ModelRepository

from .conftest import SCENARIOS


class _FailingSession:
    """Stands in for an ONNX Runtime session after a device fault: every run raises, as ORT does."""

    def __init__(self, session: object) -> None:
        self._session = session
        self.get_providers = session.get_providers  # type: ignore[attr-defined]

    def _fail(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : CUDA failure 700: an illegal memory access")

    run = run_with_iobinding = io_binding = _fail


def test_check_health_passes_then_fails_on_a_broken_session(published_repo: ModelRepository) -> None:
    pytest.importorskip("ray.serve")
    from serving.config import ServingConfig
    from serving.service import ClassifierService

    config = ServingConfig(repository=str(published_repo.root), scenarios=[{"name": n} for n in SCENARIOS])

    async def scenario() -> None:
        service = ClassifierService(config)
        await asyncio.to_thread(service.registry.poll_once)
        assert not service.registry.missing()
        await service.check_health()  # every scenario answers a one-row pass

        broken = next(s.loaded for s in service.registry.states() if s.name == "full_three")
        broken.graph.session = _FailingSession(broken.graph.session)
        with pytest.raises(RuntimeError) as failed:
            await service.check_health()
        assert "full_three" in str(failed.value) and "illegal memory access" in str(failed.value)
        assert "frozen_two" not in str(failed.value)  # the healthy scenarios are not blamed

    asyncio.run(scenario())


def test_check_health_fails_when_the_poll_loop_has_ended(published_repo: ModelRepository) -> None:
    pytest.importorskip("ray.serve")
    from serving.config import ServingConfig
    from serving.service import ClassifierService

    config = ServingConfig(repository=str(published_repo.root), scenarios=[{"name": "frozen_two"}])

    async def scenario() -> None:
        service = ClassifierService(config)
        service.start()
        await asyncio.sleep(0)
        await service.check_health()
        service.stop()  # the loop ends (cancelled): the replica can no longer take new versions
        await asyncio.sleep(0.05)
        with pytest.raises(RuntimeError, match="poll loop"):
            await service.check_health()

    asyncio.run(scenario())


def test_check_health_skips_versions_that_just_answered(published_repo: ModelRepository) -> None:
    """A version that answered a request within the last health check period gets no probe pass (its graph
    just ran): its session broken right after the answer goes unnoticed by the check for that period, and
    is found by the first check after it (no answer since)."""
    pytest.importorskip("ray.serve")
    from serving.config import ServingConfig
    from serving.service import ClassifierService

    period = 1.0
    config = ServingConfig(
        repository=str(published_repo.root),
        scenarios=[{"name": n} for n in SCENARIOS],
        health_check_period_s=period,
    )

    async def scenario() -> None:
        service = ClassifierService(config)
        await asyncio.to_thread(service.registry.poll_once)
        try:
            answer = await service.classify("full_three", ["the parcel arrived broken"], None, True)
            assert answer["scenario"] == "full_three" and len(answer["results"]) == 1
            broken = next(s.loaded for s in service.registry.states() if s.name == "full_three")
            broken.graph.session = _FailingSession(broken.graph.session)
            await service.check_health()  # full_three answered just now: not probed; the others pass

            await asyncio.sleep(period * 1.2)  # no answer within the period: probed, and found broken
            with pytest.raises(RuntimeError, match="full_three") as failed:
                await service.check_health()
            assert "frozen_two" not in str(failed.value)
        finally:
            service.stop()

    asyncio.run(scenario())
