"""A base encoder exported again (docs/artifacts.md: move `_bases/<key>/<folder>` away, re-export) is
opened afresh for the versions loaded after it; a version already serving keeps the session it holds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from model_repository import ModelRepository, file_sha256, layout


def test_a_reexported_base_gets_a_new_session_and_the_same_base_shares_one(
    published_repo: ModelRepository, tmp_path: Path
) -> None:
    onnx = pytest.importorskip("onnx")
    from serving.engine import BaseEncoderCache, EngineSettings
    from serving.engine.loader import load_scenario

    repo = ModelRepository(tmp_path / "repo")
    shutil.copytree(published_repo.root, repo.root)
    settings = EngineSettings(["CPUExecutionProvider"], ["fp32"], intra_op_threads=1)
    bases = BaseEncoderCache()
    first = load_scenario(repo, "frozen_two", 1, settings, bases)
    again = load_scenario(repo, "frozen_two", 1, settings, bases)
    assert again.base_graph is first.base_graph  # one session per base, shared

    # The same graph exported again: other bytes (a doc string), a new checksum in base.json.
    manifest = repo.load_manifest("frozen_two", 1)
    folder = repo.base_path(manifest.base_encoder.key, first.base_folder)
    graph_path = folder / layout.ENCODER_FILE
    model = onnx.load(str(graph_path))
    model.doc_string = "exported again"
    onnx.save(model, str(graph_path))
    info_path = folder / layout.BASE_INFO_FILE
    info = json.loads(info_path.read_text())
    info["files"][layout.ENCODER_FILE].update(
        sha256=file_sha256(graph_path), size_bytes=graph_path.stat().st_size
    )
    info_path.write_text(json.dumps(info))

    after = load_scenario(repo, "frozen_two", 1, settings, bases)
    assert after.base_graph is not first.base_graph  # the new base, not the session of the old one
