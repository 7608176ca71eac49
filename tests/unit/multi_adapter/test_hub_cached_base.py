"""A LoRA version trained on a base named by a hub id (from the offline Hugging Face cache) gets its
multi-adapter graph under the key its manifest names: shared serving found none before, because the
graph was exported from the cache's folder path, which resolves to another key. In a subprocess: the
cache location is read when huggingface_hub is imported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import json, sys
from pathlib import Path
from tests.conftest import write_toy_csv
from training import custom_scenario, make_train_config, train_and_publish
from model_repository import ModelRepository
root = Path(sys.argv[1])
data = root / "data"
write_toy_csv(data / "train.csv", 8, seed=1)
write_toy_csv(data / "validation.csv", 4, seed=2)
scenario = custom_scenario("toy", ["positive", "negative", "neutral"], data, max_length_tokens=16)
config = make_train_config(scenario, "lora", base_model="acme/tiny-rob", output_dir=root / "run", max_steps=2,
                           batch_size=8, early_stopping_patience=None)
repo = ModelRepository(root / "repo")
manifest = train_and_publish(config, repo, export_precisions=["fp32"])
bases = {k: sorted(p.name for p in (root / "repo" / "_bases" / k).iterdir()) for k in
         sorted(p.name for p in (root / "repo" / "_bases").iterdir())}
print(json.dumps({"key": manifest.base_encoder.key, "bases": bases}))
"""


def test_the_shared_graph_of_a_hub_cached_base_is_under_the_versions_key(
    tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    snapshot = tmp_path / "hf" / "models--acme--tiny-rob" / "snapshots" / ("0123456789ab" * 3 + "0123")
    shutil.copytree(tiny_roberta_dir, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(snapshot.name)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    repo_root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        env=env,
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert any(folder.startswith("multi-lora-") for folder in found["bases"].get(found["key"], [])), found
