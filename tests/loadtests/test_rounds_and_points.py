"""What a measurement step could not measure is said in the report: a peer that fails in a later round (not
only in the first), and a LoRA-mode point whose requests got no answer (not reported as all failed)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

import loadtests.bench as bench
import loadtests.bench_lora as bench_lora
from loadtests.bench_models import BenchModels
from loadtests.errors import BenchError, ServerNotUpError

from .conftest import _free_port, stand_in_server
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
SLOW_SERVER = stand_in_server('{"ready": true}', None, "results", post_delay="3")


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


# A labelwise serve stand-in: ready at once, every classify answered 503.
REFUSING_SERVER = stand_in_server(
    '{"ready": true}',
    None,
    "results",
    refusal='{"error": {"type": "overloaded", "message": "busy", "code": 503}}',
)


def _bench_without_training(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **fields: object
) -> bench.BenchOptions:
    """BenchOptions for a bench whose scenarios are not trained (nothing reads them: the server is a
    stand-in), with only the labelwise steps (and the ceiling) left."""
    models = BenchModels(repository=str(tmp_path / "repo"), base_model="m", precision="fp32", lora=["l0"],
                         frozen=["f0"], train_steps=1)  # fmt: skip
    monkeypatch.setattr(bench, "prepare_bench_models", lambda *_a, **_k: models)
    defaults = dict(
        out_dir=tmp_path / "out", port=_free_port(), duration_s=1, warmup_s=0, ceiling_bracket_s=0,
        seed_baseline=False, scenario_mix=False, same_precision=False, memory_one_scenario=False,
        infinity=False, load_driver="python", attach_timeout_s=10, ready_timeout_s=30,
    )  # fmt: skip
    return bench.BenchOptions(**{**defaults, **fields})  # type: ignore[arg-type]


def test_failed_steps_are_in_the_report_written_anyway(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    options = _bench_without_training(monkeypatch, tmp_path)
    monkeypatch.setattr(bench, "python_cmd", lambda *_args: [sys.executable, "-c", REFUSING_SERVER,
                                                               str(options.port)])  # fmt: skip

    def ceiling(*_args: object) -> dict:
        raise BenchError("the ceiling measurement failed: boom")

    monkeypatch.setattr(bench, "ceiling", ceiling)
    with pytest.raises(BenchError) as failed:
        bench.run_bench(options, say=lambda _msg: None)
    message = str(failed.value)
    (json_path,) = options.out_dir.glob("bench-*.json")
    markdown = json_path.with_suffix(".md").read_text(encoding="utf-8")
    assert f"The partial report: {json_path} and {json_path.with_suffix('.md')}" in message
    report = json.loads(json_path.read_text(encoding="utf-8"))
    assert [f["step"] for f in report["failed_steps"]] == ["ceiling", "labelwise"]
    assert report["failed_steps"][0]["error"] == "the ceiling measurement failed: boom"
    # a real load, every answer 503: which load, and what came back
    error = report["failed_steps"][1]["error"]
    assert error.startswith(
        f"every request to http://127.0.0.1:{options.port} failed (1 text(s) per request, c=8"
    )
    assert "HTTP 503" in error and "labelwise: every request" in message
    assert report["ceiling"] is None and report["served"] is None
    assert all(t["met"] is None for t in report["targets"])
    assert "**Failed**, not measured: ceiling: the ceiling measurement failed: boom." in markdown
    assert "| served/ceiling, 1 text at c=32 | — | ≥ 0.8 | not measured |" in markdown


def test_a_failed_later_round_is_not_measured_in_that_round(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    options = _bench_without_training(monkeypatch, tmp_path, rounds=3)
    report = _report()
    monkeypatch.setattr(bench, "ceiling", lambda *_a: copy.deepcopy(report["ceiling"]))
    calls = []

    def labelwise(*_args: object) -> tuple:
        calls.append(1)
        if len(calls) == 2:  # round 2: the server never got ready
            raise ServerNotUpError(
                "labelwise serve at http://127.0.0.1:1 was not ready after 30s; log x\ntail"
            )
        return copy.deepcopy(report["served"]), [], None

    monkeypatch.setattr(bench, "measure_labelwise", labelwise)
    with pytest.raises(
        BenchError, match=r"round 2: labelwise: labelwise serve at .* was not ready after 30s"
    ):
        bench.run_bench(options, say=lambda _msg: None)
    (json_path,) = options.out_dir.glob("bench-*.json")
    written = json.loads(json_path.read_text(encoding="utf-8"))
    assert written["failed_steps"] == [
        {
            "step": "round 2: labelwise",
            "error": "labelwise serve at http://127.0.0.1:1 was not ready after 30s; log x",
        }
    ]
    assert [r["served"] for r in written["rounds"]][1] == {}
    one = {t["target"]: t for t in written["targets"]}["served/ceiling, 1 text at c=32"]
    assert one["measured"] == 0.85 and one["note"] == "rounds: 0.85, not measured, 0.85"
    assert "| 2 | 200.0 | — | — | — |" in json_path.with_suffix(".md").read_text(encoding="utf-8")
    # the same bench where nothing fails (round 2 failed on the second call only): no failed steps
    clean = bench.run_bench(options.model_copy(update={"out_dir": tmp_path / "clean"}), say=lambda _msg: None)
    assert "failed_steps" not in clean and len(clean["rounds"]) == 3


def test_a_failed_round_ceiling_leaves_its_loads_against_the_ceiling_around_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    options = _bench_without_training(monkeypatch, tmp_path, rounds=2)
    report = _report()
    calls = []

    def ceiling(*_args: object) -> dict:
        calls.append(1)
        if len(calls) == 2:
            raise BenchError("the ceiling measurement failed: timed out")
        return copy.deepcopy(report["ceiling"])

    def labelwise(*_args: object) -> tuple:
        # measured around its loads by round 1's resident ceiling, which round 2's failed step leaves running
        served = copy.deepcopy(report["served"])
        for row in served[1:]:
            row["ceiling_now"] = {"before": 190.0, "after": 210.0, "seq_per_s": 200.0}
        return served, [], None

    monkeypatch.setattr(bench, "ceiling", ceiling)
    monkeypatch.setattr(bench, "measure_labelwise", labelwise)
    with pytest.raises(BenchError, match=r"^round 2: ceiling: the ceiling measurement failed: timed out\."):
        bench.run_bench(options, say=lambda _msg: None)
    (json_path,) = options.out_dir.glob("bench-*.json")
    written = json.loads(json_path.read_text(encoding="utf-8"))
    assert [f["step"] for f in written["failed_steps"]] == ["round 2: ceiling"]
    one = {t["target"]: t for t in written["targets"]}["served/ceiling, 1 text at c=32"]
    assert (one["measured"], one["note"]) == (0.85, "rounds: 0.85, 0.85")
    second = {t["target"]: t for t in written["rounds"][1]["targets"]}["served/ceiling, 1 text at c=32"]
    assert second["note"] == "ceiling around the load 190.0 / 210.0 seq/s"  # no first ceiling in that round


# A labelwise serve stand-in: ready at once, each classify answered at once with one result per text.
FAST_SERVER = stand_in_server('{"ready": true}', "texts", "results")

# A resident ceiling process stand-in: loaded at once, measures once, then is killed (as for memory) when
# told to measure again.
DYING_RESIDENT = """
import json, os, signal, sys
print("ready", flush=True)
sys.stdin.readline()
print(json.dumps({"seq_per_s": 200.0}), flush=True)
sys.stdin.readline()
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_resident_ceiling_that_dies_leaves_the_next_loads_unbracketed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import loadtests.ceiling as ceiling_module

    options = _bench_without_training(monkeypatch, tmp_path, rounds=2, ceiling_bracket_s=0.1)
    first = {"seq_per_s": 200.0, "best_batch_size": 8, "variant": "1 process x 1 thread", "threads": 1,
             "max_batch_tokens": 256, "seq_per_s_by_batch_size": {"8": 200.0}}  # fmt: skip
    monkeypatch.setattr(bench, "ceiling", lambda *_a: {**first, "variants": [first]})
    monkeypatch.setattr(ceiling_module, "_child_cmd", lambda *_a: [sys.executable, "-c", DYING_RESIDENT])
    monkeypatch.setattr(
        bench, "python_cmd", lambda *_a: [sys.executable, "-c", FAST_SERVER, str(options.port)]
    )
    said: list[str] = []
    report = bench.run_bench(options, say=said.append)  # every later step and round still measured
    assert "failed_steps" not in report and len(report["rounds"]) == 2
    died = "no ceiling around it: the ceiling around loads failed: a ceiling process failed with exit code -9"
    one = {t["target"]: t for t in report["targets"]}["served/ceiling, 1 text at c=32"]
    assert one["caveats"] == [
        f"round 1: labelwise 1 text, c=32: {died}",
        f"round 2: labelwise 1 text, c=32: {died} (an earlier load)",
    ]
    assert one["measured"] is not None  # against each round's first ceiling
    assert all("ceiling_now" not in r for r in report["served"])
    assert f"labelwise: {died}" in said


# A labelwise serve stand-in for the LoRA-mode bench: answers at once, or (serving 2 scenarios) 3 s late.
SOMETIMES_SLOW_SERVER = stand_in_server(
    '{"ready": true}', None, "results", post_delay="3 if sys.argv[2] == 'slow' else 0"
)


def test_a_failed_lora_point_is_in_the_report_written_anyway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _free_port()

    def server(*args: str) -> list[str]:  # `-m labelwise.cli serve --config <out>/serve-<mode>-<n>.yaml ...`
        config = args[args.index("--config") + 1]
        return [sys.executable, "-c", SOMETIMES_SLOW_SERVER, str(port), "slow" if "-2." in config else "fast"]

    monkeypatch.setattr(bench_lora, "python_cmd", server)
    monkeypatch.setattr(
        bench_lora, "prepare_lora_scenarios", lambda *_a, **_k: ["lora-mix-00", "lora-mix-01"]
    )
    options = bench_lora.LoraBenchOptions(
        out_dir=tmp_path, port=port, modes=["shared"], scenario_counts=[1, 2], concurrency=2, duration_s=1,
        warmup_s=0, ready_timeout_s=30,
    )  # fmt: skip
    with pytest.raises(BenchError, match=r"^shared-2: no answer within the 1 s measured window") as failed:
        bench_lora.run_lora_bench(options, say=lambda _msg: None)
    (json_path,) = tmp_path.glob("bench-lora-*.json")
    assert f"The partial report: {json_path} and {json_path.with_suffix('.md')}" in str(failed.value)
    report = json.loads(json_path.read_text(encoding="utf-8"))
    measured, unmeasured = report["points"]
    assert measured["seq_per_s"] > 0 and "error" not in measured
    assert unmeasured["n_scenarios"] == 2 and unmeasured["error"].startswith("no answer within")
    assert report["targets"]["rss_mb_per_added_scenario"]["met"] is None
    markdown = json_path.with_suffix(".md").read_text(encoding="utf-8")
    assert "| shared | 2 | not measured: no answer within the 1 s measured window" in markdown
    assert "- rss_mb_per_added_scenario: None (target 10.0, not measured)" in markdown
