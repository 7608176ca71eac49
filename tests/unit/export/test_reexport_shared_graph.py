"""`labelwise export` of a LoRA version gives its base the multi-adapter graph of each precision it exports,
as publish does: lora_mode shared then serves the child in those precisions, not fp32 or nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_repository import ModelRepository, layout
from tests.unit.serving.conftest import engine_logits, engine_settings, load_version, publish_tiny

pytest.importorskip("optimum.exporters.onnx", reason="the training extra is not installed")
pytest.importorskip("onnxruntime")

LABELS = ("negative", "positive")
TEXTS = ["the film was great today", "my order was awful again", "ok"]


@pytest.fixture(scope="module")
def repo(tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    """reviews v1, a LoRA version published without ONNX (--export none)."""
    work = tmp_path_factory.mktemp("reexport-shared")
    repository = ModelRepository(work / "repo")
    assert publish_tiny(repository, work, tiny_roberta_dir, "reviews", LABELS, 1, precisions=()) == 1
    return repository


@pytest.fixture(scope="module")
def fp32_child(repo: ModelRepository) -> Any:
    """`labelwise export -s reviews -v 1 -p fp32`: its manifest."""
    from training.export.reexport import reexport_version

    return reexport_version(repo, "reviews", 1, ["fp32"])


def test_a_version_published_without_onnx_is_served_shared_once_exported(
    repo: ModelRepository, fp32_child: Any
) -> None:
    assert repo.has_base(fp32_child.base_encoder.key, layout.multi_adapter_folder(8, "fp32"))
    shared = load_version(repo, "reviews", fp32_child.version, engine_settings("shared"))
    merged = load_version(repo, "reviews", fp32_child.version, engine_settings("merged"))
    assert np.abs(engine_logits(shared, TEXTS) - engine_logits(merged, TEXTS)).max() < 1e-4


def test_an_added_precision_is_served_shared_in_that_precision(
    repo: ModelRepository, fp32_child: Any
) -> None:
    from training.export.reexport import reexport_version

    # A GPU replica's graph added on a CPU machine (fp16 graphs are checked on the CPU provider here).
    child = reexport_version(repo, "reviews", fp32_child.version, ["fp16"])
    assert sorted(e.precision for e in child.exports) == ["fp16", "fp32"]
    assert repo.has_base(child.base_encoder.key, layout.multi_adapter_folder(8, "fp16"))
    loaded = load_version(repo, "reviews", child.version, engine_settings("shared", ("fp16", "fp32")))
    assert loaded.precision == "fp16"
    assert loaded.shared is not None and loaded.shared.folder == layout.multi_adapter_folder(8, "fp16")


def test_cli_export_of_held_precisions_publishes_nothing_unless_the_shared_graph_is_missing(
    repo: ModelRepository, fp32_child: Any, tmp_path: Path
) -> None:
    """`labelwise export -p fp32` of a LoRA version holding fp32 publishes nothing while its base has the
    multi-adapter graph; without it (the recovery publish's log names) the re-export exports it, and says
    where."""
    import shutil

    from typer.testing import CliRunner

    from labelwise.cli import app

    copy = ModelRepository(tmp_path / "repo")
    shutil.copytree(repo.root, copy.root)
    versions = copy.list_versions("reviews")
    args = ["export", "-s", "reviews", "-v", str(fp32_child.version), "-p", "fp32", "-r", str(copy.root)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "nothing to export" in result.output, result.output
    assert copy.list_versions("reviews") == versions
    graph = copy.base_path(fp32_child.base_encoder.key, layout.multi_adapter_folder(8, "fp32"))
    shutil.move(graph, tmp_path / "old-graph")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "published reviews" in result.output, result.output
    assert len(copy.list_versions("reviews")) == len(versions) + 1
    # and says so: the shared graph's path and precision (the training logger's INFO line went unseen)
    folder = f"{copy.root}/{layout.BASES_DIR}/{fp32_child.base_encoder.key}"
    graph_path = f"{folder}/{layout.multi_adapter_folder(8, 'fp32')}/{layout.MULTI_ADAPTER_FILE}"
    said = [line for line in result.stderr.splitlines() if "exported to" in line]
    assert len(said) == 1, result.stderr
    assert said[0].startswith(f"[export] multi-adapter graph fp32: exported to {graph_path}, max |Δlogit|")
    assert copy.has_base(fp32_child.base_encoder.key, layout.multi_adapter_folder(8, "fp32"))
