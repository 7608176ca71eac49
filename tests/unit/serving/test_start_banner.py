"""The line `labelwise serve` prints once the app runs states each replica's CPUs, pass workers and ONNX
Runtime threads as the plan set them (on a 2-core machine: 2 pass workers of 1 thread, not 2 threads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from labelwise.server import plan_server, replica_sizing
from serving import ServingConfig
from serving.local_ray import local_cores


def _sizing(tmp_path: Path, **fields: object) -> str:
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"repository": str(tmp_path), **fields}), encoding="utf-8")
    return replica_sizing(ServingConfig(**plan_server(config).args))


def test_the_default_plan_is_stated_as_it_runs(tmp_path: Path) -> None:
    cores = local_cores()
    # plan_server's rule (docs/serving.md): from 2 cores, pass workers of half the cores each; on 2-3
    # cores single-threaded, one per core.
    workers, threads = (1, cores) if cores < 2 else (cores, 1) if cores < 4 else (2, cores // 2)
    plural = "s" if cores != 1 else ""
    assert _sizing(tmp_path) == (
        f"1 replica x {cores} CPU{plural}: {workers} pass worker{'s' if workers != 1 else ''} x "
        f"{threads} ORT thread{'s' if threads != 1 else ''}"
    )


def test_cpus_from_the_environment_and_a_separate_ingress_are_stated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABELWISE_NUM_CPUS", "1")
    assert _sizing(tmp_path) == "1 replica x 1 CPU: 1 pass worker x 1 ORT thread"
    monkeypatch.delenv("LABELWISE_NUM_CPUS")
    assert (
        _sizing(tmp_path, num_cpus=0.5, ingress_mode="separate", ingress_num_cpus=0.25)
        == "1 replica x 0.5 CPUs: 1 pass worker x 1 ORT thread, ingress 0.25 CPUs"
    )
    assert (
        replica_sizing(
            ServingConfig(num_replicas="auto", num_cpus=4, max_concurrent_batches=2, ort_intra_op_threads=2)
        )
        == "autoscaled replicas x 4 CPUs: 2 pass workers x 2 ORT threads"
    )
