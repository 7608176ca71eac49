"""What a stopping replica does once Ray Serve has drained it and calls the deployment's `__del__`: the
alias poll ends, the pass workers stop, and a request that still reaches the replica is answered 503
(retry elsewhere), not 500. Real ClassifierDeployment and FastAPI app, in process, on published tiny
versions."""

from __future__ import annotations

import asyncio

import pytest

from model_repository import ModelRepository

from .conftest import SCENARIOS


def test_a_stopped_replica_ends_its_poll_and_answers_503(published_repo: ModelRepository) -> None:
    pytest.importorskip("ray.serve")
    import httpx

    from serving.api import create_api
    from serving.app import ClassifierDeployment

    payload = {"repository": str(published_repo.root), "scenarios": [{"name": n} for n in SCENARIOS]}

    async def scenario() -> None:
        replica = ClassifierDeployment.__new__(ClassifierDeployment)
        await replica.__init__(payload)  # type: ignore[misc]  # Ray awaits the async constructor
        service = replica.service
        for _ in range(600):  # the poll loads the scenarios in the background (at most 60 s)
            if not service.registry.missing():
                break
            await asyncio.sleep(0.1)
        app = create_api(service, service.config, service.metrics)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            body = {"scenario": "full_three", "texts": ["a fine day"]}
            assert (await client.post("/v1/classify", json=body)).status_code == 200

            replica.__del__()
            await asyncio.sleep(0)  # the cancellation reaches the poll task
            assert service._poll_task is not None and service._poll_task.cancelled()
            assert all(not worker.is_alive() for worker in service.batcher._workers)

            late = await client.post("/v1/classify", json=body)
            assert late.status_code == 503, late.text
            assert late.json()["error"]["type"] == "not_ready"
            assert "shutting down" in late.json()["error"]["message"]
        replica.__del__()  # Python may call it again at exit: nothing left to stop, no error

    asyncio.run(scenario())
