"""The Grafana dashboard queries only metrics the service really exports, and covers what operators watch."""

from __future__ import annotations

import json
import re

from .chart_render import ROOT

DASHBOARD = json.loads((ROOT / "deploy" / "grafana" / "labelwise-dashboard.json").read_text(encoding="utf-8"))
# labelwise_* is recorded twice: prometheus_client per replica (/metrics) and ray.serve.metrics, which
# Ray exports on every node as ray_labelwise_* (all replicas). The dashboard reads the Ray export.
_SERIES = re.compile(r"\b((?:ray_labelwise|ray_serve)_[a-z0-9_]+)\b")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _exprs() -> list[str]:
    """Every query: the panels' and the template variables' (a variable on a series nothing scrapes by
    default lists no values)."""
    panels = [t["expr"] for p in DASHBOARD["panels"] for t in p.get("targets", [])]
    variables = [
        v["definition"] for v in DASHBOARD.get("templating", {}).get("list", []) if v.get("definition")
    ]
    return panels + variables


def test_template_variables_read_the_series_the_panels_read() -> None:
    for variable in DASHBOARD["templating"]["list"]:
        if variable.get("type") != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        assert "ray_labelwise_" in query, (
            f"{variable['name']}: {query} (the default scrape exports ray_labelwise_*)"
        )


def _exported_labelwise_series() -> set[str]:
    from serving.metrics import ServingMetrics

    names = set()
    for family in ServingMetrics().registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def test_every_labelwise_series_is_exported_by_serving() -> None:
    used = {
        name.removeprefix("ray_")
        for expr in _exprs()
        for name in _SERIES.findall(expr)
        if name.startswith("ray_labelwise_")
    }
    exported = _exported_labelwise_series()
    assert used, "the dashboard queries no labelwise_ metric"
    assert used - exported == set(), f"not exported by serving.metrics: {sorted(used - exported)}"


def test_dashboard_covers_rate_latency_batches_queue_errors_versions() -> None:
    exprs = "\n".join(_exprs())
    for needed in (
        "rate(ray_labelwise_requests_total",  # request rate and errors by scenario
        'status!~"2.."',
        "ray_labelwise_request_latency_seconds_bucket",
        "ray_labelwise_batch_rows_bucket",
        "ray_labelwise_forward_tokens_bucket",
        "ray_labelwise_queue_wait_seconds_bucket",
        "ray_labelwise_loaded_version",
        "ray_serve_num_http_requests_total",
    ):
        assert needed in exprs, needed


def test_panels_are_well_formed() -> None:
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in DASHBOARD["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}", panel["title"]
        # Every query is balanced (a cheap guard against a broken hand edit).
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
