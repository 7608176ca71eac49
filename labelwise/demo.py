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
EXAMPLES = {
    "support_ticket": ["I was charged twice this month", "The app crashes when I upload a photo"],
    "review_sentiment": ["Lovely product, it works perfectly", "It broke after one day, awful"],
}


def _log(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def train_scenarios(repository: Path, epochs: float) -> None:
    from model_repository import ModelRepository
    from training import custom_scenario, make_train_config, train_and_publish

    repo = ModelRepository(repository)
    for name, (labels, strategy) in DEMO_SCENARIOS.items():
        if "production" in (repo.aliases(name) if repo.scenario_path(name).is_dir() else {}):
            _log(
                f"{name}: already published (production -> v{repo.resolve(name)}); "
                f"delete {repository} to retrain"
            )
            continue
        start = time.perf_counter()
        scenario = custom_scenario(name, labels, SAMPLE_DATA / name, max_length_tokens=64)
        # Small data: a higher learning rate than the defaults so a few epochs learn something visible.
        lr = 5e-3 if strategy == "frozen" else 2e-3
        config = make_train_config(
            scenario, strategy, base_model="minilm", num_train_epochs=epochs, learning_rate=lr, seed=0
        )
        manifest = train_and_publish(config, repo, export_precisions=["fp32", "int8"], alias="production")
        accuracy = manifest.metrics.get("accuracy")
        _log(
            f"{name}: {strategy} v{manifest.version} published in {time.perf_counter() - start:.0f}s "
            f"(validation accuracy {accuracy})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--repository", default=os.environ.get("LABELWISE_DEMO_REPOSITORY", "var/demo-repository")
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("LABELWISE_DEMO_PORT", "8000")))
    parser.add_argument("--epochs", type=float, default=float(os.environ.get("LABELWISE_DEMO_EPOCHS", "8")))
    parser.add_argument("--smoke", action="store_true", help="Send a few requests, then exit.")
    args = parser.parse_args(argv)
    exit_after = os.environ.get("LABELWISE_DEMO_EXIT_AFTER_S")
    start = time.perf_counter()
    repository = Path(args.repository).resolve()

    _log(f"training {list(DEMO_SCENARIOS)} on the sample data with all-MiniLM-L6-v2 (CPU, offline)")
    train_scenarios(repository, args.epochs)
    _log(f"models ready in {time.perf_counter() - start:.0f}s; starting Ray Serve on 127.0.0.1:{args.port}")

    from labelwise._cli_serving import run_server
    from labelwise.client import LabelwiseClient
    from serving._ray_local import stop_local_ray

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
                result = client.classify(name, texts, top_k=1)
                for text, row in zip(texts, result.results, strict=True):
                    _log(f"{name} v{result.version}: {text!r} -> {row[0].label} ({row[0].score:.2f})")
        body = json.dumps(
            {"scenario": "support_ticket", "texts": ["I was charged twice this month"], "top_k": 2}
        )
        print(
            f"\nServing. Try:\n  curl -s {url}/v1/classify -H 'Content-Type: application/json' -d '{body}'\n"
            f"  API docs: {url}/docs    scenarios: {url}/v1/scenarios    metrics: {url}/metrics\n"
            f"Demo ready in {time.perf_counter() - start:.0f}s.",
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
