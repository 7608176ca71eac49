"""The benchmark's verdicts against the issue's targets, and its markdown table."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

TARGET_ONE_TEXT_RATIO = 0.8  # served/ceiling, one-text requests at c=32 (ceiling: engine on all cores)
TARGET_BATCH_RATIO = 0.95  # served/ceiling, 32-text requests at c=4
TARGET_SEED_SPEEDUP = 6.0  # labelwise req/s over the seed's at c=32 (with a lower p99)
TARGET_PEER_SPEEDUP_C32 = 2.5  # labelwise req/s over the best Infinity variant's at c=32
TARGET_PEER_SPEEDUP_C8 = 2.0  # ... and at c=8
TARGET_PEER_P99_RATIO = 0.5  # labelwise p99 / that Infinity variant's p99 at c=32, at most
TARGET_SAME_PRECISION = 1.5  # labelwise fp32 over Infinity fp32 at c=32 (when the bench serves fp32)
TARGET_MIX_RATIO = 0.9  # 8 scenarios mixed vs one scenario
TARGET_TREE_PSS_MB = 800.0  # labelwise serving process tree, one scenario, at most
COMPARED_LOADS = ("1 text, c=8", "1 text, c=32")
# The served/ceiling targets: the load each compares with the ceiling, and its bar (the bench measures the
# ceiling again around exactly these loads).
CEILING_TARGETS = (("1 text, c=32", TARGET_ONE_TEXT_RATIO), ("32 texts, c=4", TARGET_BATCH_RATIO))


def _by_load(rows: list[dict[str, Any]] | None, load: str) -> dict[str, Any] | None:
    return next((r for r in rows or [] if r.get("load") == load), None)


def _ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None (not measured) when either is missing or 0: a load that got no answer has no rate to
    compare, not a rate of 0."""
    return round(a / b, 6) if a and b else None  # the verdict reads this: 0.7996 must not pass a 0.8 bar


def ceiling_for(row: dict[str, Any] | None, report: dict[str, Any]) -> float | None:
    """The ceiling a served load is compared with: the mean of the ceilings measured just before and just
    after it, when the bench measured them (the host's speed drifts within minutes), else the round's
    (None when its measurement failed)."""
    now = (row or {}).get("ceiling_now")
    return now["seq_per_s"] if now else (report.get("ceiling") or {}).get("seq_per_s")


def _row_said(row: dict[str, Any] | None, errors: bool = True) -> list[str]:
    """What a row's figures do not show: its note (no answer in the window), its failed requests."""
    said = [row["note"]] if row and row.get("note") else []
    if errors and row and row.get("errors"):
        said.append(f"{row['errors']} failed requests")
    return said


def _caveat(name: str, row: dict[str, Any] | None) -> str | None:
    said = _row_said(row)
    return f"{name} {row['load']}: {', '.join(said)}" if row and said else None


def _said_cell(row: dict[str, Any] | None, errors: bool = True) -> str:
    """A row's caveats beside its figure in a table (errors=False where the table has an errors column)."""
    said = _row_said(row, errors)
    return f" ({', '.join(said)})" if said else ""


def _with_caveats(target: dict[str, Any], *rows: tuple[str, dict[str, Any] | None]) -> dict[str, Any]:
    """The target, with the caveats of the rows its value comes from (said beside its verdict)."""
    caveats = [c for name, row in rows if (c := _caveat(name, row))]
    if caveats:
        target["caveats"] = caveats
    return target


def unmeasured_peers(report: dict[str, Any], load: str, variant: str | None = None) -> list[dict[str, Any]]:
    """The peer systems the bench asked for that failed before they measured this load (bench.py's
    measure_infinity keeps them, with `failed` and the loads they measured before it)."""
    return [
        p for p in report.get("peers") or []
        if p.get("failed") and _by_load(p["results"], load) is None and variant in (None, p.get("variant"))
    ]  # fmt: skip


def _with_failed_peers(
    target: dict[str, Any], report: dict[str, Any], load: str, variant: str | None = None
) -> dict[str, Any]:
    """The target, with a caveat for each peer it needed that failed before measuring this load."""
    failed = [f"{p['system']} failed: {p['failed']}" for p in unmeasured_peers(report, load, variant)]
    if failed:
        target["caveats"] = [*target.get("caveats", []), *failed]
    return target


def best_peer(report: dict[str, Any], load: str) -> tuple[str, dict[str, Any]] | None:
    """The peer system with the most req/s at this load, and its row. None when a peer the bench asked for
    failed before it measured this load: the best of the others need not be the best."""
    if unmeasured_peers(report, load):
        return None
    rows = [(p["system"], _by_load(p["results"], load)) for p in report.get("peers") or []]
    rows = [(name, row) for name, row in rows if row]
    return max(rows, key=lambda item: item[1]["req_per_s"]) if rows else None


def labelwise_name(report: dict[str, Any]) -> str:
    return f"labelwise {report['model']['precision']}"


def comparison_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """System x concurrency, one-text requests: req/s, p50, p99, tree PSS, ratios to best peer and seed."""
    systems = [(labelwise_name(report), report.get("served"))]
    if report.get("served_fp32"):
        systems.append(("labelwise fp32", report["served_fp32"]))
    if report.get("seed"):
        systems.append(("seed design: FastAPI + transformers pipeline", report["seed"]))
    systems += [(p["system"], p["results"]) for p in report.get("peers") or []]
    out = []
    for load in COMPARED_LOADS:
        peer = best_peer(report, load)
        seed = _by_load(report.get("seed"), load)
        for name, rows in systems:
            row = _by_load(rows, load)
            if row is None:
                continue
            out.append(
                {
                    "system": name,
                    "load": load,
                    "concurrency": row["concurrency"],
                    "req_per_s": row["req_per_s"],
                    "p50_ms": row["p50_ms"],
                    "p99_ms": row["p99_ms"],
                    "errors": row["errors"],
                    "pss_mb": (row.get("memory") or {}).get("pss_mb"),
                    "vs_best_peer": _ratio(row["req_per_s"], _best_peer_rate(row, report, load, peer)),
                    "vs_seed": _ratio(row["req_per_s"], seed and seed["req_per_s"]),
                    "client_cpu_share": row.get("client_cpu_share"),
                    "driver": row.get("driver"),
                    "note": row.get("note"),
                }
            )
    return out


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target: what was measured, the bar, and whether it was met."""
    served, seed, mix = report.get("served"), report.get("seed"), report.get("scenario_mix")
    rows = []
    one = _by_load(served, "1 text, c=32")
    for load, bar in CEILING_TARGETS:
        row = _by_load(served, load)
        name = load.replace(", ", " at ")
        target = _with_caveats(
            _target(
                f"served/ceiling, {name}", _ratio(row and row["seq_per_s"], ceiling_for(row, report)), bar
            ),
            ("labelwise", row),
        )
        if row and row.get("ceiling_now"):
            now = row["ceiling_now"]
            target["note"] = f"ceiling around the load {_fmt(now['before'])} / {_fmt(now['after'])} seq/s"
            first = (report.get("ceiling") or {}).get("seq_per_s")  # None when this round's step failed
            if first:
                start = _ratio(row["seq_per_s"], first)
                target["note"] += f"; against the round's first ceiling: {_fmt(start, 2)}"
        rows.append(target)
    seed_one = _by_load(seed, "1 text, c=32")
    speedup = _ratio(one and one["req_per_s"], seed_one and seed_one["req_per_s"])
    row = _with_caveats(_target("labelwise/seed req/s at c=32", speedup, TARGET_SEED_SPEEDUP),
                        ("labelwise", one), ("seed baseline", seed_one))  # fmt: skip
    if row["met"] is not None and one and seed_one:
        lower_p99 = (one["p99_ms"] or 0) < (seed_one["p99_ms"] or float("inf"))
        row["note"] = f"p99 {one['p99_ms']} ms vs seed {seed_one['p99_ms']} ms"
        row["met"] = row["met"] and lower_p99
    rows.append(row)
    for load, bar in (("1 text, c=32", TARGET_PEER_SPEEDUP_C32), ("1 text, c=8", TARGET_PEER_SPEEDUP_C8)):
        mine, peer = _by_load(served, load), best_peer(report, load)
        row = _target(f"labelwise/best Infinity req/s at {load.split(', ')[1]}",
                      _ratio(mine and mine["req_per_s"], peer and peer[1]["req_per_s"]), bar)  # fmt: skip
        _with_caveats(row, ("labelwise", mine), *([peer] if peer else []))
        _with_failed_peers(row, report, load)
        if peer:
            row["note"] = f"vs {peer[0]}"
            # what a server with no cost of its own would reach: this engine's ceiling over that peer
            row["bound"] = _ratio(ceiling_for(mine, report), peer[1]["req_per_s"])
        rows.append(row)
    peer = best_peer(report, "1 text, c=32")
    row = _target("labelwise p99 / that Infinity's p99 at c=32",
                  _ratio(one and one["p99_ms"], peer and peer[1]["p99_ms"]), TARGET_PEER_P99_RATIO,
                  lower_is_better=True)  # fmt: skip
    _with_caveats(row, ("labelwise", one), *([peer] if peer else []))
    rows.append(_with_failed_peers(row, report, "1 text, c=32"))
    fp32_peer = next((p for p in report.get("peers") or [] if p.get("variant") == "fp32"), None)
    same, fp32_row = None, None
    mine_fp32 = (
        one if report["model"]["precision"] == "fp32" else _by_load(report.get("served_fp32"), "1 text, c=32")
    )
    if fp32_peer:
        fp32_row = _by_load(fp32_peer["results"], "1 text, c=32")
        same = _ratio(mine_fp32 and mine_fp32["req_per_s"], fp32_row and fp32_row["req_per_s"])
    row = _target("labelwise fp32/Infinity fp32 req/s at c=32", same, TARGET_SAME_PRECISION)
    _with_caveats(row, ("labelwise fp32", mine_fp32), ("Infinity fp32", fp32_row))
    rows.append(_with_failed_peers(row, report, "1 text, c=32", "fp32"))
    single = next((r for r in mix or [] if r.get("n_scenarios") == 1 and r["strategies"]["lora"] == 1), None)
    eight = next((r for r in mix or [] if r.get("n_scenarios") == 8), None)
    row = _target("8 scenarios mixed / 1 scenario, seq/s", _ratio(eight and eight["seq_per_s"],
                  single and single["seq_per_s"]), TARGET_MIX_RATIO)  # fmt: skip
    rows.append(_with_caveats(row, ("8 scenarios", eight), ("1 scenario", single)))
    alone = report.get("memory_one_scenario")
    one_scenario = alone or single or one
    pss = ((one_scenario or {}).get("memory") or {}).get("pss_mb")
    # Without the one-scenario server (--no-memory), the server holding every bench scenario bounds the
    # figure from above: under the bar it shows the target met, over it it shows nothing either way.
    over = pss is not None and not alone and pss > TARGET_TREE_PSS_MB
    row = _target(
        "labelwise serving tree PSS MB, one scenario", None if over else pss, TARGET_TREE_PSS_MB,
        lower_is_better=True,
    )  # fmt: skip
    if over:
        row["note"] = (
            "no server held one scenario alone; the server holding every bench scenario, over the bar, "
            "only bounds it from above"
        )
    elif pss is not None and not alone:
        row["note"] = "the server holding every bench scenario: an upper bound"
    rows.append(row)
    return rows


def median_record(records: list[dict[str, Any]], key: str = "req_per_s") -> dict[str, Any] | None:
    """The record whose `key` is the rounds' median (the lower middle one for an even count), with every
    round's value beside it as `rounds_<key>`: a real measurement, not averaged figures. None without any."""
    if not records:
        return None
    ranked = sorted(records, key=lambda r: r[key])
    chosen = ranked[(len(ranked) - 1) // 2]
    return {**chosen, f"rounds_{key}": [r[key] for r in records]}


def _load_key(record: dict[str, Any]) -> Any:
    return record.get("load")


def mix_key(record: dict[str, Any]) -> Any:
    """A scenario-mix point: every point runs the same load, so it is told apart by its scenarios."""
    return record.get("n_scenarios"), tuple(sorted((record.get("strategies") or {}).items()))


def median_loads(
    rounds: list[list[dict[str, Any]] | None], key: Callable[[dict[str, Any]], Any] = _load_key
) -> list[dict[str, Any]] | None:
    """Per load (told apart by `key`: its label), the median round's record; every load any round measured
    (a round whose step failed has None, a peer that failed midway the loads before it), in the order the
    rounds measured them."""
    first = next((rows for rows in rounds if rows), rounds[0])
    if not first:
        return first
    loads = dict.fromkeys(key(r) for rows in rounds for r in rows or [])
    return [median_record([r for rows in rounds for r in rows or [] if key(r) == load]) for load in loads]


def median_peers(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each peer system of the first round with its loads' median-round records; `failed` (round 1's
    reason) only when it failed in every round that ran it (each round's failure is in `rounds`)."""
    out = []
    for system in rounds[0] or []:
        same = [next((p for p in peers if p["system"] == system["system"]), None) for peers in rounds]
        merged = {k: v for k, v in system.items() if k != "failed"}
        merged["results"] = median_loads([p and p["results"] for p in same])
        if all(p.get("failed") for p in same if p):
            merged["failed"] = system["failed"]
        out.append(merged)
    return out


def median_targets(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each target measured in every round (each round's ratio from figures taken minutes apart at most):
    the median of the rounds' values against the bar. A round that failed a condition beyond its value
    (the seed's lower p99) fails the target."""
    out = []
    for rows in zip(*rounds, strict=True):
        first = rows[0]
        measured_each = [r["measured"] for r in rows]
        values = [v for v in measured_each if v is not None]
        measured = round(statistics.median(values), 6) if values else None
        row = _target(first["target"], measured, first["bar"], first["lower_is_better"])
        # a round whose value passes but whose verdict is "no" failed another condition (the seed's p99)
        beyond_value = any(
            r["met"] is False and _target("", r["measured"], r["bar"], r["lower_is_better"])["met"]
            for r in rows
        )
        if row["met"] and beyond_value:
            row["met"] = False
        each = ", ".join("not measured" if v is None else _fmt(v, 2) for v in measured_each)
        notes = [f"rounds: {each}"] if len(rows) > 1 and values else []
        # a round that measured nothing has no note: the others' still holds
        round_notes = list(dict.fromkeys(r["note"] for r in rows if r.get("note")))
        if len(round_notes) == 1:
            notes.append(round_notes[0])  # the same in every round (the peer compared, what PSS covers)
        elif round_notes and all(n.startswith("vs ") for n in round_notes):
            notes.append(" / ".join(round_notes))  # the best peer changed between rounds
        bounds = [r["bound"] for r in rows if r.get("bound") is not None]
        if bounds:
            row["bound"] = round(statistics.median(bounds), 3)
            if len(rows) > 1:
                row["bounds"] = bounds
        if notes:
            row["note"] = "; ".join(notes)
        caveats = _round_caveats(rows)
        if caveats:
            row["caveats"] = caveats
        out.append(row)
    return out


def _round_caveats(rows: list[dict[str, Any]]) -> list[str]:
    """Each caveat of the rounds' targets once, with the rounds it held in unless it held in all."""
    held: dict[str, list[int]] = {}
    for number, r in enumerate(rows, start=1):
        for caveat in r.get("caveats") or []:
            held.setdefault(caveat, []).append(number)
    return [c if len(n) == len(rows) else f"round {', '.join(map(str, n))}: {c}" for c, n in held.items()]


def _stamped(view: dict[str, Any], n: int) -> dict[str, Any]:
    """A round's report with `round: n` on each of its records, so that a table cell taken from one round
    is compared with figures of that same round (round_ceiling, comparison_rows)."""

    def rows(records: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        return None if records is None else [{**r, "round": n} for r in records]

    out = {**view, "ceiling": view["ceiling"] and {**view["ceiling"], "round": n}}
    for key in ("served", "served_fp32", "scenario_mix", "seed"):
        if key in view:
            out[key] = rows(view[key])
    if view.get("peers"):
        out["peers"] = [{**peer, "results": rows(peer["results"])} for peer in view["peers"]]
    return out


def _row_round(row: dict[str, Any], report: dict[str, Any]) -> dict[str, Any] | None:
    """The merged report's summary of the round this row was measured in (None without rounds)."""
    n, rounds = row.get("round"), report.get("rounds")
    return rounds[n - 1] if n and rounds and len(rounds) >= n else None


def round_ceiling(row: dict[str, Any], report: dict[str, Any]) -> float | None:
    """The first ceiling of the round this row was measured in (the report's, without rounds)."""
    measured_in = _row_round(row, report)
    return measured_in["ceiling_seq_per_s"] if measured_in else (report.get("ceiling") or {}).get("seq_per_s")


def _best_peer_rate(
    row: dict[str, Any], report: dict[str, Any], load: str, peer: tuple[str, dict[str, Any]] | None
) -> float | None:
    """The best peer's req/s at this load: in the round this row was measured in when rounds were run (None
    when that round measured no peer, or a peer failed before this load: never another round's), else
    `peer`'s."""
    measured_in = _row_round(row, report)
    if measured_in is None:
        return peer[1]["req_per_s"] if peer else None
    if any(load not in measured_in["peers"].get(s, {}) for s in measured_in.get("peers_failed") or {}):
        return None
    rates = [loads.get(load) for loads in measured_in["peers"].values()]
    rates = [r for r in rates if r is not None]
    return max(rates) if rates else None


def merge_rounds(views: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's fields from N rounds' reports (round 1 first): every round's figures and targets
    (`rounds`), each target's median (median_targets), and each table cell's median round (median_*)."""
    views = [_stamped(v, i) for i, v in enumerate(views, start=1)]
    first = views[0]
    # A round's step that failed left its figures None: "not measured" in that round.
    rounds = [
        {
            "ceiling_seq_per_s": (v["ceiling"] or {}).get("seq_per_s"),
            "served": {r["load"]: r["req_per_s"] for r in v["served"] or []},
            "ceiling_now": {
                r["load"]: r["ceiling_now"]["seq_per_s"] for r in v["served"] or [] if r.get("ceiling_now")
            },
            "served_fp32": {r["load"]: r["req_per_s"] for r in v.get("served_fp32") or []},
            "peers": {
                p["system"]: {r["load"]: r["req_per_s"] for r in p["results"]} for p in v.get("peers") or []
            },
            "peers_failed": {p["system"]: p["failed"] for p in v.get("peers") or [] if p.get("failed")},
            "targets": targets(v),
        }
        for v in views
    ]
    merged: dict[str, Any] = {
        "rounds": rounds,
        "targets": median_targets([r["targets"] for r in rounds]),
        "ceiling": median_record([v["ceiling"] for v in views if v["ceiling"]], key="seq_per_s"),
        "served": median_loads([v["served"] for v in views]),
    }
    if any(v.get("scenario_mix") for v in views):
        mixes = [v["scenario_mix"] for v in views]
        merged["scenario_mix"] = _mix_ratios(mixes, median_loads(mixes, key=mix_key) or [])
    if first.get("seed") is not None:  # measured once, in round 1: compared with round 1's figures
        merged["seed"] = first["seed"]
    if first.get("served_fp32") is not None:
        merged["served_fp32"] = median_loads([v["served_fp32"] for v in views])
    if first.get("peers"):
        merged["peers"] = median_peers([v["peers"] for v in views])
    return merged


def _median(values: list[float | None]) -> float | None:
    measured = [v for v in values if v is not None]
    return round(statistics.median(measured), 6) if measured else None


def _mix_ratios(
    mixes: list[list[dict[str, Any]] | None], merged: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each merged mix point with its ratios taken within each round and their medians: to the first point
    (`vs_one`) and to what its rows reach unmixed (`vs_unmixed`, beside `unmixed_seq_per_s`). Its figures
    and the first point's may come from different median rounds, whose ratio no round measured."""
    out = []
    for point in merged:
        vs_one, unmixed, vs_unmixed = [], [], []
        for mix in mixes:
            same = {mix_key(r): r for r in mix or []}
            mine, first = same.get(mix_key(point)), same.get(mix_key(merged[0]))
            vs_one.append(_ratio(mine and mine["seq_per_s"], first and first["seq_per_s"]))
            expected = unmixed_rate(mix, mine) if mix and mine else None
            unmixed.append(expected)
            vs_unmixed.append(_ratio(mine and mine["seq_per_s"], expected))
        point = {**point, "vs_one": _median(vs_one), "rounds_vs_one": vs_one}
        if (point.get("n_scenarios") or 0) >= 2:
            point |= {"unmixed_seq_per_s": _median(unmixed), "vs_unmixed": _median(vs_unmixed),
                      "rounds_vs_unmixed": vs_unmixed}  # fmt: skip
        out.append(point)
    return out


def unmixed_rate(mix: list[dict[str, Any]], point: dict[str, Any]) -> float | None:
    """seq/s the point's rows would reach if each cost what it costs with its strategy's scenario alone
    (the rows are spread evenly over the point's scenarios): the rate at which mixing itself costs nothing."""
    alone = {}
    for r in mix:
        s = r["strategies"]
        if r.get("n_scenarios") == 1 and r.get("seq_per_s"):
            alone["lora" if s["lora"] else "frozen"] = r["seq_per_s"]
    n = point.get("n_scenarios") or 0
    shares = {k: v / n for k, v in point["strategies"].items() if v} if n else {}
    if not shares or any(k not in alone for k in shares):
        return None
    return 1.0 / sum(share / alone[k] for k, share in shares.items())


def _mix_label(point: dict[str, Any]) -> str:
    s = point["strategies"]
    return f"{point['n_scenarios']} ({s['lora']} + {s['frozen']})"


def _each_round(values: list[float | None]) -> str:
    return ", ".join("not measured" if v is None else _fmt(v, 2) for v in values)


def _unmixed_note(mix: list[dict[str, Any]]) -> list[str]:
    notes = []
    for r in mix:
        if (r.get("n_scenarios") or 0) < 2:
            continue
        if "vs_unmixed" in r:  # rounds: the medians of each round's own (merge_rounds)
            expected, ratio = r["unmixed_seq_per_s"], r["vs_unmixed"]
            each = f" (rounds: {_each_round(r['rounds_vs_unmixed'])})"
        else:
            expected, each = unmixed_rate(mix, r), ""
            ratio = _ratio(r["seq_per_s"], expected)
        if expected:
            notes.append(
                f"{r['n_scenarios']} scenarios: {_fmt(r['seq_per_s'])} seq/s, {_fmt(ratio, 2)}×{each} the "
                f"{_fmt(expected)} seq/s its rows reach unmixed"
            )
    if not notes:
        return []
    how = "rows weighted by share" + ("; the medians of the rounds' own" if "vs_one" in mix[0] else "")
    return [
        "",
        f"Mixing cost, against each strategy's scenario served alone ({how}): " + "; ".join(notes) + ".",
    ]


def _target(name: str, measured: float | None, bar: float, lower_is_better: bool = False) -> dict[str, Any]:
    met = None if measured is None else (measured <= bar if lower_is_better else measured >= bar)
    return {"target": name, "measured": measured, "bar": bar, "lower_is_better": lower_is_better, "met": met}


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _fmt_measured(target: dict[str, Any]) -> str:
    """The measured value to 2 decimals, or to as many more as it takes not to read as the bar itself
    (0.949 against 0.95 reads "0.95 ≥ 0.95: no" otherwise)."""
    measured, bar = target["measured"], float(target["bar"])
    shown = _fmt(measured, 2)
    digits = 2
    while isinstance(measured, float) and measured != bar and round(measured, digits) == round(bar, digits):
        digits += 1  # 0.7996 against 0.8: "0.7996", never "0.80 ≥ 0.8: no"
        shown = _fmt(measured, digits)
    return shown


def render_comparison(report: dict[str, Any]) -> list[str]:
    """The side-by-side table: every system at c=8 and c=32, and the ceiling."""
    c = report.get("ceiling") or {}  # {} when its measurement failed
    driver = report.get("load_driver", "python")
    lines = [
        "| system | c | req/s | p50 ms | p99 ms | errors | tree PSS MB | vs best peer | vs seed "
        "| client CPU share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in comparison_rows(report):
        share = r["client_cpu_share"]
        lines.append(
            f"| {r['system']} | {r['concurrency']} | {_fmt(r['req_per_s'])}{_said_cell(r, errors=False)} "
            f"| {_fmt(r['p50_ms'])} "
            f"| {_fmt(r['p99_ms'])} | {r['errors']} | {_fmt(r['pss_mb'])} | {_fmt(r['vs_best_peer'], 2)} "
            f"| {_fmt(r['vs_seed'], 2)} | {'—' if share is None else f'{share:.1%}'} |"
        )
    variants = "; ".join(f"{v['variant']}: {_fmt(v['seq_per_s'])}" for v in c.get("variants", []))
    lines.append(
        f"| ceiling: engine in-process on all cores, {c.get('variant', '')}, "
        f"batch {_fmt(c.get('best_batch_size'))} "
        f"| — | {_fmt(c.get('seq_per_s'))} seq/s | — | — | — | — | — | — | — |"
    )
    swept = [int(size) for size in c.get("seq_per_s_by_batch_size") or {}]
    if swept and c.get("best_batch_size") == max(swept):
        variants += f" (batch {max(swept)} is the largest swept: larger batches might go faster)"
    lines += ["", f"Ceiling variants (seq/s): {variants or 'one'}. Load client: {driver}"
              + (f" with {report.get('wrk_threads')} thread(s)" if driver == "wrk" else "")
              + "; its CPU share is its CPU time / wall time / the cores it may run on."]  # fmt: skip
    for note in report.get("peer_notes") or []:
        lines.append(f"Note: {note}.")
    return lines


def _now_cell(row: dict[str, Any]) -> str:
    """The ratio to the ceiling measured around this load, beside the ratio to the round's first one."""
    now = row.get("ceiling_now")
    return f" ({_fmt(_ratio(row['seq_per_s'], now['seq_per_s']), 2)} around it)" if now else ""


def _threads(report: dict[str, Any]) -> str:
    """The labelwise server's threads as the bench set them; a --url server's are its own, unknown here."""
    if report.get("url"):
        seed = report.get("seed_threads")
        return f"the server at {report['url']} (its own threads)" + (
            f", the seed baseline with {seed} torch thread(s)" if seed else ""
        )
    threads = report["threads"]
    return "serving's default threads" if threads is None else f"{threads} ORT thread(s)"


def render_markdown(report: dict[str, Any]) -> str:
    c = report.get("ceiling") or {}  # {} when its measurement failed
    ceiling = c.get("seq_per_s")
    lines = [
        f"### labelwise bench — {report['model']['base_model']} {report['model']['precision']}, "
        f"{_threads(report)}, {report['started_at']}",
        "",
        *(f"**Failed**, not measured: {f['step']}: {f['error']}." for f in report.get("failed_steps") or []),
        *([""] if report.get("failed_steps") else []),
        *render_comparison(report),
        "",
        "| system | load | req/s | seq/s | p50 ms | p99 ms | errors | served/ceiling |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        f"| ceiling: engine alone on all cores, batch {_fmt(c.get('best_batch_size'))} | in-process | — "
        f"| {_fmt(ceiling)} | — | — | — | 1.00 |",
    ]
    for name, rows in (("labelwise", report.get("served")), ("seed baseline", report.get("seed"))):
        for r in rows or []:
            lines.append(
                f"| {name} | {r['load']} | {_fmt(r['req_per_s'])}{_said_cell(r, errors=False)} "
                f"| {_fmt(r['seq_per_s'])} "
                f"| {_fmt(r['p50_ms'])} | {_fmt(r['p99_ms'])} | {r['errors']} "
                f"| {_fmt(_ratio(r['seq_per_s'], round_ceiling(r, report)), 2)}{_now_cell(r)} |"
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
            lines.append(
                f"| {_mix_label(r)} | {r['load']} | {_fmt(r['req_per_s'])}"
                f"{_said_cell(r)} "
                f"| {_fmt(r['seq_per_s'])} | {_fmt(r['p99_ms'])} "
                f"| {_fmt(r['vs_one'] if 'vs_one' in r else _ratio(r['seq_per_s'], base), 2)} "
                f"| {_fmt(mem.get('rss_mb'))} | {_fmt(mem.get('pss_mb'))} |"
            )
        if "vs_one" in mix[0]:
            each = "; ".join(f"{_mix_label(r)}: {_each_round(r['rounds_vs_one'])}" for r in mix[1:])
            lines += ["", "vs 1 scenario: the median of the rounds' own ratios (each row's figures are its "
                      f"median round's): {each}."]  # fmt: skip
        lines += _unmixed_note(mix)
    alone = report.get("memory_one_scenario")
    if alone:
        mem = alone.get("memory") or {}
        lines += [
            "",
            f"Memory of `labelwise serve` with one scenario "
            f"({report['model'].get('primary_scenario', 'the primary')}), after "
            f"{_fmt(alone['req_per_s'])} req/s of {alone['load']}{_said_cell(alone)}: tree PSS "
            f"{_fmt(mem.get('pss_mb'))} MB, "
            f"RSS {_fmt(mem.get('rss_mb'))} MB, {mem.get('processes')} processes.",
            "",
            "| process | PSS MB | RSS MB |",
            "|---|---:|---:|",
            *(
                f"| {p['process']} | {_fmt(p['pss_mb'])} | {_fmt(p['rss_mb'])} |"
                for p in alone.get("processes", [])
            ),
        ]
    lines += _rounds_note(report)
    lines += ["", "| target | measured | bar | met |", "|---|---:|---:|---|"]
    for t in report.get("targets", []):
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        said = [t["note"]] if t.get("note") else []
        said += t.get("caveats") or []
        if t.get("bounds"):  # what a server with no cost of its own would have measured, per round
            each = ", ".join(_fmt(b, 2) for b in t["bounds"])
            said.append(f"the engine's ceiling over that peer: {each}, median {_fmt(t['bound'], 2)}")
        elif t.get("bound") is not None:
            said.append(f"the engine's ceiling was {_fmt(t['bound'], 2)}× that peer")
        note = f" ({'; '.join(said)})" if said else ""
        bar = f"{'≤' if t.get('lower_is_better') else '≥'} {t['bar']:g}"
        lines.append(f"| {t['target']} | {_fmt_measured(t)} | {bar} | {met}{note} |")
    m, v = report["machine"], report["versions"]
    lines += [
        "",
        f"Machine: {m['logical_cores']} logical / {m['physical_cores']} physical cores, {m['cpu_model']}, "
        f"{m['memory_gb']} GiB, load average {m['load_average_1m_at_start']} at start. "
        f"Versions: Python {v['python']}, onnxruntime {v['onnxruntime']}, ray {v['ray']}, "
        f"torch {v['torch']}, transformers {v['transformers']}, labelwise {v['labelwise_commit']}"
        f"{_rewrite_note(report)}. "
        f"Texts: {report['texts_file']}. Each load: {report['warmup_s']:g} s warm-up + "
        f"{report['duration_s']:g} s measured, closed loop, client ({report.get('load_driver', 'python')}) "
        "in its own process on the same cores.",
    ]
    return "\n".join(lines) + "\n"


def _rounds_note(report: dict[str, Any]) -> list[str]:
    """With --rounds N: what each round measured, so that the medians can be checked."""
    rounds = report.get("rounds") or []
    if len(rounds) < 2:
        return []
    # every round's columns: a round whose step failed has none of its own
    columns = list(dict.fromkeys((part, load) for part in ("ceiling_now", "served", "served_fp32")
                                 for r in rounds for load in r.get(part) or {}))  # fmt: skip
    columns += dict.fromkeys((system, load) for r in rounds for system, loads in r["peers"].items()
                             for load in loads)  # fmt: skip

    own = {"ceiling_now": "ceiling seq/s around", "served": "labelwise", "served_fp32": "labelwise fp32"}

    def title(part: str, load: str) -> str:
        return own.get(part, part) + f" {load}"

    def cell(r: dict[str, Any], part: str, load: str) -> str:
        values = r.get(part) if part in own else r["peers"].get(part)
        return _fmt((values or {}).get(load))

    lines = [
        "",
        f"{len(rounds)} head-to-head rounds (the ceiling, labelwise with its scenario mix, and Infinity "
        "measured again in each, one after the other; the seed and memory once): each table cell above is "
        "its median round, and each target below the median of the rounds' own ratios. req/s per round:",
        "",
        "| " + " | ".join(["round", "ceiling seq/s", *(title(*c) for c in columns)]) + " |",
        "|" + "---:|" * (2 + len(columns)),
    ]
    for number, r in enumerate(rounds, start=1):
        cells = [str(number), _fmt(r["ceiling_seq_per_s"]), *(cell(r, *c) for c in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _rewrite_note(report: dict[str, Any]) -> str:
    """Whether labelwise's CPU sessions ran with SkipLayerNormalization unfused (docs/serving.md)."""
    if "ort_cpu_rewrite" not in report:  # reports written before the rewrite existed
        return ""
    state = "on" if report["ort_cpu_rewrite"] else "off (LABELWISE_ORT_CPU_REWRITE=0)"
    return f" (CPU layer-norm rewrite {state})"
