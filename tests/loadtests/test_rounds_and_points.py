"""What a measurement step could not measure is said in the report: a peer that fails in a later round (not
only in the first), and a LoRA-mode point whose requests got no answer (not reported as all failed)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

import loadtests.bench as bench
import loadtests.bench_lora as bench_lora
from loadtests.errors import BenchError

from .conftest import _free_port
from .test_bench import _report

FAILED = "Infinity 0.0.78 optimum fp32 failed: it exited with code 1 while starting (log infinity-fp32.log)"


def test_a_peer_failure_in_a_later_round_is_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    report = _report()
    round_one = copy.deepcopy(report)
    # Stubbed: each round's measurements. Round 2's Infinity fails to start.
    monkeypatch.setattr(bench, "ceiling", lambda *_a, **_k: copy.deepcopy(round_one["ceiling"]))
    served, mix = round_one["served"], round_one["scenario_mix"]
    monkeypatch.setattr(
        bench, "measure_labelwise", lambda *_a, **_k: (copy.deepcopy(served), copy.deepcopy(mix), None)
    )
    monkeypatch.setattr(bench, "measure_infinity", lambda *_a, **_k: ([], [FAILED]))
    report["peer_notes"] = ["Infinity 0.0.78 optimum int8 not measured: l0 has no int8 graph"]
    run = bench._Runner(bench.BenchOptions(rounds=2), None, "python")
    bench.head_to_head_rounds(report, None, 2, "texts.txt", run, lambda _msg: None)  # type: ignore[arg-type]
    assert report["peer_notes"] == [
        "round 1: Infinity 0.0.78 optimum int8 not measured: l0 has no int8 graph",
        f"round 2: {FAILED}",
    ]
    assert f"Note: round 2: {FAILED}." in bench.render_markdown(report)


# A labelwise serve stand-in: ready at once, every classify answer 3 s late.
SLOW_SERVER = """
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Slow(BaseHTTPRequestHandler):
    def _answer(self, body):
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self._answer(b'{"ready": true}')
    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        time.sleep(3)
        self._answer(b'{"results": [[{"label": "x", "score": 1.0}]]}')
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Slow).serve_forever()
"""


def test_a_lora_point_without_answers_says_none_came_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _free_port()
    monkeypatch.setattr(
        bench_lora, "python_cmd", lambda *_args: [sys.executable, "-c", SLOW_SERVER, str(port)]
    )
    options = bench_lora.LoraBenchOptions(out_dir=tmp_path, port=port, concurrency=2, duration_s=1,
                                          warmup_s=0, ready_timeout_s=30)  # fmt: skip
    with pytest.raises(BenchError) as refused:
        bench_lora._point(options, "shared", ["lora-mix-00"], None, lambda _msg: None)  # type: ignore[arg-type]
    message = str(refused.value)
    assert message.startswith("shared-1: no answer within the 1 s measured window (none failed either")
    assert "every request failed" not in message
