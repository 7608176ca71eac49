"""`labelwise bench`: refuses remote targets, gives up on absent servers; its parts measure real things."""

from __future__ import annotations

import copy
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadtests.bench_models import LABELS, BenchModels, prepare_bench_models, write_bench_data
from loadtests.bench_report import (
    comparison_rows,
    median_loads,
    median_peers,
    median_record,
    median_targets,
    merge_rounds,
    mix_key,
    render_markdown,
    targets,
)

from .conftest import TinyServer, _free_port


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labelwise.cli", "bench", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_refuses_a_remote_url() -> None:
    out = _cli("--url", "http://example.com:8000")
    assert out.returncode == 2
    assert "refusing to send load to 'example.com'" in out.stderr


def test_cli_gives_up_on_a_server_that_is_not_up(tmp_path: Path) -> None:
    start = time.monotonic()
    out = _cli(
        "--url", f"http://127.0.0.1:{_free_port()}", "--attach-timeout-s", "1", "--out-dir", str(tmp_path)
    )
    assert out.returncode == 1
    assert "was not ready after 1s" in out.stderr
    assert time.monotonic() - start < 60
    assert not list(tmp_path.iterdir())  # nothing was trained or measured


def _row(load: str, req: float, seq: float, p99: float, pss: float = 700.0) -> dict:
    concurrency = int(load.rsplit("=", 1)[1])
    return {"load": load, "req_per_s": float(req), "seq_per_s": float(seq), "p50_ms": p99 / 2,
            "p99_ms": float(p99), "errors": 0, "concurrency": concurrency, "memory": {"pss_mb": pss},
            "client_cpu_share": 0.01, "driver": "wrk"}  # fmt: skip


def _peer(variant: str, req_c8: float, req_c32: float, p99_c32: float) -> dict:
    return {"system": f"Infinity 0.0.78 optimum {variant}", "variant": variant,
            "results": [_row("1 text, c=8", req_c8, req_c8, 100, 900.0),
                        _row("1 text, c=32", req_c32, req_c32, p99_c32, 950.0)]}  # fmt: skip


def _report() -> dict:
    mix = []
    for n in (1, 4, 8):
        extra = {"n_scenarios": n, "strategies": {"lora": max(1, n // 2), "frozen": n // 2}}
        mix.append(
            _row("1 text, c=32", 100, 100, 300) | extra | {"memory": {"rss_mb": 1000.0 + n, "pss_mb": 800.0}}
        )
    mix[2]["seq_per_s"] = 85.0
    return {
        "started_at": "2026-01-01T00:00:00+00:00",
        "model": {"base_model": "minilm", "precision": "int8"},
        "threads": 2,
        "ceiling": {
            "seq_per_s": 200.0,
            "best_batch_size": 32,
            "variant": "2 processes x 1 thread",
            "variants": [
                {"variant": "1 process x 2 threads", "seq_per_s": 180.0},
                {"variant": "2 processes x 1 thread", "seq_per_s": 200.0},
            ],
        },
        "served": [
            _row("1 text, c=8", 80, 80, 150),
            _row("1 text, c=32", 170, 170, 400),
            _row("32 texts, c=4", 6, 192, 900),
        ],
        "seed": [_row("1 text, c=8", 16, 16, 700), _row("1 text, c=32", 20, 20, 1600)],
        "peers": [_peer("fp32", 50, 60, 1000), _peer("int8", 40, 68, 700)],
        "peer_notes": [],
        "load_driver": "wrk",
        "wrk_threads": 1,
        "scenario_mix": mix,
        "machine": {
            "logical_cores": 2,
            "physical_cores": 2,
            "cpu_model": "x",
            "memory_gb": 8.0,
            "load_average_1m_at_start": 0.1,
        },
        "versions": {
            k: "v" for k in ("python", "onnxruntime", "ray", "torch", "transformers", "labelwise_commit")
        },
        "texts_file": "sentences.txt",
        "warmup_s": 2.0,
        "duration_s": 10.0,
    }


def test_targets_compare_each_ratio_with_its_bar() -> None:
    verdicts = {t["target"]: t for t in targets(_report())}
    one = verdicts["served/ceiling, 1 text at c=32"]
    assert (one["measured"], one["met"]) == (0.85, True)
    batch = verdicts["served/ceiling, 32 texts at c=4"]
    assert (batch["measured"], batch["met"]) == (0.96, True)
    seed = verdicts["labelwise/seed req/s at c=32"]
    assert (seed["measured"], seed["met"]) == (8.5, True)
    # The best Infinity at c=32 is int8 (68 req/s), at c=8 fp32 (50 req/s).
    c32 = verdicts["labelwise/best Infinity req/s at c=32"]
    assert (c32["measured"], c32["met"], c32["note"]) == (2.5, True, "vs Infinity 0.0.78 optimum int8")
    assert c32["bound"] == 2.941176  # the ceiling (200 seq/s) over that Infinity: room labelwise left
    c8 = verdicts["labelwise/best Infinity req/s at c=8"]
    assert (c8["measured"], c8["met"]) == (1.6, False)
    p99 = verdicts["labelwise p99 / that Infinity's p99 at c=32"]
    assert (p99["measured"], p99["met"]) == (0.571429, False)  # 400 vs 700 ms: more than half
    assert verdicts["labelwise fp32/Infinity fp32 req/s at c=32"]["met"] is None  # the bench served int8
    mix = verdicts["8 scenarios mixed / 1 scenario, seq/s"]
    assert (mix["measured"], mix["met"]) == (0.85, False)
    assert "note" not in one  # no ceiling measured around the load: the round's ceiling alone
    pss = verdicts["labelwise serving tree PSS MB, one scenario"]
    assert (pss["measured"], pss["met"]) == (800.0, True)  # at most the bar
    assert pss["note"] == "the server holding every bench scenario: an upper bound"  # no one-scenario server


def test_memory_target_without_a_one_scenario_server_over_the_bar_is_not_measured() -> None:
    # --no-memory: the server holding all eight scenarios read 882 MB. That bounds one scenario's tree from
    # above, so over the bar it says nothing about the target: "not measured", never "no".
    report = _report()
    report["scenario_mix"][0]["memory"]["pss_mb"] = 882.3
    pss = {t["target"]: t for t in targets(report)}["labelwise serving tree PSS MB, one scenario"]
    assert (pss["measured"], pss["met"]) == (None, None)
    assert "no server held one scenario alone" in pss["note"]
    # measured alone, the same figure is a verdict
    report["memory_one_scenario"] = {**_row("1 text, c=32", 90, 90, 300), "memory": {"pss_mb": 882.3}}
    pss = {t["target"]: t for t in targets(report)}["labelwise serving tree PSS MB, one scenario"]
    assert (pss["measured"], pss["met"], pss.get("note")) == (882.3, False, None)


def test_same_precision_target_when_the_bench_serves_fp32() -> None:
    report = _report()
    report["model"]["precision"] = "fp32"
    same = next(t for t in targets(report) if t["target"].startswith("labelwise fp32/"))
    assert (same["measured"], same["met"]) == (2.833333, True)  # 170 / 60


def test_comparison_rows_hold_every_system_at_both_concurrencies() -> None:
    rows = comparison_rows(_report())
    assert [(r["system"].split()[0], r["concurrency"]) for r in rows] == [
        ("labelwise", 8), ("seed", 8), ("Infinity", 8), ("Infinity", 8),
        ("labelwise", 32), ("seed", 32), ("Infinity", 32), ("Infinity", 32),
    ]  # fmt: skip
    c8_label = rows[0]
    assert (c8_label["vs_best_peer"], c8_label["vs_seed"], c8_label["pss_mb"]) == (1.6, 5.0, 700.0)
    c32_fp32 = rows[6]
    assert c32_fp32["system"].endswith("fp32") and c32_fp32["vs_best_peer"] == 0.882353  # 60 / 68


def test_targets_without_peers_are_not_measured() -> None:
    report = _report()
    report["peers"] = []
    verdicts = {t["target"]: t for t in targets(report)}
    assert verdicts["labelwise/best Infinity req/s at c=32"]["met"] is None
    assert all(r["vs_best_peer"] is None for r in comparison_rows(report))


def test_seed_target_also_needs_a_lower_p99() -> None:
    report = _report()
    report["seed"][1]["p99_ms"] = 350.0  # c=32: a faster tail than labelwise's 400 ms
    seed = next(t for t in targets(report) if t["target"].startswith("labelwise/seed"))
    assert seed["met"] is False


def test_markdown_holds_every_row_and_verdict() -> None:
    report = _report()
    report["targets"] = targets(report)
    text = render_markdown(report)
    assert "| ceiling: engine alone on all cores, batch 32 | in-process | — | 200.0 |" in text
    assert "| labelwise | 1 text, c=32 | 170.0 | 170.0 | 200.0 | 400.0 | 0 | 0.85 |" in text
    assert "| seed baseline | 1 text, c=32 | 20.0 | 20.0 |" in text
    assert "| 8 (4 + 4) | 1 text, c=32 | 100.0 | 85.0 | 300.0 | 0.85 | 1,008.0 | 800.0 |" in text
    assert "| 8 scenarios mixed / 1 scenario, seq/s | 0.85 | ≥ 0.9 | **no** |" in text
    assert "| labelwise int8 | 32 | 170.0 | 200.0 | 400.0 | 0 | 700.0 | 2.50 | 8.50 | 1.0% |" in text
    assert (
        "| Infinity 0.0.78 optimum int8 | 32 | 68.0 | 350.0 | 700.0 | 0 | 950.0 | 1.00 | 3.40 | 1.0% |"
        in text
    )
    assert "2 processes x 1 thread: 200.0" in text and "Load client: wrk with 1 thread(s)" in text


def test_a_verdict_is_never_shown_as_the_bar_it_missed() -> None:
    """0.949 against >= 0.95 is shown to 3 decimals (not "0.95 ≥ 0.95 no"); other values keep 2."""
    report = _report()
    report["targets"] = [
        {"target": "a", "measured": 0.9494, "bar": 0.95, "lower_is_better": False, "met": False},
        {"target": "b", "measured": 0.951, "bar": 0.95, "lower_is_better": False, "met": True},
        {"target": "c", "measured": 0.9612, "bar": 0.95, "lower_is_better": False, "met": True},
        {"target": "d", "measured": 0.95, "bar": 0.95, "lower_is_better": False, "met": True},
    ]
    text = render_markdown(report)
    assert "| a | 0.949 | ≥ 0.95 | **no** |" in text
    assert "| b | 0.951 | ≥ 0.95 | yes |" in text
    assert "| c | 0.96 | ≥ 0.95 | yes |" in text
    assert "| d | 0.95 | ≥ 0.95 | yes |" in text


def _round(ceiling: float, c32: float, infinity_c32: float, seed_p99: float = 1600.0) -> dict:
    report = _report()
    report["ceiling"] = {**report["ceiling"], "seq_per_s": float(ceiling)}
    report["served"][1] = _row("1 text, c=32", c32, c32, 400)
    report["peers"][1]["results"][1] = _row("1 text, c=32", infinity_c32, infinity_c32, 700)
    fp32 = 60 * infinity_c32 / 68  # Infinity fp32 drifts with the host too
    report["peers"][0]["results"][1] = _row("1 text, c=32", fp32, fp32, 1000)
    report["seed"][1]["p99_ms"] = seed_p99
    return report


def test_rounds_take_each_cells_median_round_and_the_median_of_each_rounds_ratio() -> None:
    # Round 2 ran on a slow host (everything a fifth slower), round 3 on a fast one.
    views = [_round(200, 170, 68), _round(160, 136, 54.4), _round(240, 204, 81.6)]
    rounds = [targets(v) for v in views]
    verdicts = {t["target"]: t for t in median_targets(rounds)}
    one = verdicts["served/ceiling, 1 text at c=32"]
    assert (one["measured"], one["met"]) == (0.85, True) and one["note"] == "rounds: 0.85, 0.85, 0.85"
    c32 = verdicts["labelwise/best Infinity req/s at c=32"]
    assert c32["measured"] == 2.5
    assert c32["note"] == "rounds: 2.50, 2.50, 2.50; vs Infinity 0.0.78 optimum int8"
    assert (c32["bound"], c32["bounds"]) == (2.941, [2.941176] * 3)
    text = render_markdown(views[0] | {"targets": list(verdicts.values())})
    assert "the engine's ceiling over that peer: 2.94, 2.94, 2.94, median 2.94)" in text
    assert "the engine's ceiling was 2.94× that peer)" in render_markdown(views[0] | {"targets": rounds[0]})
    # Each table cell is its median round's own record, with every round's figure beside it.
    served = median_loads([v["served"] for v in views])
    assert served[1]["req_per_s"] == 170.0 and served[1]["rounds_req_per_s"] == [170.0, 136.0, 204.0]
    peers = median_peers([v["peers"] for v in views])
    assert peers[1]["results"][1]["req_per_s"] == 68.0
    assert median_record([v["ceiling"] for v in views], key="seq_per_s")["seq_per_s"] == 200.0
    # Mix points all run the same load: told apart by their scenarios.
    mixes = [v["scenario_mix"] for v in views]
    mixes[1][2] = {**mixes[1][2], "req_per_s": 50.0}
    mixes[2][2] = {**mixes[2][2], "req_per_s": 150.0}
    merged = median_loads(mixes, key=mix_key)
    assert [m["n_scenarios"] for m in merged] == [1, 4, 8]
    assert merged[2]["rounds_req_per_s"] == [100.0, 50.0, 150.0]
    assert merged[0]["rounds_req_per_s"] == [100.0] * 3
    # An even count takes the lower middle round: a real measurement, not an average.
    assert median_record([{"req_per_s": 1.0}, {"req_per_s": 3.0}])["req_per_s"] == 1.0


def test_table_ratios_compare_figures_of_the_same_round() -> None:
    # The 32-text cell and the ceiling's median come from different rounds here; its served/ceiling
    # cell must be that round's own ratio, as the target's, not a ratio of two rounds' figures.
    views = [_round(200, 170, 68), _round(160, 136, 54.4), _round(240, 204, 81.6)]
    for v, seq in zip(views, (120.0, 190.0, 180.0), strict=True):
        v["served"][2] = _row("32 texts, c=4", seq / 32, seq, 900)
    report = {**views[0], **merge_rounds(views)}
    assert report["ceiling"]["seq_per_s"] == 200.0 and report["served"][2]["seq_per_s"] == 180.0
    row = next(
        line for line in render_markdown(report).splitlines() if line.startswith("| labelwise | 32 texts")
    )
    assert row.endswith("| 0.75 |")  # 180 / round 3's 240, not 180 / round 1's 200 (0.90)
    target = next(t for t in report["targets"] if t["target"] == "served/ceiling, 32 texts at c=4")
    assert target["measured"] == 0.75
    # vs best peer: labelwise's median round at c=32 (170, round 1) over round 1's Infinity (68), not the
    # peers' own median record, which may come from another round.
    views[0]["peers"][1]["results"][1] = _row("1 text, c=32", 100.0, 100.0, 700)
    report = {**views[0], **merge_rounds(views)}
    cell = next(
        r for r in comparison_rows(report) if r["system"] == "labelwise int8" and r["concurrency"] == 32
    )
    assert report["peers"][1]["results"][1]["req_per_s"] == 81.6  # the peer's median round is round 3
    assert cell["req_per_s"] == 170.0 and cell["vs_best_peer"] == 1.7  # 170 / 100, both round 1


def test_a_round_that_fails_the_seeds_p99_fails_the_target() -> None:
    views = [_round(200, 170, 68), _round(200, 170, 68, seed_p99=350.0), _round(200, 170, 68)]
    verdicts = median_targets([targets(v) for v in views])
    seed = next(t for t in verdicts if t["target"].startswith("labelwise/seed"))
    assert seed["measured"] == 8.5 and seed["met"] is False


def test_markdown_lists_every_round() -> None:
    views = [_round(200, 170, 68), _round(160, 136, 54.4), _round(240, 204, 81.6)]
    report = {**views[0], **merge_rounds(views)}
    text = render_markdown(report)
    assert "3 head-to-head rounds" in text
    assert "| 2 | 160.0 | 80.0 | 136.0 | 6.0 | 50.0 | 48.0 | 40.0 | 54.4 |" in text
    assert "| served/ceiling, 1 text at c=32 | 0.85 | ≥ 0.8 | yes (rounds: 0.85, 0.85, 0.85) |" in text
    # Without peers (--no-infinity) the rounds table keeps one column per header cell.
    for v in views:
        v["peers"] = []
    lines = _rounds_table(render_markdown({**views[0], **merge_rounds(views)}))
    assert len({line.count("|") for line in lines}) == 1 and lines[2] == "| 1 | 200.0 | 80.0 | 170.0 | 6.0 |"


NO_ANSWER = "no answer within the 10 s measured window"


def _no_answer(load: str) -> dict:
    return {**_row(load, 0, 0, 1), "p50_ms": None, "p99_ms": None, "requests": 0, "note": NO_ANSWER}


def test_a_load_without_answers_is_not_measured_and_says_why() -> None:
    # Infinity fp32 and labelwise's 32-text load finished nothing in their window: no rate, not a rate of 0.
    report = _report()
    report["peers"][0]["results"][0] = _no_answer("1 text, c=8")
    report["served"][2] = _no_answer("32 texts, c=4")
    report["scenario_mix"][2]["errors"] = 3  # the mix table has no errors column
    row = next(r for r in comparison_rows(report) if r["system"].endswith("fp32") and r["concurrency"] == 8)
    assert row["vs_best_peer"] is None and row["vs_seed"] is None
    verdicts = {t["target"]: t for t in targets(report)}
    batch = verdicts["served/ceiling, 32 texts at c=4"]
    assert (batch["measured"], batch["met"]) == (None, None)
    text = render_markdown({**report, "targets": list(verdicts.values())})
    assert f"| Infinity 0.0.78 optimum fp32 | 8 | 0.0 ({NO_ANSWER}) | — | — | 0 | 700.0 | — | — |" in text
    assert f"| labelwise | 32 texts, c=4 | 0.0 ({NO_ANSWER}) | 0.0 |" in text
    verdict = f"not measured (labelwise 32 texts, c=4: {NO_ANSWER}) |"
    assert f"| served/ceiling, 32 texts at c=4 | — | ≥ 0.95 | {verdict}" in text
    assert "| 8 (4 + 4) | 1 text, c=32 | 100.0 (3 failed requests) |" in text
    assert "(8 scenarios 1 text, c=32: 3 failed requests) |" in text  # beside the mix target's verdict


def test_a_round_without_a_peer_is_not_compared_with_another_rounds() -> None:
    # Round 2's Infinity failed: its labelwise figure has no peer to be compared with.
    views = [_round(200, 100, 50), _round(200, 150, 68), _round(200, 200, 100)]
    views[1]["peers"] = []
    report = {**views[0], **merge_rounds(views)}
    cell = next(
        r for r in comparison_rows(report) if r["system"] == "labelwise int8" and r["concurrency"] == 32
    )
    assert cell["req_per_s"] == 150.0 and cell["vs_best_peer"] is None  # round 2's, the median round
    target = {t["target"]: t for t in report["targets"]}["labelwise/best Infinity req/s at c=32"]
    assert target["measured"] == 2.0
    assert target["note"] == "rounds: 2.00, not measured, 2.00; vs Infinity 0.0.78 optimum int8"


def test_a_failed_infinity_variant_leaves_the_best_infinity_unmeasured() -> None:
    # int8, the faster Infinity at c=32, answered the c=8 load and then failed: fp32 is not the best.
    failed = "every request to http://127.0.0.1:8125 failed (1 text(s) per request, c=32: {'HTTP 500': 9})"
    report = _report()
    int8 = report["peers"][1]
    int8["results"][0]["req_per_s"] = 55.0  # c=8: faster than fp32's 50
    int8["results"], int8["failed"] = int8["results"][:1], failed
    verdicts = {t["target"]: t for t in targets(report)}
    for name in ("labelwise/best Infinity req/s at c=32", "labelwise p99 / that Infinity's p99 at c=32"):
        target = verdicts[name]
        assert (target["measured"], target["met"]) == (None, None)
        assert target["caveats"] == [f"Infinity 0.0.78 optimum int8 failed: {failed}"]
    c8 = verdicts["labelwise/best Infinity req/s at c=8"]
    assert (c8["measured"], c8["note"]) == (1.454545, "vs Infinity 0.0.78 optimum int8")  # 80 / its 55
    c32 = [r for r in comparison_rows(report) if r["concurrency"] == 32]
    assert [r["vs_best_peer"] for r in c32] == [None] * 3  # labelwise, the seed, Infinity fp32
    # With rounds: that round's Infinity targets are not measured, the other rounds' hold.
    views = [_report(), report, _report()]
    merged = {**views[0], **merge_rounds(views)}
    c32 = {t["target"]: t for t in merged["targets"]}["labelwise/best Infinity req/s at c=32"]
    assert (c32["measured"], c32["note"]) == (
        2.5,
        "rounds: 2.50, not measured, 2.50; vs Infinity 0.0.78 optimum int8",
    )
    assert c32["caveats"] == [f"round 2: Infinity 0.0.78 optimum int8 failed: {failed}"]
    views[0]["served"][1] = _row("1 text, c=32", 160, 160, 400)
    views[2]["served"][1] = _row("1 text, c=32", 180, 180, 400)
    merged = {**views[0], **merge_rounds(views)}
    cell = next(
        r for r in comparison_rows(merged) if r["system"] == "labelwise int8" and r["concurrency"] == 32
    )
    assert cell["req_per_s"] == 170.0 and cell["vs_best_peer"] is None  # round 2's: its best Infinity unknown


def _rounds_table(text: str) -> list[str]:
    start = text.index("| round |")
    return text[start:].split("\n\n")[0].splitlines()


def test_markdown_says_whether_the_cpu_layer_norm_rewrite_was_on() -> None:
    report = _report()
    report["targets"] = targets(report)
    assert "layer-norm rewrite" not in render_markdown(report)  # a report from before it existed
    report["ort_cpu_rewrite"] = True
    assert "(CPU layer-norm rewrite on). " in render_markdown(report)
    report["ort_cpu_rewrite"] = False
    assert "(CPU layer-norm rewrite off (LABELWISE_ORT_CPU_REWRITE=0)). " in render_markdown(report)


def test_the_unmixed_rate_weights_each_strategy_alone_by_its_share_of_rows() -> None:
    from loadtests.bench_report import render_markdown, targets, unmixed_rate

    report = _report()
    lora_alone, _four, eight = report["scenario_mix"]
    frozen_alone = _row("1 text, c=32", 50, 50, 300) | {
        "n_scenarios": 1,
        "strategies": {"lora": 0, "frozen": 1},
    }
    report["scenario_mix"] = [lora_alone, frozen_alone, eight]
    eight["seq_per_s"] = 60.0
    # 4 LoRA rows at 100/s and 4 frozen rows at 50/s: 1 / (0.5/100 + 0.5/50) = 66.7 seq/s unmixed
    assert unmixed_rate(report["scenario_mix"], eight) == pytest.approx(200 / 3)
    assert unmixed_rate([lora_alone, eight], eight) is None  # no frozen scenario measured alone
    text = render_markdown(report)
    assert "8 scenarios: 60.0 seq/s, 0.90× the 66.7 seq/s its rows reach unmixed" in text
    mix_target = next(t for t in targets(report) if t["target"].startswith("8 scenarios"))
    assert mix_target["measured"] == pytest.approx(0.6)  # the target stays against the LoRA scenario alone


def test_mix_ratios_with_rounds_are_the_medians_of_each_rounds_own() -> None:
    # Each mix point's cell is its median round's record: the 8-scenario one from round 2, the LoRA
    # scenario alone from round 1. Their ratio (82.8 / 100) is no round's; each round's own are 0.81,
    # 0.92, 0.79, as the mix target reads them.
    views = []
    for lora, frozen, eight in ((100, 150, 81.0), (90, 150, 82.8), (120, 150, 94.8)):
        view = _report()
        view["scenario_mix"] = [
            _row("1 text, c=32", seq, seq, 300)
            | {"n_scenarios": n, "strategies": {"lora": lo, "frozen": n - lo}}
            for seq, n, lo in ((lora, 1, 1), (frozen, 1, 0), (eight, 8, 4))
        ]
        views.append(view)
    report = {**views[0], **merge_rounds(views)}
    mix_target = next(t for t in report["targets"] if t["target"].startswith("8 scenarios"))
    assert mix_target["measured"] == 0.81
    text = render_markdown(report)
    assert "| 8 (4 + 4) | 1 text, c=32 | 82.8 | 82.8 | 300.0 | 0.81 |" in text
    assert "8 (4 + 4): 0.81, 0.92, 0.79." in text
    # unmixed, 4 LoRA rows and 4 frozen ones reach 120.0, 112.5 and 133.3 seq/s in rounds 1, 2 and 3
    assert "8 scenarios: 82.8 seq/s, 0.71× (rounds: 0.68, 0.74, 0.71) the 120.0 seq/s its rows reach" in text


def test_mix_alternates_strategies() -> None:
    models = BenchModels(repository="r", base_model="m", precision="int8", lora=["l0", "l1"],
                         frozen=["f0", "f1"], train_steps=1)  # fmt: skip
    assert models.primary == "l0"
    assert models.mix(1) == ["l0"]
    assert models.mix(4) == ["l0", "f0", "l1", "f1"]
    with pytest.raises(ValueError, match="has 4"):
        models.mix(8)


def test_bench_data_covers_every_label(tmp_path: Path) -> None:
    folder = write_bench_data(tmp_path)
    for name in ("train.csv", "validation.csv"):
        text = (folder / name).read_text(encoding="utf-8")
        assert text.startswith("text,label")
        assert all(f",{label}" in text for label in LABELS)


def test_bench_models_are_reused_when_cached(tiny_bench: BenchModels, tiny_roberta_dir: Path) -> None:
    said: list[str] = []
    again = prepare_bench_models(
        Path(tiny_bench.repository), n_lora=1, n_frozen=1, base_model=str(tiny_roberta_dir),
        precision="fp32", train_steps=1, say=said.append,
    )  # fmt: skip
    assert again == tiny_bench
    assert said == [f"bench models: reusing 2 scenarios in {tiny_bench.repository}"]


def test_bench_models_of_another_plan_are_removed_not_served(tmp_path: Path, tiny_roberta_dir: Path) -> None:
    """A finished build of another plan (here: before frozen rows read the all-int8 base) is removed
    whole, peer graphs included, instead of being served again under the new plan's marker."""
    import json

    root = tmp_path / "bench"
    (root / "_peer-models").mkdir(parents=True)
    (root / "_peer-models" / "stale.onnx").write_bytes(b"old")
    (root / ".bench-models.json").write_text(json.dumps({"int8_guard": False, "lora": [], "frozen": []}))
    said: list[str] = []
    models = prepare_bench_models(
        root, n_lora=0, n_frozen=0, base_model=str(tiny_roberta_dir), precision="int8", train_steps=1,
        say=said.append,
    )  # fmt: skip
    assert not (root / "_peer-models").exists()
    assert said[0] == f"bench models: {root} holds another plan's models; removing them"
    assert json.loads((root / ".bench-models.json").read_text())["frozen_base"] == "all-int8"
    assert models.lora == [] and models.frozen == []


def test_bench_scenarios_opt_out_of_the_int8_guard(tiny_bench: BenchModels) -> None:
    """The bench's few-step heads publish every MatMul int8 (their near-tied logits make the guard's
    agreement bar noise): the setting is recorded in each version's resolved scenario config."""
    from model_repository import ModelRepository

    repo = ModelRepository(tiny_bench.repository)
    for name in tiny_bench.lora + tiny_bench.frozen:
        manifest = repo.load_manifest(name, repo.resolve(name, "production"))
        assert manifest.training_config["scenario"]["int8_guard"] is False


def test_ceiling_measures_the_engine_at_each_batch_size(tiny_bench: BenchModels) -> None:
    from loadtests.ceiling import measure_ceiling

    texts = ["The app crashes on start.", "Great value, fast shipping.", "Where is my parcel?"]
    result = measure_ceiling(tiny_bench.repository, tiny_bench.primary, 1, texts, "fp32", (1, 4), 0.2)
    assert result["precision"] == "fp32"
    assert set(result["seq_per_s_by_batch_size"]) == {"1", "4"}
    assert result["seq_per_s"] == max(result["seq_per_s_by_batch_size"].values()) > 0


def test_seed_baseline_answers_like_labelwise(tiny_bench: BenchModels) -> None:
    from fastapi.testclient import TestClient

    from loadtests.baselines.seed_server import create_app
    from model_repository import ModelRepository

    repo = ModelRepository(tiny_bench.repository)
    version_dir = repo.version_path(tiny_bench.primary, repo.resolve(tiny_bench.primary, "production"))
    client = TestClient(create_app(version_dir, threads=1))
    body = {"scenario": tiny_bench.primary, "texts": ["refund please?", "a long sentence about a phone"],
            "top_k": 1}  # fmt: skip
    resp = client.post("/v1/classify", json=body)
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert len(results) == 2 and all(len(r) == 1 and r[0]["label"] in LABELS for r in results)
    assert client.post("/v1/classify", json=body | {"scenario": "other"}).status_code == 404


def test_served_ceiling_targets_use_the_ceiling_measured_around_their_load() -> None:
    report = _report()
    # The host slowed down after the round's first ceiling (200 seq/s): around the loads it made 180-190.
    report["served"][1]["ceiling_now"] = {"before": 190.0, "after": 180.0, "seq_per_s": 185.0}
    report["served"][2]["ceiling_now"] = {"before": 180.0, "after": 200.0, "seq_per_s": 190.0}
    verdicts = {t["target"]: t for t in targets(report)}
    one = verdicts["served/ceiling, 1 text at c=32"]
    assert (one["measured"], one["met"]) == (0.918919, True)  # 170 / 185, not 170 / 200
    note = "ceiling around the load 190.0 / 180.0 seq/s; against the round's first ceiling: 0.85"
    assert one["note"] == note
    batch = verdicts["served/ceiling, 32 texts at c=4"]
    assert (batch["measured"], batch["met"]) == (1.010526, True)
    text = render_markdown(report | {"targets": targets(report)})
    assert "| labelwise | 1 text, c=32 | 170.0 | 170.0 | 200.0 | 400.0 | 0 | 0.85 (0.92 around it) |" in text
    assert (
        "| labelwise | 1 text, c=8 | 80.0 | 80.0 | 75.0 | 150.0 | 0 | 0.40 |" in text
    )  # not measured around
    later = copy.deepcopy(report)
    later["served"][1]["ceiling_now"]["seq_per_s"] = 150.0
    merged = merge_rounds([report, later])
    assert [r["ceiling_now"] for r in merged["rounds"]] == [
        {"1 text, c=32": 185.0, "32 texts, c=4": 190.0},
        {"1 text, c=32": 150.0, "32 texts, c=4": 190.0},
    ]
    one = {t["target"]: t for t in merged["targets"]}["served/ceiling, 1 text at c=32"]
    assert one["measured"] == round(statistics.median([round(170 / 185, 6), round(170 / 150, 6)]), 6)
    assert "| ceiling seq/s around 1 text, c=32 |" in render_markdown(report | merged)


# The whole bench, two rounds and its servers: 130 s of CI on the 2-core box; its parts are tested above and
# below, this in `make test-all`.
@pytest.mark.slow
def test_bench_end_to_end_on_tiny_models(
    tiny_bench: BenchModels, tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    from loadtests.bench import BenchOptions, run_bench

    options = BenchOptions(
        repository=Path(tiny_bench.repository), out_dir=tmp_path, port=_free_port(), seed_port=_free_port(),
        base_model=str(tiny_roberta_dir), precision="fp32", n_lora=1, n_frozen=1, train_steps=1,
        duration_s=1.5, warmup_s=0.5, ceiling_seconds_per_size=0.3, threads=1,
        ceiling_bracket_s=0.3,  # the ceiling around each load: 3 s by default, 24 s of this test's run
        infinity=False,  # its own test below starts it; here the bench's own systems
        rounds=2,  # the second round measures the ceiling and labelwise again
    )  # fmt: skip
    report = run_bench(options, say=lambda _msg: None)
    assert len(report["rounds"]) == 2 and all(r["ceiling_seq_per_s"] > 0 for r in report["rounds"])
    # the ceiling measured again around the two loads with served/ceiling targets, in every round
    assert [sorted(r["ceiling_now"]) for r in report["rounds"]] == [["1 text, c=32", "32 texts, c=4"]] * 2
    around = [r.get("ceiling_now") for r in report["served"]]
    assert around[0] is None and all(a["before"] > 0 and a["after"] > 0 for a in around[1:])
    assert all(a["server_paused"] for a in around[1:])  # the server the bench started sat out the ceiling
    assert [list(r["served"]) for r in report["rounds"]] == [[r["load"] for r in report["served"]]] * 2
    assert all(len(r["rounds_req_per_s"]) == 2 for r in report["served"])
    assert "2 head-to-head rounds" in Path(report["json_path"]).with_suffix(".md").read_text(encoding="utf-8")
    assert all(r["driver"] == report["load_driver"] and r["client_cpu_share"] < 1 for r in report["served"])
    assert {v["variant"].split(" x ")[0] for v in report["ceiling"]["variants"]} >= {"1 process"}
    assert [r["load"] for r in report["served"]] == ["1 text, c=8", "1 text, c=32", "32 texts, c=4"]
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in report["served"] + report["seed"])
    # 2 scenarios: the LoRA one alone, the frozen one alone, no 4 or 8 mix
    assert [(r["n_scenarios"], r["strategies"]) for r in report["scenario_mix"]] == [
        (1, {"lora": 1, "frozen": 0}),
        (1, {"lora": 0, "frozen": 1}),
    ]
    assert report["served"][0]["memory"]["processes"] > 1  # Ray's processes are in the tree
    alone = report["memory_one_scenario"]  # a second server with the primary scenario alone
    names = [p["process"] for p in alone["processes"]]
    assert alone["requests"] > 0 and alone["memory"]["pss_mb"] > 0
    assert "labelwise.cli serve" in names and any(n.startswith("ray::ServeReplica") for n in names)
    assert not [n for n in names if n.endswith(("monitor.py", "dashboard.py"))]  # the lean local head
    assert Path(report["json_path"]).is_file()


@pytest.mark.parametrize("driver", ["python", "wrk"])
def test_a_load_with_no_answer_in_its_window_is_a_note(tiny_server: TinyServer, driver: str) -> None:
    from loadtests.bench import BenchOptions, _Runner
    from loadtests.wrk import find_wrk

    if driver == "wrk" and find_wrk() is None:
        pytest.skip("wrk is not installed (`make wrk`)")
    tiny_server.behaviour["stall"] = True  # every answer takes longer than the 1 s window
    options = BenchOptions(duration_s=1, warmup_s=0, attach_timeout_s=5)
    result = _Runner(options, None, driver).load(tiny_server.url, ["alpha"], 1, 2)
    assert (result["requests"], result["errors"]) == (0, 0)
    assert result["note"] == "no answer within the 1 s measured window"


def test_labelwise_runs_with_its_own_thread_default_unless_told() -> None:
    from loadtests.bench import BenchOptions, serve_config

    models = BenchModels(repository="r", base_model="m", precision="int8", lora=["l0"], frozen=["f0"],
                         train_steps=1)  # fmt: skip
    assert "ort_intra_op_threads" not in serve_config(models, None, BenchOptions())
    assert serve_config(models, 2, BenchOptions())["ort_intra_op_threads"] == 2
    assert BenchOptions().threads is None


def test_the_memory_target_reads_the_one_scenario_server_when_measured() -> None:
    report = _report()
    assert next(t for t in targets(report) if "PSS" in t["target"])["note"].startswith("the server holding")
    report["memory_one_scenario"] = {
        "load": "1 text, c=32",
        "req_per_s": 150.0,
        "memory": {"pss_mb": 702.3, "rss_mb": 1100.0, "processes": 3},
        "processes": [
            {"process": "ray::ServeReplica:labelwise:labelwise", "pss_mb": 400.0, "rss_mb": 500.0},
            {"process": "gcs_server", "pss_mb": 46.0, "rss_mb": 50.0},
        ],
    }
    pss = next(t for t in targets(report) if "PSS" in t["target"])
    assert (pss["measured"], pss["met"], pss.get("note")) == (702.3, True, None)
    report["targets"] = targets(report)
    text = render_markdown(report)
    assert "tree PSS 702.3 MB, RSS 1,100.0 MB, 3 processes" in text
    assert "| ray::ServeReplica:labelwise:labelwise | 400.0 | 500.0 |" in text


def test_process_labels_name_what_each_process_is() -> None:
    from loadtests.processes import process_label

    assert process_label(["ray::ServeController.listen_for_change"]) == "ray::ServeController"
    assert (
        process_label(["/v/bin/python", "-m", "labelwise.cli", "serve", "--config", "x"])
        == "labelwise.cli serve"
    )
    assert process_label(["/v/ray/core/src/ray/gcs/gcs_server", "--log_dir=/tmp"]) == "gcs_server"
    assert process_label(["/v/bin/python", "-u", "/v/ray/dashboard/agent.py", "--x"]) == "dashboard/agent.py"
    assert process_label([]) == "?"


def test_an_int8_bench_compares_its_fp32_graph_with_infinity_fp32() -> None:
    report = _report()  # serves int8; the fp32 server of the primary scenario beside it
    report["served_fp32"] = [_row("1 text, c=8", 45, 45, 300), _row("1 text, c=32", 90, 90, 500)]
    same = next(t for t in targets(report) if t["target"].startswith("labelwise fp32/"))
    assert (same["measured"], same["met"]) == (1.5, True)  # 90 / 60, at the bar
    rows = [r for r in comparison_rows(report) if r["system"] == "labelwise fp32"]
    assert [(r["concurrency"], r["req_per_s"]) for r in rows] == [(8, 45), (32, 90)]


def test_the_fp32_graph_of_an_int8_bench_is_exported_once(tiny_roberta_dir: Path, tmp_path: Path) -> None:
    from loadtests.bench import fp32_version
    from model_repository import ModelRepository

    models = prepare_bench_models(
        tmp_path, n_lora=1, n_frozen=1, base_model=str(tiny_roberta_dir), precision="int8", train_steps=1
    )
    repo = ModelRepository(tmp_path)
    assert repo.load_manifest(models.primary, 1).export("fp32") is None
    said: list[str] = []
    version = fp32_version(models, said.append)
    manifest = repo.load_manifest(models.primary, version)
    assert version == 2 and manifest.parent_version == 1 and manifest.export("fp32") is not None
    assert repo.resolve(models.primary, "production") == 1  # the int8 bench still serves what it served
    assert fp32_version(models, said.append) == 2 and len(said) == 1  # found again, not re-exported


def test_a_server_tree_that_is_gone_has_no_memory_figure_and_the_target_is_not_measured(
    tmp_path: Path,
) -> None:
    """A tree read after its server exited summed no process: 0.0 MB, which read as the PSS target met."""
    import sys

    from loadtests.processes import ServerProcess

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    server = ServerProcess("gone", "http://127.0.0.1:9", proc, tmp_path / "log")
    assert server.memory_mb() == {"rss_mb": None, "pss_mb": None, "processes": 0}
    report = _report()
    report["memory_one_scenario"] = {**_row("1 text, c=32", 90, 90, 300), "memory": server.memory_mb()}
    pss = next(t for t in targets(report) if t["target"].startswith("labelwise serving tree PSS"))
    assert pss["measured"] is None and pss["met"] is None


def test_a_ratio_just_under_its_bar_is_not_rounded_onto_it() -> None:
    """0.7996 against >= 0.8 was stored as 0.8 (3 decimals) and judged met."""
    report = _report()
    report["ceiling"] = {**report["ceiling"], "seq_per_s": 212.6}
    report["served"][1] = _row("1 text, c=32", 170, 170, 400)  # 170 / 212.6 = 0.79962
    one = next(t for t in targets(report) if t["target"] == "served/ceiling, 1 text at c=32")
    assert one["met"] is False and 0.7995 < one["measured"] < 0.7997
    views = [report, _round(212.6, 170, 68), _round(212.6, 170, 68)]
    for view in views:
        view["ceiling"] = {**view["ceiling"], "seq_per_s": 212.6}
    merged = {t["target"]: t for t in median_targets([targets(v) for v in views])}
    assert merged["served/ceiling, 1 text at c=32"]["met"] is False
    text = render_markdown(report | {"targets": targets(report)})
    assert "| served/ceiling, 1 text at c=32 | 0.7996 | ≥ 0.8 | **no** |" in text


def test_the_seed_is_compared_with_the_peer_and_ceiling_of_its_own_round() -> None:
    """The seed runs once, in round 1: its cells read round 1's Infinity and ceiling, not the medians'."""
    views = [_round(200, 170, 68), _round(160, 136, 54.4), _round(240, 204, 81.6)]
    views[0]["peers"][1]["results"][0] = _row("1 text, c=8", 50.0, 50.0, 100)
    views[1]["peers"][1]["results"][0] = _row("1 text, c=8", 40.0, 40.0, 100)
    views[2]["peers"][1]["results"][0] = _row("1 text, c=8", 45.0, 45.0, 100)
    report = {**views[0], **merge_rounds(views)}
    seed_c8 = next(
        r for r in comparison_rows(report) if r["system"].startswith("seed") and r["concurrency"] == 8
    )
    assert seed_c8["vs_best_peer"] == round(16 / 50.0, 6)  # round 1's best peer at c=8 (its int8, 50)


def test_a_ceiling_whose_best_batch_is_the_largest_swept_says_so() -> None:
    report = _report()
    report["ceiling"] = {**report["ceiling"], "best_batch_size": 128,
                         "seq_per_s_by_batch_size": {"64": 190.0, "128": 200.0}}  # fmt: skip
    assert "batch 128 is the largest swept" in render_markdown(report)
    report["ceiling"]["seq_per_s_by_batch_size"] = {"128": 200.0, "256": 195.0}
    assert "largest swept" not in render_markdown(report)
