"""Engine core: a failed pass fails only its own rows, a -inf logit is not answered as a score, and a base
encoder no loaded version holds any more is freed."""

from __future__ import annotations

import gc
import weakref

import numpy as np

from model_repository import ModelRepository


def _settings():
    from serving.engine import EngineSettings

    return EngineSettings(["CPUExecutionProvider"], ["fp32"], intra_op_threads=1)


def test_a_failed_pass_fails_its_own_rows_not_the_groups_other_passes(
    published_repo: ModelRepository,
) -> None:
    from serving.batching import BatchPolicy
    from serving.engine import BaseEncoderCache, OnnxEngine, Row, load_scenario

    version = load_scenario(published_repo, "full_three", 1, _settings(), BaseEncoderCache())
    real_run = version.graph.run

    def wide_passes_fail(input_ids: np.ndarray, mask: np.ndarray, extra: dict | None = None) -> np.ndarray:
        if input_ids.shape[1] > 6:  # stands for a fault on one input: CUDA out of memory, a bad kernel
            raise RuntimeError("this pass failed")
        return real_run(input_ids, mask, extra)

    version.graph.run = wide_passes_fail
    # A budget of 8 tokens: the short row and the long one cannot share a pass.
    engine = OnnxEngine(BatchPolicy(max_batch_tokens=8))
    short, long = Row(version, "good"), Row(version, "a much longer text that needs a wide pass")
    results = engine.run([short, long]).results
    assert isinstance(results[1], RuntimeError)
    assert not isinstance(results[0], Exception), f"the short row's own pass ran, yet: {results[0]!r}"


def test_a_minus_infinity_logit_is_refused_not_answered(published_repo: ModelRepository) -> None:
    from serving.engine import BaseEncoderCache, OnnxEngine, Row, load_scenario
    from serving.errors import ScoresNotFiniteError

    version = load_scenario(published_repo, "full_three", 1, _settings(), BaseEncoderCache())
    real_run = version.graph.run

    def one_column_overflows(
        input_ids: np.ndarray, mask: np.ndarray, extra: dict | None = None
    ) -> np.ndarray:
        logits = real_run(input_ids, mask, extra)
        logits[:, 1] = -np.inf  # an fp16 logit under -65504; the softmax of the row is still finite
        return logits

    version.graph.run = one_column_overflows
    (result,) = OnnxEngine().run([Row(version, "the film was great")]).results
    assert isinstance(result, ScoresNotFiniteError), f"answered with raw scores {result!r}"


def test_a_base_encoder_no_version_holds_is_freed(published_repo: ModelRepository) -> None:
    from serving.engine import BaseEncoderCache, load_scenario

    bases = BaseEncoderCache()
    version = load_scenario(published_repo, "frozen_two", 1, _settings(), bases)
    assert version.base_graph is not None
    session = weakref.ref(version.base_graph)
    again = load_scenario(published_repo, "frozen_three", 1, _settings(), bases)
    assert again.base_graph is session(), "two frozen versions on one base share its session"
    del version, again
    gc.collect()
    assert session() is None, "the cache kept a base session that no loaded version holds"
