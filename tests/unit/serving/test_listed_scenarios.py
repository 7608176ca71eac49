"""Scenarios listed in the config, answered over the real FastAPI app of a ClassifierService (in process, on
published tiny versions): one that names no alias serves the config's default_alias, and one that cannot
load is answered 503 with the reason it does not load, not only "not loaded yet"."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from model_repository import ModelRepository


def _serve(repo: ModelRepository, probe: Any, **fields: Any) -> Any:
    """probe(client) against the app of a replica configured with fields, after its first alias poll."""
    pytest.importorskip("ray.serve")
    import httpx

    from serving.api import create_api
    from serving.config import ServingConfig
    from serving.service import ClassifierService

    config = ServingConfig(repository=str(repo.root), **fields)

    async def scenario() -> Any:
        service = ClassifierService(config)
        try:
            await asyncio.to_thread(service.registry.poll_once)
            app = create_api(service, config, service.metrics)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as client:
                return await probe(client)
        finally:
            service.batcher.close()

    return asyncio.run(scenario())


async def _answers(client: Any, scenario: str) -> dict[str, Any]:
    classify = await client.post("/v1/classify", json={"scenario": scenario, "texts": ["a fine day"]})
    listed = (await client.get("/v1/scenarios")).json()["scenarios"]
    return {
        "ready": (await client.get("/readyz")).status_code,
        "status": classify.status_code,
        "body": classify.json(),
        "listed": {s["name"]: s for s in listed},
    }


def test_a_listed_scenario_without_an_alias_serves_the_default_alias(
    published_repo: ModelRepository, tmp_path: Path
) -> None:
    repo = ModelRepository(tmp_path / "repo")
    shutil.copytree(published_repo.root, repo.root)
    (repo.scenario_path("frozen_two") / "_aliases" / "production.json").unlink()
    repo.set_alias("frozen_two", "staging", 1)  # staging only, as a staging deployment's repository has

    async def probe(client: Any) -> dict[str, Any]:
        return await _answers(client, "frozen_two")

    got = _serve(repo, probe, default_alias="staging", scenarios=[{"name": "frozen_two"}])
    assert got["status"] == 200, got["body"]
    assert got["ready"] == 200
    assert got["listed"]["frozen_two"]["alias"] == "staging" and got["listed"]["frozen_two"]["version"] == 1


def test_a_listed_scenario_that_cannot_load_is_answered_503_with_the_reason(
    published_repo: ModelRepository,
) -> None:
    async def probe(client: Any) -> dict[str, Any]:
        return await _answers(client, "nope")

    got = _serve(published_repo, probe, scenarios=[{"name": "frozen_two"}, {"name": "nope"}])
    assert got["ready"] == 503 and got["status"] == 503
    message = got["body"]["error"]["message"]
    assert message.startswith("scenario 'nope' is not loaded: cannot resolve 'production': "), message
    assert "has no published version" in message
    assert got["listed"]["nope"]["last_error"] in message  # the same reason /v1/scenarios lists
