"""Tiny versions published by the real pipeline (train_and_publish -> export_into), opened by the engine."""

from __future__ import annotations

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
