"""The seed's design, kept as a baseline: FastAPI + a transformers text-classification pipeline.

One request at a time (a global lock around the pipeline), torch fp32, the pipeline's own defaults
for a list of texts, no ONNX, no batching across requests. It serves one published version of the
model repository, loaded from its torch weights (full; LoRA merged into the base; frozen head on the
base), and answers the same POST /v1/classify body as labelwise so that one load generator drives both.

    python -m loadtests.baselines.seed_server --version-dir var/bench-repository/s/1 --port 8010
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field


class Body(BaseModel):
    """The subset of labelwise's POST /v1/classify body the seed understood."""

    scenario: str = Field(description="Must be the one scenario this baseline serves.")
    texts: list[str] = Field(min_length=1, description="Texts to classify.")
    top_k: int | None = Field(default=None, ge=1, description="Labels per text; None returns all.")


def load_model(version_dir: Path) -> tuple[Any, Any, Any]:
    """The version's torch sequence classifier (fp32, eval, LoRA merged), its tokenizer and manifest."""
    import torch

    from model_repository import ModelRepository
    from training import load_published_model

    # <root>/<scenario>/<version>: the training package resolves the base and verifies checksums.
    repo = ModelRepository(version_dir.parent.parent)
    model, tokenizer, manifest = load_published_model(repo, version_dir.parent.name, int(version_dir.name))
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.to(dtype=torch.float32).eval()
    return model, tokenizer, manifest


def create_app(version_dir: Path, threads: int | None = None) -> Any:
    import torch
    from fastapi import FastAPI, HTTPException
    from transformers import pipeline

    if threads:
        torch.set_num_threads(threads)
    model, tokenizer, manifest = load_model(version_dir)
    pipe = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")
    lock = threading.Lock()  # the seed served one request at a time

    app = FastAPI(title="seed baseline")

    @app.post("/v1/classify")
    def classify(body: Body) -> dict[str, Any]:  # sync: FastAPI runs it in its thread pool
        if body.scenario != manifest.scenario:
            raise HTTPException(404, f"this baseline serves {manifest.scenario!r} only")
        with lock, torch.inference_mode():
            out = pipe(
                body.texts,
                top_k=body.top_k or len(manifest.labels),
                truncation=True,
                max_length=manifest.max_length_tokens,
            )
        return {"scenario": manifest.scenario, "version": manifest.version, "results": out}

    @app.get("/readyz")
    def readyz() -> dict[str, bool]:
        return {"ready": True}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.baselines.seed_server", description=__doc__)
    parser.add_argument("--version-dir", type=Path, required=True, help="<repository>/<scenario>/<version>")
    parser.add_argument("--port", type=int, default=8010)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads; 0 = torch default")
    args = parser.parse_args(argv)
    import uvicorn

    app = create_app(args.version_dir, args.threads or None)
    # 127.0.0.1 only; one process, as the seed ran it.
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
