"""The labelwise_* metrics, recorded twice: in the replica's own prometheus_client registry (served on
`/metrics`: one replica's view, whichever the proxy picked) and, inside Ray, with ray.serve.metrics
(ray.util.metrics plus deployment/replica/application tags), which Ray's metrics agent exports on
every node (port 8080 by default) as `ray_labelwise_*`: every replica, ready to sum. `ray_export=False`
(ServingConfig.ray_metrics_export, off on a local one-replica `labelwise serve`) keeps only the first.
See docs/serving.md.
"""

from __future__ import annotations

import contextlib
import logging
from functools import cached_property
from typing import Any

from .optional import require

logger = logging.getLogger("labelwise.serving")


def _ray_metrics() -> Any | None:
    """ray.serve.metrics when this process is a Ray worker, else None (unit tests, the dashboard test)."""
    try:
        import ray
        from ray.serve import metrics
    except ImportError:
        return None
    return metrics if ray.is_initialized() else None


class _Series:
    """One metric (or one label set of it): writes go to prometheus_client and to the Ray twin."""

    def __init__(
        self, prom: Any, ray_metric: Any, label_names: list[str], tags: dict[str, str] | None = None
    ) -> None:
        self._prom = prom
        self._ray = ray_metric
        self._label_names = label_names
        self._tags = tags
        # One child per label set, made once: the request path writes several series per request, and
        # prometheus_client's labels() (a lock and a lookup) plus a new tags dict each time added up.
        # Label values are bounded (served scenarios, statuses, providers, pass groups).
        self._children: dict[tuple[str, ...], _Series] = {}

    def labels(self, *values: str) -> _Series:
        child = self._children.get(values)
        if child is None:
            tags = dict(zip(self._label_names, (str(v) for v in values), strict=True))
            child = _Series(self._prom.labels(*values), self._ray, self._label_names, tags)
            self._children[values] = child
        return child

    def remove(self, *values: str) -> None:
        """Drop one label set's series from /metrics (a scenario no longer served); Ray's export drops
        a series that is no longer recorded by itself."""
        self._children.pop(values, None)
        with contextlib.suppress(KeyError):  # never recorded
            self._prom.remove(*values)

    def inc(self, amount: float = 1.0) -> None:
        self._prom.inc(amount)
        if self._ray is not None:
            self._ray.inc(amount, tags=self._tags)

    def observe(self, value: float) -> None:
        self._prom.observe(value)
        if self._ray is not None:
            self._ray.observe(value, tags=self._tags)

    def set(self, value: float) -> None:
        self._prom.set(value)
        if self._ray is not None:
            self._ray.set(value, tags=self._tags)


class _ProviderSeries:
    """An engine metric whose first label is the execution provider the replica runs on.

    The provider is read from the owner at each write, so callers keep writing `observe(v)` or
    `labels(group).observe(v)` and the replica sets `ServingMetrics.provider` once it knows it.
    """

    def __init__(self, series: _Series, owner: ServingMetrics) -> None:
        self._series = series
        self._owner = owner

    def labels(self, *values: str) -> _Series:
        return self._series.labels(self._owner.provider, *values)

    def observe(self, value: float) -> None:
        self.labels().observe(value)


_LATENCY_BUCKETS_S = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
# A row's wait for its batch and a CPU pass take 0.1-2 ms on a small model: finer at the low end than a
# request's latency (a queue wait and a pass of 0.2 ms both read "under 2 ms" in _LATENCY_BUCKETS_S).
_ENGINE_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, *_LATENCY_BUCKETS_S)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536)


class ServingMetrics:
    """The labelwise_* metrics: requests, latency, queue wait, batch shape, inference time, versions."""

    def __init__(
        self, request_metrics: bool = True, engine_metrics: bool = True, ray_export: bool = True
    ) -> None:
        prom = require("prometheus_client")
        self._prom = prom
        self._ray = _ray_metrics() if ray_export else None
        self.registry = prom.CollectorRegistry(auto_describe=True)
        # Scenario names that may become a label value (what the replica serves); any other name a
        # client sends is counted as `_unknown`, so clients cannot grow the label set.
        self.served_scenarios: frozenset[str] = frozenset()
        # ONNX Runtime provider the replica's sessions run on (a label on every engine metric);
        # ClassifierService sets it once its providers are chosen and checked.
        self.provider = "unknown"
        # A part this process does not own is created unregistered (and without a Ray twin), so
        # neither /metrics nor Ray's export lists it twice.
        own = request_metrics
        self.requests = self._counter(
            own,
            "labelwise_requests",
            "Classify requests by scenario and HTTP status.",
            ["scenario", "status"],
        )
        self.request_latency = self._histogram(
            own,
            "labelwise_request_latency_seconds",
            "Latency inside the service of classify requests answered 200.",
            _LATENCY_BUCKETS_S,
            ["scenario"],
        )
        own = engine_metrics
        p = "provider"  # first label of every engine metric: the ONNX Runtime execution provider
        self.queue_wait = self._engine(
            own,
            "labelwise_queue_wait_seconds",
            "Time a row waited for its batch to start.",
            _ENGINE_BUCKETS_S,
            [p],
        )
        self.batch_rows = self._engine(own, "labelwise_batch_rows", "Rows per batch.", _ROW_BUCKETS, [p])
        self.pass_rows = self._engine(
            own, "labelwise_forward_rows", "Rows per ONNX forward pass.", _ROW_BUCKETS, [p]
        )
        self.pass_tokens = self._engine(
            own,
            "labelwise_forward_tokens",
            "Padded tokens (rows x width) per ONNX forward pass.",
            _TOKEN_BUCKETS,
            [p],
        )
        self.pass_scenarios = self._engine(
            own,
            "labelwise_forward_scenarios",
            "Distinct scenario versions whose rows shared one ONNX forward pass.",
            _ROW_BUCKETS,
            [p, "group"],
        )
        self.inference = self._engine(
            own,
            "labelwise_inference_seconds",
            "ONNX Runtime time per forward pass.",
            _ENGINE_BUCKETS_S,
            [p, "group"],
        )
        self.loaded_version = self._gauge(
            own, "labelwise_loaded_version", "Version each scenario is serving.", ["scenario"]
        )
        self.reloads = self._counter(
            own, "labelwise_reloads", "Versions swapped in after an alias change.", ["scenario"]
        )
        self.reload_failures = self._counter(
            own,
            "labelwise_reload_failures",
            "Versions refused because they failed verification or loading.",
            ["scenario"],
        )

    # prometheus_client appends _total to a counter's name; Ray's export does the same and prefixes ray_.
    def _counter(self, own: bool, name: str, doc: str, labels: list[str] | None = None) -> _Series:
        prom = self._prom.Counter(name, doc, labels or [], registry=self.registry if own else None)
        twin = self._twin("Counter", own, name, doc, labels)
        return _Series(prom, twin, labels or [])

    def _gauge(self, own: bool, name: str, doc: str, labels: list[str] | None = None) -> _Series:
        prom = self._prom.Gauge(name, doc, labels or [], registry=self.registry if own else None)
        return _Series(prom, self._twin("Gauge", own, name, doc, labels), labels or [])

    def _histogram(
        self,
        own: bool,
        name: str,
        doc: str,
        buckets: tuple[float, ...],
        labels: list[str] | None = None,
    ) -> _Series:
        prom = self._prom.Histogram(
            name, doc, labels or [], buckets=buckets, registry=self.registry if own else None
        )
        twin = self._twin("Histogram", own, name, doc, labels, boundaries=list(buckets))
        return _Series(prom, twin, labels or [])

    def _engine(
        self, own: bool, name: str, doc: str, buckets: tuple[float, ...], labels: list[str]
    ) -> _ProviderSeries:
        return _ProviderSeries(self._histogram(own, name, doc, buckets, labels), self)

    def _twin(self, kind: str, own: bool, name: str, doc: str, labels: list[str] | None, **extra: Any) -> Any:
        if not own or self._ray is None:
            return None
        try:
            return getattr(self._ray, kind)(name, description=doc, tag_keys=tuple(labels or ()), **extra)
        except Exception as exc:  # Ray's export is extra: /metrics must work without it
            logger.warning("Ray metric %s not created: %s", name, exc)
            return None

    def scenario_label(self, name: str, answered: bool = False) -> str:
        """The label for a request naming `name`: itself when served (or answered), else `_unknown`."""
        return name if answered or name in self.served_scenarios else "_unknown"

    def render(self) -> bytes:
        return self._prom.generate_latest(self.registry)

    @cached_property
    def content_type(self) -> str:
        return self._prom.CONTENT_TYPE_LATEST
