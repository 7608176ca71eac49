"""GPU readiness on a CPU machine: providers are checked, never silently dropped; IO binding runs on CPU."""

from __future__ import annotations

import logging

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

from serving.config import ServingConfig  # noqa: E402
from serving.engine import OnnxEngine, Row, choose_providers, precision_order  # noqa: E402
from serving.engine.providers import CUDA, check_session_providers, installed_ort  # noqa: E402
from serving.errors import ModelLoadError  # noqa: E402
from serving.metrics import ServingMetrics  # noqa: E402

HAS_CUDA = CUDA in ort.get_available_providers()
cpu_only = pytest.mark.skipif(HAS_CUDA, reason="checks what a machine without CUDA does")


@cpu_only
def test_asking_for_cuda_without_it_fails_fast_naming_the_provider_and_cause() -> None:
    with pytest.raises(ModelLoadError) as info:
        choose_providers([CUDA, "CPUExecutionProvider"], num_gpus=0)
    message = str(info.value)
    assert CUDA in message
    # The cause names the package that is installed here and what to install instead.
    assert "onnxruntime-gpu" in message and "onnxruntime==" in message
    assert installed_ort()["onnxruntime"] in message


@cpu_only
def test_a_replica_given_a_gpu_never_falls_back_to_cpu_silently() -> None:
    with pytest.raises(ModelLoadError, match=r"num_gpus=0\.5 but CUDAExecutionProvider"):
        choose_providers(None, num_gpus=0.5)
    assert choose_providers(None, num_gpus=0) == ["CPUExecutionProvider"]


def test_a_gpu_replica_configured_for_the_cpu_provider_alone_is_refused() -> None:
    # num_gpus reserves a GPU from Ray; ort_providers [CPU] would leave it idle while the replica runs on CPU.
    for num_gpus in (1.0, 0.5):
        with pytest.raises(ModelLoadError, match=r"reserves a GPU.*runs nothing on it.*num_gpus: 0"):
            choose_providers(["CPUExecutionProvider"], num_gpus=num_gpus)
    assert choose_providers(["CPUExecutionProvider"], num_gpus=0) == ["CPUExecutionProvider"]


def test_a_gpu_replica_with_the_cpu_provider_listed_first_is_refused() -> None:
    # ORT gives each node to the first provider listed that runs it: with CPU first, CUDA gets nothing and the
    # GPU Ray reserved sits idle. Refused whatever this build offers (the order is wrong on any machine).
    with pytest.raises(
        ModelLoadError, match=r"reserves a GPU.*runs nothing on it.*put CUDAExecutionProvider first"
    ):
        choose_providers(["CPUExecutionProvider", "CUDAExecutionProvider"], num_gpus=1)


def test_a_session_that_dropped_a_requested_provider_is_refused() -> None:
    # What ORT does when CUDA's libraries do not load: the session runs, on the CPU provider only.
    with pytest.raises(ModelLoadError, match=r"model.fp16.onnx: asked for CUDAExecutionProvider.*runs on"):
        check_session_providers(["CPUExecutionProvider"], [CUDA, "CPUExecutionProvider"], "x/model.fp16.onnx")
    check_session_providers(["CPUExecutionProvider"], ["CPUExecutionProvider"], "ok")  # nothing dropped


def test_precision_auto_says_what_it_picked_and_fp16_on_cpu_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="labelwise.serving"):
        assert precision_order("auto", ["CPUExecutionProvider"]) == ["int8", "fp32"]
        assert precision_order("auto", [CUDA, "CPUExecutionProvider"]) == ["fp16", "fp32"]
    said = [r.getMessage() for r in caplog.records]
    assert any("precision auto: int8 on CPUExecutionProvider" in m for m in said), said
    assert any("precision auto: fp16 on CUDAExecutionProvider" in m for m in said), said
    with pytest.raises(ModelLoadError, match="precision fp16 on a replica without a GPU"):
        precision_order("fp16", ["CPUExecutionProvider"])
    assert precision_order("fp16", [CUDA, "CPUExecutionProvider"]) == ["fp16", "fp32"]


@cpu_only
def test_service_start_refuses_fp16_on_a_cpu_replica(tmp_path) -> None:
    pytest.importorskip("ray")
    from serving.service import ClassifierService

    with pytest.raises(ModelLoadError, match="fp16"):
        ClassifierService(ServingConfig(repository=str(tmp_path), precision="fp16"))
    with pytest.raises(ModelLoadError, match=CUDA):
        ClassifierService(ServingConfig(repository=str(tmp_path), ort_providers=[CUDA]))


def test_io_binding_pass_equals_a_plain_session_run(loaded_scenarios: dict) -> None:
    """The bound path (inputs copied once, output bound and fetched once) gives session.run's numbers."""
    for name in ("full_three", "frozen_two"):
        loaded = loaded_scenarios[name]
        graph = loaded.graph or loaded.base_graph
        assert graph.io_binding and graph.device == "cpu" and graph.provider == "CPUExecutionProvider"
        ids, mask = loaded.tokenizer.pad(
            loaded.tokenizer.encode_ids(["the film was great", "ok", "my order was awful today"])[0]
        )
        bound = graph.run(ids, mask)
        names = [i.name for i in graph.session.get_inputs()]
        plain = graph.session.run(None, {n: {"input_ids": ids, "attention_mask": mask}[n] for n in names})[0]
        assert bound.dtype == np.float32 and bound.shape == plain.shape
        np.testing.assert_allclose(bound, plain, rtol=0, atol=1e-6)


def test_engine_metrics_and_scenarios_carry_the_provider(loaded_scenarios: dict) -> None:
    from serving.batching import BatchItem, BatchPolicy, run_items

    metrics = ServingMetrics()
    metrics.provider = loaded_scenarios["full_three"].provider
    assert metrics.provider == "CPUExecutionProvider"
    engine = OnnxEngine(BatchPolicy(max_batch_tokens=4096))
    items = [BatchItem(Row(s, "the app was lovely"), 0.0) for s in loaded_scenarios.values()]
    run_items(items, engine.run, metrics)
    text = metrics.render().decode()
    for name in ("labelwise_forward_rows", "labelwise_inference_seconds", "labelwise_queue_wait_seconds"):
        lines = [ln for ln in text.splitlines() if ln.startswith(f"{name}_count")]
        assert lines and all('provider="CPUExecutionProvider"' in ln for ln in lines), (name, lines)
