"""The benchmark's verdicts against the issue's targets, and its markdown table."""

from __future__ import annotations

from typing import Any

TARGET_ONE_TEXT_RATIO = 0.7  # served/ceiling, one-text requests at c=32
TARGET_BATCH_RATIO = 0.9  # served/ceiling, 32-text requests at c=4
TARGET_SEED_SPEEDUP = 6.0  # labelwise req/s over the seed's at c=32 (with a lower p99)
TARGET_MIX_RATIO = 0.9  # 8 scenarios mixed vs one scenario


def _by_load(rows: list[dict[str, Any]] | None, load: str) -> dict[str, Any] | None:
    return next((r for r in rows or [] if r.get("load") == load), None)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target: what was measured, the bar, and whether it was met."""
    ceiling = report["ceiling"]["seq_per_s"]
    served, seed, mix = report.get("served"), report.get("seed"), report.get("scenario_mix")
    rows = []
    one = _by_load(served, "1 text, c=32")
    batch = _by_load(served, "32 texts, c=4")
    rows.append(_target("served/ceiling, 1 text at c=32", _ratio(one and one["seq_per_s"], ceiling),
                        TARGET_ONE_TEXT_RATIO))  # fmt: skip
    rows.append(_target("served/ceiling, 32 texts at c=4", _ratio(batch and batch["seq_per_s"], ceiling),
                        TARGET_BATCH_RATIO))  # fmt: skip
    seed_one = _by_load(seed, "1 text, c=32")
    speedup = _ratio(one and one["req_per_s"], seed_one and seed_one["req_per_s"])
    row = _target("labelwise/seed req/s at c=32", speedup, TARGET_SEED_SPEEDUP)
    if row["met"] is not None and one and seed_one:
        lower_p99 = (one["p99_ms"] or 0) < (seed_one["p99_ms"] or float("inf"))
        row["note"] = f"p99 {one['p99_ms']} ms vs seed {seed_one['p99_ms']} ms"
        row["met"] = row["met"] and lower_p99
    rows.append(row)
    single = next((r for r in mix or [] if r.get("n_scenarios") == 1), None)
    eight = next((r for r in mix or [] if r.get("n_scenarios") == 8), None)
    rows.append(_target("8 scenarios mixed / 1 scenario, seq/s", _ratio(eight and eight["seq_per_s"],
                        single and single["seq_per_s"]), TARGET_MIX_RATIO))  # fmt: skip
    return rows


def _target(name: str, measured: float | None, bar: float) -> dict[str, Any]:
    return {
        "target": name,
        "measured": measured,
        "bar": bar,
        "met": None if measured is None else measured >= bar,
    }


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def render_markdown(report: dict[str, Any]) -> str:
    c = report["ceiling"]
    ceiling = c["seq_per_s"]
    lines = [
        f"### labelwise bench — {report['model']['base_model']} {report['model']['precision']}, "
        f"{report['threads']} ORT thread(s), {report['started_at']}",
        "",
        "| system | load | req/s | seq/s | p50 ms | p99 ms | errors | served/ceiling |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        f"| ceiling: engine alone, batch {c['best_batch_size']} | in-process | — | {_fmt(ceiling)} "
        "| — | — | — | 1.00 |",
    ]
    for name, rows in (("labelwise", report.get("served")), ("seed baseline", report.get("seed"))):
        for r in rows or []:
            lines.append(
                f"| {name} | {r['load']} | {_fmt(r['req_per_s'])} | {_fmt(r['seq_per_s'])} "
                f"| {_fmt(r['p50_ms'])} | {_fmt(r['p99_ms'])} | {r['errors']} "
                f"| {_fmt(_ratio(r['seq_per_s'], ceiling), 2)} |"
            )
    mix = report.get("scenario_mix") or []
    if mix:
        base = mix[0]["seq_per_s"]
        lines += [
            "",
            "| scenarios (LoRA + frozen) | load | req/s | seq/s | p99 ms | vs 1 scenario "
            "| tree RSS MB | tree PSS MB |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in mix:
            mem = r.get("memory") or {}
            s = r["strategies"]
            lines.append(
                f"| {r['n_scenarios']} ({s['lora']} + {s['frozen']}) | {r['load']} | {_fmt(r['req_per_s'])} "
                f"| {_fmt(r['seq_per_s'])} | {_fmt(r['p99_ms'])} | {_fmt(_ratio(r['seq_per_s'], base), 2)} "
                f"| {_fmt(mem.get('rss_mb'))} | {_fmt(mem.get('pss_mb'))} |"
            )
    lines += ["", "| target | measured | bar | met |", "|---|---:|---:|---|"]
    for t in report.get("targets", []):
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        note = f" ({t['note']})" if t.get("note") else ""
        lines.append(f"| {t['target']} | {_fmt(t['measured'], 2)} | {t['bar']} | {met}{note} |")
    m, v = report["machine"], report["versions"]
    lines += [
        "",
        f"Machine: {m['logical_cores']} logical / {m['physical_cores']} physical cores, {m['cpu_model']}, "
        f"{m['memory_gb']} GiB, load average {m['load_average_1m_at_start']} at start. "
        f"Versions: Python {v['python']}, onnxruntime {v['onnxruntime']}, ray {v['ray']}, "
        f"torch {v['torch']}, transformers {v['transformers']}, labelwise {v['labelwise_commit']}. "
        f"Texts: {report['texts_file']}. Each load: {report['warmup_s']:g} s warm-up + "
        f"{report['duration_s']:g} s measured, closed loop, client in its own process on the same cores.",
    ]
    return "\n".join(lines) + "\n"
