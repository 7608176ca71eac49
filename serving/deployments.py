"""Ray Serve deployments: the classifier replica, with the HTTP app on it or behind a separate ingress."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from ray import serve

from model_repository import ModelRepository

from .api import create_api
from .batching import RowBatcher
from .config import ServingConfig
from .engine import (
    BatchStats,
    EngineSettings,
    OnnxEngine,
    Row,
    ScenarioRouter,
    choose_providers,
    precision_order,
)
from .errors import TextTooLongError
from .metrics import ServingMetrics
from .reload import AliasPoller

logger = logging.getLogger("labelwise.serving")


def _top(labels: list[str], probs: Any, top_k: int | None) -> list[dict[str, Any]]:
    order = probs.argsort()[::-1]
    if top_k is not None:
        order = order[:top_k]
    return [{"label": labels[i], "score": float(probs[i])} for i in order]


class ClassifierCore:
    """A replica's model side: router (versions), engine (ONNX), batcher (@serve.batch), poller."""

    async def __init__(self, config: dict[str, Any]) -> None:
        self.config = ServingConfig(**config)
        cfg = self.config
        self.metrics = ServingMetrics()
        providers = choose_providers(cfg.ort_providers, cfg.num_gpus)
        threads = cfg.ort_intra_op_threads or max(1, int(cfg.num_cpus) or 1)
        settings = EngineSettings(
            providers, precision_order(cfg.precision, providers), threads, cfg.lora_mode, cfg.lora_table_rank
        )
        specs = {s.name: s.alias for s in cfg.scenarios} if cfg.scenarios is not None else None
        self.router = ScenarioRouter(
            ModelRepository(cfg.repository),
            specs,
            cfg.default_alias,
            settings,
            on_loaded=self._on_loaded,
            on_refused=lambda name, _v: self.metrics.reload_failures.labels(name).inc(),
        )
        self.engine = OnnxEngine(cfg.max_batch_tokens, on_pass=self._on_pass)
        self.batcher = RowBatcher(
            self.engine.classify,
            cfg.max_batch_size,
            cfg.batch_wait_timeout_s,
            on_batch=self._on_batch,
            max_concurrent_batches=cfg.max_concurrent_batches,
        )
        logger.info(
            "replica pid %s: providers %s, precisions %s, %s ORT threads",
            os.getpid(),
            providers,
            settings.precisions,
            threads,
        )
        # Load in the background: /readyz answers 503 until every configured scenario is in.
        self.poller = AliasPoller(self.router, cfg.reload_poll_interval_s)
        self.poller.start()

    # ---- metrics hooks -----------------------------------------------------------------------
    def _on_loaded(self, name: str, version: int, swapped: bool) -> None:
        self.metrics.loaded_version.labels(name).set(version)
        if swapped:
            self.metrics.reloads.labels(name).inc()

    def _on_pass(self, stats: BatchStats) -> None:
        self.metrics.pass_rows.observe(stats.rows)
        self.metrics.pass_tokens.observe(stats.tokens)
        self.metrics.pass_scenarios.labels(stats.group).observe(stats.scenarios)
        self.metrics.inference.labels(stats.group).observe(stats.seconds)

    def _on_batch(self, rows: int, waits_s: list[float]) -> None:
        self.metrics.batch_rows.observe(rows)
        for wait in waits_s:
            self.metrics.queue_wait.observe(wait)

    # ---- the backend interface ---------------------------------------------------------------
    async def classify(
        self, scenario: str, texts: list[str], top_k: int | None, truncate: bool
    ) -> dict[str, Any]:
        # Bind the version once: every text of this request is answered by the same version.
        loaded = self.router.get(scenario)
        if not truncate:
            for i, text in enumerate(texts):
                _tokens, cut = loaded.tokenizer.count(text)
                if cut:
                    raise TextTooLongError(
                        f"texts.{i}: longer than {loaded.tokenizer.max_length_tokens} tokens and truncate is "
                        "false",
                        field=f"texts.{i}",
                    )
        results = await asyncio.gather(*(self.batcher.submit(Row(loaded, t)) for t in texts))
        return {
            "scenario": scenario,
            "version": loaded.version,
            "results": [_top(loaded.labels, r.probs, top_k) for r in results],
            "truncated": [r.truncated for r in results],
        }

    async def list_scenarios(self) -> list[dict[str, Any]]:
        out = []
        for state in self.router.states():
            info: dict[str, Any] = {
                "name": state.name,
                "alias": state.alias,
                "version": None,
                "last_error": state.last_error,
            }
            if state.loaded is not None:
                m = state.loaded.manifest
                info.update(
                    version=m.version,
                    strategy=m.strategy,
                    precision=state.loaded.precision,
                    labels=m.labels,
                    max_length_tokens=m.max_length_tokens,
                    metrics=m.metrics,
                )
            out.append(info)
        return out

    async def missing_scenarios(self) -> list[str]:
        return self.router.missing()

    async def engine_metrics(self) -> bytes:
        return b""

    async def engine_metrics_text(self) -> bytes:
        return self.metrics.render()


@serve.ingress()
class ClassifierServer(ClassifierCore):
    """One deployment: the FastAPI app sits on the classifier replica (no extra hop)."""

    def __serve_build_asgi_app__(self):
        return create_api(self, self.config, self.metrics)


class IngressCore:
    """Separate ingress: validates and forwards to the classifier deployment through a handle."""

    def __init__(self, config: dict[str, Any], classifier: Any) -> None:
        self.config = ServingConfig(**config)
        self.metrics = ServingMetrics(request_metrics=True, engine_metrics=False)
        self._classifier = classifier

    @staticmethod
    def _unwrap(exc: BaseException) -> BaseException:
        return getattr(exc, "cause", None) or exc

    async def _call(self, method: str, *args: Any) -> Any:
        try:
            return await getattr(self._classifier, method).remote(*args)
        except Exception as exc:
            raise self._unwrap(exc) from None

    async def classify(
        self, scenario: str, texts: list[str], top_k: int | None, truncate: bool
    ) -> dict[str, Any]:
        return await self._call("classify", scenario, texts, top_k, truncate)

    async def list_scenarios(self) -> list[dict[str, Any]]:
        return await self._call("list_scenarios")

    async def missing_scenarios(self) -> list[str]:
        return await self._call("missing_scenarios")

    async def engine_metrics(self) -> bytes:
        # One replica's figures; with several replicas scrape Ray's metrics export instead.
        return await self._call("engine_metrics_text")


@serve.ingress()
class IngressServer(IngressCore):
    """Separate ingress deployment (ingress_mode: separate)."""

    def __serve_build_asgi_app__(self):
        return create_api(self, self.config, self.metrics)
