"""Tiny versions published by the real pipeline (train_and_publish -> export_into), opened by the engine."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from model_repository import ModelRepository
from tests.conftest import write_toy_csv

# scenario -> (strategy, labels present in the toy data)
SCENARIOS = {
    "full_three": ("full", ("positive", "negative", "neutral")),
    "frozen_three": ("frozen", ("positive", "negative", "neutral")),
    "frozen_two": ("frozen", ("negative", "positive")),
}


class RegistryClock:
    """The clock ScenarioRegistry reads its refusal windows from, moved by the test alone: no pause of a
    loaded machine lands a poll on the other side of a window."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def registry_clock(monkeypatch: pytest.MonkeyPatch) -> RegistryClock:
    """Stands in for the `time` module serving.engine.registry reads (monotonic() only), not the
    process's clock."""
    import serving.engine.registry as registry_module

    clock = RegistryClock()
    monkeypatch.setattr(registry_module, "time", clock)
    return clock


@pytest.fixture(scope="session")
def published_repo(tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    """A repository holding version 1 of every scenario above, with the production alias on it; a few
    optimizer steps each: the engine needs real graphs, not accuracy."""
    pytest.importorskip("onnxruntime", reason="the serving extra is not installed")
    from training import custom_scenario, make_train_config, train_and_publish

    work = tmp_path_factory.mktemp("serving-unit")
    repo = ModelRepository(work / "repo")
    for seed, (name, (strategy, labels)) in enumerate(SCENARIOS.items(), start=1):
        data = work / "data" / name
        write_toy_csv(data / "train.csv", 8, seed=seed, labels=labels)
        write_toy_csv(data / "validation.csv", 4, seed=seed + 100, labels=labels)
        config = make_train_config(
            custom_scenario(name, list(labels), data, max_length_tokens=16),
            strategy,
            base_model=str(tiny_roberta_dir),
            output_dir=work / "runs" / name,
            max_steps=3,
            batch_size=8,
            early_stopping_patience=None,
            learning_rate=1e-2,
            seed=seed,
        )
        manifest = train_and_publish(config, repo, export_precisions=["fp32"])
        repo.set_alias(name, "production", manifest.version)
    return repo


@pytest.fixture(scope="session")
def loaded_scenarios(published_repo: ModelRepository) -> dict:
    """{name: LoadedScenario} of version 1 of each scenario."""
    from serving.engine import BaseEncoderCache, EngineSettings, load_scenario

    settings = EngineSettings(["CPUExecutionProvider"], ["fp32"], intra_op_threads=1)
    bases = BaseEncoderCache()
    return {name: load_scenario(published_repo, name, 1, settings, bases) for name in SCENARIOS}


async def read_asgi_body(receive: Any) -> bytes:
    """The whole request body of an ASGI request, for the test apps that stand in for FastAPI."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def publish_tiny(
    repo: ModelRepository,
    work: Path,
    base: Path,
    name: str,
    labels: tuple[str, ...],
    seed: int,
    *,
    strategy: str = "lora",
    precisions: tuple[str, ...] = ("fp32",),
    **overrides: Any,
) -> int:
    """Train a few steps of one scenario on a tiny base and publish it as train_and_publish does; its
    version. The learning rate is large so that a LoRA adapter is far from zero: a wrong one would show."""
    from training import custom_scenario, make_train_config, train_and_publish

    data = work / "data" / f"{name}-{seed}"
    write_toy_csv(data / "train.csv", 8, seed=seed, labels=labels)
    write_toy_csv(data / "validation.csv", 4, seed=seed + 100, labels=labels)
    settings: dict[str, Any] = {
        "max_steps": 3,
        "batch_size": 8,
        "early_stopping_patience": None,
        "learning_rate": 5e-2,
        "seed": seed,
        **overrides,
    }
    config = make_train_config(
        custom_scenario(name, list(labels), data, max_length_tokens=16),
        strategy,
        base_model=str(base),
        output_dir=work / "runs" / f"{name}-{seed}",
        **settings,
    )
    return train_and_publish(config, repo, export_precisions=list(precisions)).version


def engine_settings(mode: str, precisions: tuple[str, ...] = ("fp32",), table_rank: int = 8) -> Any:
    """EngineSettings of a one-thread CPU replica in the given lora_mode."""
    from serving.engine import EngineSettings

    return EngineSettings(
        ["CPUExecutionProvider"], list(precisions), 1, lora_mode=mode, lora_table_rank=table_rank
    )


def load_version(repo: ModelRepository, name: str, version: int, settings: Any, adapters: Any = None) -> Any:
    """The version loaded as a replica loads it (load_scenario; a fresh base cache, and a fresh
    multi-adapter cache unless one is given)."""
    from serving.engine import BaseEncoderCache, MultiAdapterCache, load_scenario

    cache = MultiAdapterCache() if adapters is None else adapters
    return load_scenario(repo, name, version, settings, BaseEncoderCache(), cache)


def engine_logits(loaded: Any, texts: list[str]) -> Any:
    """Logits [texts, labels] of a loaded version through OnnxEngine, one row per text."""
    import numpy as np

    from serving.engine import OnnxEngine, Row

    return np.stack([r.logits for r in OnnxEngine().run([Row(loaded, t) for t in texts]).results])


def serve_in_process(repo: ModelRepository, check: Callable[[Any], Awaitable[None]], **settings: Any) -> None:
    """check(an httpx client on the app of a real ClassifierService over `repo`, serving frozen_two (or the
    `scenarios` setting) with `settings`), in-process: no Ray, no socket."""
    pytest.importorskip("ray.serve")
    import httpx

    from serving.api import create_api
    from serving.config import ServingConfig
    from serving.service import ClassifierService

    config = ServingConfig(repository=str(repo.root), **{"scenarios": [{"name": "frozen_two"}], **settings})

    async def scenario() -> None:
        service = ClassifierService(config)
        await asyncio.to_thread(service.registry.poll_once)
        app = create_api(service, config, service.metrics)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await check(client)

    asyncio.run(scenario())
