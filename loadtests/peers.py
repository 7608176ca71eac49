"""Infinity as a peer in `labelwise bench`: its model folders, its venv, how to start it.

Infinity (infinity-emb 0.0.78, optimum engine) lives in its own venv made by `make peers`
(var/peers/infinity); it is never imported here, only started as a subprocess on 127.0.0.1.

What its optimum engine loads (infinity_emb/transformer/utils_optimum.py in 0.0.78): a local folder
with config.json (id2label gives the label names), the tokenizer, and `*.onnx` files found
recursively. On CPU it prefers a file whose name contains "quantize" unless
INFINITY_ONNX_DO_NOT_PREFER_QUANTIZED is set, then "model.onnx". Unless INFINITY_ONNX_DISABLE_OPTIMIZE
is set it then runs ORTOptimizer with OptimizationConfig(optimization_level=99, optimize_for_gpu=False,
fp16=False, optimize_with_onnxruntime_only=False); with the optimum 2.x that pip resolves for it the
last argument no longer exists, so that step fails and Infinity logs a warning and serves the raw
export. The bench therefore runs that optimisation itself, with the same settings less the removed
argument, and tells Infinity not to repeat it. Infinity hands optimum the file's path as globbed under
the model id, and optimum 2.x only accepts a path relative to the folder, so Infinity runs with the
model folder as its working directory and `--model-id .`.

The two folders, built from the same published version labelwise serves:

- fp32/: `model.onnx`, optimum's export of the version's torch weights (LoRA merged), optimised as
  Infinity would (ORT level 99 for CPU);
- int8/: `model_quantized.onnx`, byte for byte the int8 graph labelwise serves (already optimised
  before it was quantised).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import BenchError

INFINITY_SPEC = "infinity-emb[server,optimum]==0.0.78"
INFINITY_VARIANTS = ("fp32", "int8")
_MARKER = ".peer-model.json"


def infinity_venv(peers_dir: Path) -> Path:
    return peers_dir / "infinity"


def infinity_missing(peers_dir: Path) -> str | None:
    """None when `make peers` made Infinity's venv and it can run, else why the bench runs without it."""
    venv = infinity_venv(peers_dir)
    script = venv / "bin" / "infinity_emb"
    if not (venv / ".installed").is_file() or not script.is_file():
        return f"Infinity is not installed in {venv} (`make peers` installs {INFINITY_SPEC})"
    if not os.access(script, os.X_OK):
        return f"{script} is not executable (rerun `make peers`)"
    # A venv outlives the Python it was made from (upgraded or removed): its python link and the #! line
    # of its scripts then point at nothing, and starting the script fails as if the script were missing.
    for interpreter in (venv / "bin" / "python", _shebang_interpreter(script)):
        if interpreter is not None and not os.access(interpreter, os.X_OK):
            return (
                f"Infinity's venv {venv} is broken: its interpreter {interpreter} is missing or not "
                "executable (its base Python was upgraded or removed?); rerun `make peers`"
            )
    return None


def _shebang_interpreter(script: Path) -> Path | None:
    """The absolute interpreter path on a script's #! line, if it has one."""
    with open(script, "rb") as fh:
        first = fh.readline(4096)
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    return Path(words[0]) if words and words[0].startswith("/") else None


def prepare_infinity_models(
    repository: str | Path, scenario: str, out_dir: Path, say: Callable[[str], None] = print
) -> dict[str, Path]:
    """fp32/ and (when the version has an int8 graph) int8/ folders for Infinity, cached per version."""
    from model_repository import ModelRepository, layout

    repo = ModelRepository(repository)
    version = repo.resolve(scenario, "production")
    repo.verify(scenario, version)  # checksums first, as serving does
    version_dir = repo.version_path(scenario, version)
    root = (out_dir / f"{scenario}-v{version}").resolve()
    plan = {
        "scenario": scenario,
        "version": version,
        "repository": str(Path(repository).resolve()),
        "fp32": "optimum export, ORT level 99",
    }
    folders = {"fp32": root / "fp32"}
    int8_graph = version_dir / layout.graph_file("int8")
    if int8_graph.is_file():
        folders["int8"] = root / "int8"
    marker = root / _MARKER
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == plan:
        say(f"infinity: reusing its model folders in {root}")
        return folders
    shutil.rmtree(root, ignore_errors=True)
    say(f"infinity: exporting {scenario} v{version} to fp32 ONNX with optimum for Infinity")
    export_fp32(repo, scenario, version, folders["fp32"])
    if "int8" in folders:
        copy_int8(folders["fp32"], int8_graph, folders["int8"])
    marker.write_text(json.dumps(plan), encoding="utf-8")
    return folders


def export_fp32(repo: Any, scenario: str, version: int, out: Path) -> None:
    """optimum's text-classification export of the version's torch model: model.onnx, config, tokenizer."""
    import tempfile

    from optimum.exporters.onnx import main_export

    from training import load_published_model

    model, tokenizer, _manifest = load_published_model(repo, scenario, version)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    with tempfile.TemporaryDirectory(prefix="infinity-export-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        main_export(
            tmp,
            output=str(out),
            task="text-classification",
            library_name="transformers",
            do_validation=False,
            local_files_only=True,
        )
    if not (out / "model.onnx").is_file() or not (out / "config.json").is_file():
        raise BenchError(f"optimum wrote no model.onnx and config.json under {out}")
    optimize_like_infinity(out / "model.onnx")


def optimize_like_infinity(graph: Path) -> None:
    """Replace graph with what Infinity 0.0.78's optimize_model makes of it on CPU (ORT level 99)."""
    import tempfile

    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import OptimizationConfig
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(graph.parent))
    opt = OptimizationConfig(optimization_level=99, optimize_for_gpu=False, fp16=False)
    with tempfile.TemporaryDirectory(prefix="infinity-optimize-", dir=graph.parent) as tmp:
        ORTOptimizer([graph], config=config).optimize(opt, save_dir=tmp, file_suffix="")
        produced = Path(tmp) / graph.name
        if not produced.is_file():
            raise BenchError(f"ORTOptimizer wrote no {graph.name} under {tmp}")
        shutil.move(produced, graph)


def copy_int8(fp32_folder: Path, int8_graph: Path, out: Path) -> None:
    """The int8 graph labelwise serves, beside the same config and tokenizer files."""
    out.mkdir(parents=True, exist_ok=True)
    for item in fp32_folder.iterdir():
        if item.is_file() and item.suffix != ".onnx" and item.name != _MARKER:
            shutil.copy2(item, out / item.name)
    shutil.copy2(int8_graph, out / "model_quantized.onnx")


def infinity_command(peers_dir: Path, served_name: str, port: int) -> list[str]:
    """Run it with cwd = the model folder: `--model-id .` (see infinity_cwd)."""
    return [
        str(infinity_venv(peers_dir).resolve() / "bin" / "infinity_emb"), "v2",
        "--model-id", ".", "--served-model-name", served_name,
        "--engine", "optimum", "--device", "cpu", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip


def infinity_env(peers_dir: Path, variant: str) -> dict[str, str]:
    """Offline, no telemetry, caches under the peers folder; both graphs are already optimised."""
    home = (peers_dir / "infinity-home").resolve()
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(home / "hf"),
        "INFINITY_HOME": str(home),
        "DO_NOT_TRACK": "1",
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        "INFINITY_LOG_LEVEL": "warning",
        # Its warm-up sends 512-token rows; with MiniLM's 512 positions plus two special tokens
        # the pipeline (which does not truncate) fails at start-up, so it is skipped.
        "INFINITY_MODEL_WARMUP": "false",
    }
    env["INFINITY_ONNX_DISABLE_OPTIMIZE"] = "true"
    if variant == "fp32":
        env["INFINITY_ONNX_DO_NOT_PREFER_QUANTIZED"] = "true"
    # The bench's own venv must not leak into the peer's interpreter (Python ignores an empty PYTHONPATH).
    env["PYTHONPATH"] = ""
    env["VIRTUAL_ENV"] = str(infinity_venv(peers_dir).resolve())
    return env
