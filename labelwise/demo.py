"""The offline demo (`make demo`): train two scenarios with the packaged MiniLM, publish, serve on 127.0.0.1.

Bounded mode for CI and tests: `--smoke` or LABELWISE_DEMO_EXIT_AFTER_S=<seconds> sends real requests,
then exits instead of serving until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "training" / "sample_data"
# scenario -> (labels, strategy): one LoRA scenario with its merged graph, one frozen head on the shared base.
DEMO_SCENARIOS = {
    "support_ticket": (["billing", "technical", "account"], "lora"),
    "review_sentiment": (["positive", "negative"], "frozen"),
}
# Per strategy, for ~100 sample rows per scenario on 2 CPU cores: a frozen linear head on MiniLM's pooled
# features needs a large step size to move in a few dozen steps; LoRA learns fast at a moderate one.
# (learning rate, epochs); measured accuracies and times are in docs/serving.md.
DEMO_TRAINING = {"frozen": (1e-1, 5.0), "lora": (5e-3, 5.0)}
EXAMPLES = {
    "support_ticket": ["I was charged twice this month", "The app crashes when I upload a photo"],
    "review_sentiment": ["Lovely product, it works perfectly", "It broke after one day, awful"],
}


def _log(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def train_scenarios(repository: Path, epochs: float | None) -> dict[str, float | None]:
    """Train and publish each demo scenario not yet published; return its validation accuracy."""
    from model_repository import ModelRepository
    from training import custom_scenario, make_train_config, train_and_publish

    repo = ModelRepository(repository)
    accuracy: dict[str, float | None] = {}
    for name, (labels, strategy) in DEMO_SCENARIOS.items():
        if "production" in (repo.aliases(name) if repo.scenario_path(name).is_dir() else {}):
            manifest = repo.load_manifest(name, repo.resolve(name))
            accuracy[name] = manifest.metrics.get("accuracy")
            _log(
                f"{name}: already published (production -> v{manifest.version}); "
                f"delete {repository} to retrain"
            )
            continue
        start = time.perf_counter()
        scenario = custom_scenario(name, labels, SAMPLE_DATA / name, max_length_tokens=64)
        lr, default_epochs = DEMO_TRAINING[strategy]
        config = make_train_config(
            scenario,
            strategy,
            base_model="minilm",
            num_train_epochs=epochs or default_epochs,
            learning_rate=lr,
            seed=0,
        )
        manifest = train_and_publish(config, repo, export_precisions=["fp32", "int8"], alias="production")
        accuracy[name] = manifest.metrics.get("accuracy")
        _log(
            f"{name}: {strategy} v{manifest.version} published in {time.perf_counter() - start:.0f}s "
            f"(validation accuracy {accuracy[name]:.3f})"
        )
    return accuracy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--repository", default=os.environ.get("LABELWISE_DEMO_REPOSITORY", "var/demo-repository")
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("LABELWISE_DEMO_PORT", "8000")))
    parser.add_argument(
        "--epochs",
        type=float,
        default=float(os.environ["LABELWISE_DEMO_EPOCHS"]) if "LABELWISE_DEMO_EPOCHS" in os.environ else None,
        help="Epochs for every scenario (default: per strategy, see DEMO_TRAINING).",
    )
    parser.add_argument("--smoke", action="store_true", help="Send a few requests, then exit.")
    args = parser.parse_args(argv)
    exit_after = os.environ.get("LABELWISE_DEMO_EXIT_AFTER_S")
    start = time.perf_counter()
    repository = Path(args.repository).resolve()

    _log(f"training {list(DEMO_SCENARIOS)} on the sample data with all-MiniLM-L6-v2 (CPU, offline)")
    accuracy = train_scenarios(repository, args.epochs)
    train_s = time.perf_counter() - start
    for name, value in accuracy.items():
        shown = f"{value:.3f}" if value is not None else "n/a"
        _log(f"validation accuracy {name} ({DEMO_SCENARIOS[name][1]}): {shown}")
    _log(f"models ready in {train_s:.0f}s; starting Ray Serve on 127.0.0.1:{args.port}")

    from labelwise.client import LabelwiseClient
    from labelwise.server import run_server
    from serving.local_ray import stop_local_ray

    url = f"http://127.0.0.1:{args.port}"
    serving_args = {"repository": str(repository), "scenarios": [{"name": n} for n in DEMO_SCENARIOS]}
    run_server(serving_args, "127.0.0.1", args.port, block=False)
    try:
        with LabelwiseClient(url, timeout_s=30) as client:
            deadline = time.monotonic() + 300
            while not client.ready():
                if time.monotonic() > deadline:
                    _log("scenarios did not load within 300s; see the Ray logs")
                    return 1
                time.sleep(0.5)
            for name, texts in EXAMPLES.items():
                try:
                    result = client.classify(name, texts, top_k=1)
                except Exception as exc:  # the demo's promise is working requests: say so and fail
                    _log(f"{name}: request failed: {type(exc).__name__}: {exc}")
                    return 1
                for text, row in zip(texts, result.results, strict=True):
                    _log(f"{name} v{result.version}: {text!r} -> {row[0].label} ({row[0].score:.2f})")
        body = json.dumps(
            {"scenario": "support_ticket", "texts": ["I was charged twice this month"], "top_k": 2}
        )
        print(
            f"\nServing. Try:\n  curl -s {url}/v1/classify -H 'Content-Type: application/json' -d '{body}'\n"
            f"  API docs: {url}/docs    scenarios: {url}/v1/scenarios    metrics: {url}/metrics\n"
            f"Demo ready in {time.perf_counter() - start:.0f}s (training + export {train_s:.0f}s).",
            flush=True,
        )
        if args.smoke or exit_after is not None:
            time.sleep(float(exit_after or 0))
            return 0
        print("Ctrl-C stops the server.", flush=True)
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    finally:
        stop_local_ray()


if __name__ == "__main__":
    sys.exit(main())
