"""Replica edges found in review: a pass worker keeps no reference to its last batch while it waits (an
idle replica freed no swapped-out version), the abstain decision is the label the results rank first
(also on a tie), and a scenario list read while a poll forgets a scenario."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref

import pytest

from model_repository import ModelRepository


def test_an_idle_pass_worker_keeps_no_reference_to_its_last_batch(published_repo: ModelRepository) -> None:
    from serving.batching import Batcher, BatchPolicy
    from serving.engine import BaseEncoderCache, EngineSettings, OnnxEngine, Row, load_scenario

    settings = EngineSettings(["CPUExecutionProvider"], ["fp32"], intra_op_threads=1)
    engine = OnnxEngine()
    batcher = Batcher(engine.run, BatchPolicy(max_concurrent_batches=2))

    async def answer_one() -> weakref.ref:
        version = load_scenario(published_repo, "full_three", 1, settings, BaseEncoderCache())
        await batcher.submit(Row(version, "the film was great"))
        return weakref.ref(version)

    try:
        ref = asyncio.run(answer_one())
        deadline = time.monotonic() + 5  # the worker gets back to waiting for its next batch
        while ref() is not None and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.01)
        assert ref() is None, "a waiting worker still holds the version its last batch ran"
    finally:
        batcher.close()


def test_the_abstain_decision_is_the_label_ranked_first_on_a_tie(published_repo: ModelRepository) -> None:
    pytest.importorskip("ray.serve")
    from serving.config import ServingConfig
    from serving.service import ClassifierService

    config = ServingConfig(repository=str(published_repo.root), scenarios=[{"name": "frozen_two"}])

    async def scenario() -> dict:
        service = ClassifierService(config)
        try:
            await asyncio.to_thread(service.registry.poll_once)
            loaded = service.registry.get("frozen_two")
            head = loaded.head

            def tied(features):  # every label the same logit (fp16 logits can coincide)
                out = head(features)
                out[:, :] = out[:, :1]
                return out

            loaded.head = tied
            try:
                answer = await service.classify(
                    "frozen_two", ["the film was great"], None, True, abstain=True
                )
                return answer, list(loaded.manifest.labels)
            finally:
                loaded.head = head
        finally:
            service.batcher.close()

    answer, labels = asyncio.run(scenario())
    assert answer["decisions"][0] == answer["results"][0][0]["label"]
    # ties rank in label order, the lowest index first, as argmax (training's metrics, evaluate) picks
    assert [r["label"] for r in answer["results"][0]] == labels


def test_the_scenario_list_survives_a_poll_forgetting_a_scenario_meanwhile(
    published_repo: ModelRepository,
) -> None:
    from serving.engine import EngineSettings, ScenarioRegistry, ScenarioState

    settings = EngineSettings(["CPUExecutionProvider"], ["fp32"], 1)
    registry = ScenarioRegistry(published_repo, None, "production", settings)

    class ForgetsWhileRead(dict):
        """The poll thread deleting an entry between the reader's listing of keys and its lookups."""

        def __getitem__(self, key):
            self.pop("b", None)
            return super().__getitem__(key)

    states = {name: ScenarioState(name, "production") for name in ("a", "b")}
    registry._states = ForgetsWhileRead(states)
    assert [s.name for s in registry.states()] == ["a", "b"]


@pytest.mark.parametrize(
    ("quantization", "refused"),
    [
        (None, False),
        ("every MatMul int8 (every MatMul int8: accuracy -2.0 points vs fp32, agreement 0.965; ...)", False),
        (
            "feed-forward kept fp32 (every MatMul int8: accuracy -2.0 points vs fp32, agreement 0.90; ...)",
            True,
        ),
    ],
)
def test_shared_int8_refuses_only_a_version_whose_guard_kept_nodes_fp32(
    published_repo: ModelRepository, quantization: str | None, refused: bool
) -> None:
    """The guard records its choice even when, after trying fallbacks, it published every MatMul int8:
    that graph is what the shared int8 graph runs, so such a version may share it."""
    from model_repository import ExportRecord, Parity
    from serving.engine.loader import not_for_this_version

    manifest = published_repo.load_manifest("full_three", 1)
    parity = Parity(
        n_samples=8, max_abs_logit_diff=0.1, agreement=0.9, verified=True, quantization=quantization
    )
    int8 = ExportRecord(precision="int8", path="onnx/model.int8.onnx", size_bytes=1, parity=parity)
    manifest = manifest.model_copy(update={"exports": [*manifest.exports, int8]})
    assert (not_for_this_version(manifest, "int8") is not None) == refused
