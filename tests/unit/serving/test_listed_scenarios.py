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


def test_a_scenario_skipped_in_serve_all_mode_is_named_by_every_compat_route_as_by_v1(
    published_repo: ModelRepository, tmp_path: Path
) -> None:
    """KServe v2's model metadata, ready and versioned routes and TEI's /info answered 'unknown model' for
    a scenario the server lists as skipped (versions, no alias), where /v1/classify (and the routes that
    classify through it) says it is not served and how to serve it."""
    repo = ModelRepository(tmp_path / "repo")
    shutil.copytree(published_repo.root, repo.root)
    (repo.scenario_path("frozen_two") / "_aliases" / "production.json").unlink()
    v2_infer = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a fine day"]}]}
    header = {"X-Labelwise-Scenario": "frozen_two"}

    async def probe(client: Any) -> dict[str, Any]:
        answers = {
            "v1": await client.post("/v1/classify", json={"scenario": "frozen_two", "texts": ["a fine day"]}),
            "v2 metadata": await client.get("/v2/models/frozen_two"),
            "v2 version": await client.get("/v2/models/frozen_two/versions/1"),
            "v2 ready": await client.get("/v2/models/frozen_two/ready"),
            "v2 infer": await client.post("/v2/models/frozen_two/infer", json=v2_infer),
            "v2 version infer": await client.post("/v2/models/frozen_two/versions/1/infer", json=v2_infer),
            "infinity": await client.post("/classify", json={"model": "frozen_two", "input": ["a fine day"]}),
            "tei predict": await client.post("/predict", json={"inputs": "a fine day"}, headers=header),
            "tei info": await client.get("/info", headers=header),
            "v2 unknown": await client.get("/v2/models/nope"),
        }
        return {name: (r.status_code, r.json()) for name, r in answers.items()}

    got = _serve(repo, probe)
    said = "scenario 'frozen_two' is not served: it has no 'production' alias; promote a version to it"
    assert got["v1"][0] == 404 and got["v1"][1]["error"]["message"].startswith(said), got["v1"]
    for name in ("v2 metadata", "v2 version", "v2 ready", "v2 infer", "v2 version infer"):
        assert got[name] == (404, {"error": got["v1"][1]["error"]["message"]}), (name, got[name])
    assert got["infinity"][0] == 400 and got["infinity"][1]["error"]["message"].startswith(said), got
    for name in ("tei predict", "tei info"):
        assert got[name][0] == 404 and got[name][1]["error"].startswith(said), (name, got[name])
    assert got["v2 unknown"][0] == 404 and got["v2 unknown"][1]["error"].startswith("unknown model"), got
