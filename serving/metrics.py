"""Prometheus metrics of one replica process; `/metrics` serves them beside Ray Serve's own.

Each process has its own registry, so a replica's figures never mix with another deployment's.
"""

from __future__ import annotations

from functools import cached_property

from ._optional import require

_LATENCY_BUCKETS_S = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536)


class ServingMetrics:
    """The labelwise_* metrics: requests, latency, queue wait, batch shape, inference time, versions."""

    def __init__(self, request_metrics: bool = True, engine_metrics: bool = True) -> None:
        prom = require("prometheus_client")
        self._prom = prom
        self.registry = prom.CollectorRegistry(auto_describe=True)
        # A part this process does not own is created unregistered, so /metrics never lists it twice.
        r = self.registry if request_metrics else None
        self.requests = prom.Counter(
            "labelwise_requests",
            "Classify requests by scenario and HTTP status.",
            ["scenario", "status"],
            registry=r,
        )
        self.request_latency = prom.Histogram(
            "labelwise_request_latency_seconds",
            "Classify request latency inside the service.",
            ["scenario"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        r = self.registry if engine_metrics else None
        self.queue_wait = prom.Histogram(
            "labelwise_queue_wait_seconds",
            "Time a row waited for its batch to start.",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_rows = prom.Histogram(
            "labelwise_batch_rows", "Rows per @serve.batch call.", buckets=_ROW_BUCKETS, registry=r
        )
        self.pass_rows = prom.Histogram(
            "labelwise_forward_rows", "Rows per ONNX forward pass.", buckets=_ROW_BUCKETS, registry=r
        )
        self.pass_tokens = prom.Histogram(
            "labelwise_forward_tokens",
            "Padded tokens (rows x width) per ONNX forward pass.",
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.inference = prom.Histogram(
            "labelwise_inference_seconds",
            "ONNX Runtime time per forward pass.",
            ["group"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.loaded_version = prom.Gauge(
            "labelwise_loaded_version", "Version each scenario is serving.", ["scenario"], registry=r
        )
        self.reloads = prom.Counter(
            "labelwise_reloads", "Versions swapped in after an alias change.", ["scenario"], registry=r
        )
        self.reload_failures = prom.Counter(
            "labelwise_reload_failures",
            "Versions refused because they failed verification or loading.",
            ["scenario"],
            registry=r,
        )

    def render(self) -> bytes:
        return self._prom.generate_latest(self.registry)

    @cached_property
    def content_type(self) -> str:
        return self._prom.CONTENT_TYPE_LATEST
