"""The locustfile imports, its users build valid /v1/classify bodies, and a short headless run writes reports.

Locust monkey-patches the standard library with gevent on import, so it only runs in child processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from serving.api import ClassifyRequest

from .conftest import TinyServer

PROBE = """
import json, random
from locust.env import Environment
from loadtests import locustfile as lf
lf._apply_options(Environment(user_classes=[lf.OneTextUser, lf.BatchUser]))  # Locust's init: reads the env
rng = random.Random(0)
one = lf.build_payload(rng, ["alpha", "beta"], lf._Settings.texts, lf.OneTextUser.texts_per_request)
batch = lf.build_payload(rng, ["alpha", "beta"], lf._Settings.texts, lf._Settings.texts_per_request)
print(json.dumps({"one": one, "batch": batch, "weights": [lf.OneTextUser.weight, lf.BatchUser.weight],
                  "parsed": lf.parse_weights("one=0,batch=5")}))
"""


def test_users_build_valid_payloads() -> None:
    env = {"LABELWISE_LOCUST_TEXTS_PER_REQUEST": "5", "LABELWISE_LOCUST_WEIGHTS": "one=2,batch=1"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, env={**_env(), **env}
    )
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads(out.stdout.strip().splitlines()[-1])
    one = ClassifyRequest.model_validate(data["one"])
    batch = ClassifyRequest.model_validate(data["batch"])
    assert len(one.texts) == 1 and len(batch.texts) == 5
    assert {one.scenario, batch.scenario} <= {"alpha", "beta"}
    assert data["weights"] == [2, 1]
    assert data["parsed"] == {"one": 0, "batch": 5}


def test_bad_weights_fail_with_a_clear_message() -> None:
    probe = "from loadtests.locustfile import parse_weights; parse_weights('one=3,many=2')"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=_env()
    )
    assert out.returncode != 0
    assert "expected one=N,batch=M" in out.stderr


def test_headless_run_writes_csv_and_html(tiny_server: TinyServer, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "loadtests.run", "--host", tiny_server.url, "--users", "4",
           "--run-time-s", "5", "--texts-per-request", "4", "--reports-dir", str(tmp_path)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env())
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    stats = next(tmp_path.glob("*_stats.csv")).read_text()
    assert "/v1/classify [1 text]" in stats and "/v1/classify [4 texts]" in stats
    assert next(tmp_path.glob("*.html")).stat().st_size > 0
    assert tiny_server.counts.requests > 0
    # Without --scenarios the users ask the server which scenarios it serves.
    # Only those that answer: not the one still loading, nor the one serve-all skipped.
    assert set(tiny_server.counts.scenarios) == {"alpha", "beta"}


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("LABELWISE_LOCUST_")}
