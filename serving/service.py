"""ClassifierService: the one object a classifier replica holds, and what every route calls.

    routes (serving/api/routes.py) -> ClassifierService.classify -> Batcher (serving/batching.py)
        -> OnnxEngine.run (serving/engine/runner.py) -> tokenizer + ONNX Runtime

It owns the replica's registry of loaded versions, the engine, the batcher, the alias poll loop and
the metrics; nothing below it calls back up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import numpy as np

from model_repository import ModelRepository

from .batching import Batcher, BatchPolicy
from .config import ServingConfig
from .engine import (
    EngineSettings,
    LoadedScenario,
    LoadEvent,
    OnnxEngine,
    Row,
    ScenarioRegistry,
    choose_providers,
    precision_order,
)
from .errors import TextEmptyOnceCleanedError, TextTooLongError
from .metrics import ServingMetrics

logger = logging.getLogger("labelwise.serving")
# A request whose texts hold more characters than this is cleaned and tokenized in a worker thread.
LARGE_REQUEST_CHARS = 50_000
# The cleaning settings that remove text (the others only reshape it): what can leave a text empty.
_REMOVERS = ("strip_html", "strip_urls", "remove_punctuation", "remove_digits")


def _tokenize(tokenizer: Any, texts: list[str]) -> tuple[list[list[int]], list[bool], int | None, int | None]:
    """A request's token ids and truncation flags (tokenizer.encode_ids, each text cleaned once), the
    index of the first text its version's cleaning leaves empty (then nothing is tokenized), or None, and
    the index of the first text of which the model reads no token, or None. The latter is a text of only
    characters the tokenizer drops (zero-width, soft hyphen, control): neither blank nor cleaned away, its
    model would still read only its special tokens and answer a label, as for a blank text."""
    cleaned = [tokenizer.normalize(t) for t in texts]
    emptied = next((i for i, t in enumerate(cleaned) if not t or t.isspace()), None)
    if emptied is not None:
        return [], [], emptied, None
    ids, cut = tokenizer.encode_ids(cleaned, normalized=True)
    unread = next((i for i, row in enumerate(ids) if row == tokenizer.empty_ids), None)
    return ids, cut, emptied, unread


def tokenize_or_refuse(loaded: LoadedScenario, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
    """The token ids and truncation flags of a request's texts as `loaded` reads them, or the refusal
    (TextEmptyOnceCleanedError, naming texts.<i>) of the first text its model would read nothing of:
    one its version's cleaning leaves empty, or one of only characters its tokenizer drops. What a
    replica answers a request with, and what `labelwise classify` scoring in-process checks a chunk by."""
    ids, cut, emptied, unread = _tokenize(loaded.tokenizer, texts)
    if emptied is not None:
        raise _emptied_error(loaded, emptied)
    if unread is not None:
        raise TextEmptyOnceCleanedError(
            f"texts.{unread}: the model reads no token of it (only characters its tokenizer drops, "
            "such as zero-width or control characters); send the text to classify",
            field=f"texts.{unread}",
        )
    return ids, cut


def _emptied_error(loaded: LoadedScenario, i: int) -> TextEmptyOnceCleanedError:
    """The refusal of texts.<i>, left empty by the version's cleaning (only markup or URLs): its model
    would read nothing and still answer a label; training refuses such a row too. The text is not echoed."""
    normalization = loaded.tokenizer.normalization
    on = [name for name in _REMOVERS if getattr(normalization, name, False)]
    removes = f" (its text_normalization removes text: {', '.join(on)})" if on else ""
    return TextEmptyOnceCleanedError(
        f"texts.{i}: nothing is left of it once cleaned as {loaded.name!r} v{loaded.version} was "
        f"trained{removes}; send the text to classify, not only markup or URLs",
        field=f"texts.{i}",
    )


def limit_blas_threads() -> int | None:
    """Run numpy's BLAS on one thread in this process; returns the thread count it had (None: unknown).

    The only BLAS work on a replica is the frozen heads' matmuls (model_repository/heads.py), a few
    hundred microseconds on one core. OpenBLAS sizes its pool from OMP_NUM_THREADS, which Ray sets to
    the actor's num_cpus, and its threads spin against ONNX Runtime's: measured on 2 cores, a 32-row head
    took 0.16 ms on one thread and 0.50 ms on two, and under serving load the head was 9 % of the replica's
    CPU samples (docs/serving.md)."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:  # the serving extra brings it; a bare image without it keeps BLAS's default
        logger.warning("threadpoolctl is not installed: numpy's BLAS keeps its own thread count")
        return None
    before = max(
        (pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"), default=None
    )
    threadpool_limits(limits=1, user_api="blas")
    return before


def top_labels(
    labels: list[str], probs: np.ndarray, top_k: int | None, values: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """Labels with scores, best first, at most top_k of them; `values` (the logits) replace the
    probabilities as scores, in the same order."""
    # Plain Python on a handful of labels: cheaper than numpy's per-call cost, once per text on the
    # event loop. A stable sort on the negated score: equal scores keep label order, the lowest index first,
    # as argmax (training's metrics, `labelwise evaluate`) picks.
    p = probs.tolist()
    order = sorted(range(len(p)), key=lambda i: -p[i])
    if top_k is not None:
        order = order[:top_k]
    scores = p if values is None else values.tolist()
    return [{"label": labels[i], "score": scores[i]} for i in order]


def decision_threshold(metrics: dict[str, Any]) -> float | None:
    """The version's abstain threshold (chosen on validation at training time), or None without one."""
    value = metrics.get("decision_threshold")
    if isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
        return float(value)
    return None


class ClassifierService:
    """A replica's model side: registry (versions), engine (ONNX), batcher (batch slots), alias poll."""

    def __init__(self, config: ServingConfig, metrics: ServingMetrics | None = None) -> None:
        self.config = cfg = config
        self.metrics = metrics or ServingMetrics(ray_export=cfg.ray_metrics_export)
        self.metrics.served_scenarios = frozenset(s.name for s in cfg.scenarios or ())
        # Version swaps and refusals are INFO/WARNING: kept whatever level the root logger runs at.
        logging.getLogger("labelwise").setLevel(logging.INFO)
        blas_threads = limit_blas_threads()
        providers = choose_providers(cfg.ort_providers, cfg.num_gpus)
        # Every session is checked to run on providers[0] (engine/providers.py): a label, not a guess.
        self.metrics.provider = providers[0]
        threads = cfg.ort_threads
        settings = EngineSettings(
            providers, precision_order(cfg.precision, providers), threads, cfg.lora_mode, cfg.lora_table_rank
        )
        specs = {s.name: s.alias for s in cfg.scenarios} if cfg.scenarios is not None else None
        self.registry = ScenarioRegistry(ModelRepository(cfg.repository), specs, cfg.default_alias, settings)
        policy = BatchPolicy.from_config(cfg)
        self.engine = OnnxEngine(policy)
        self.batcher = Batcher(self.engine.run, policy, self.metrics)
        self._poll_task: asyncio.Task[None] | None = None
        self._first_poll_done = asyncio.Event()  # set once every scenario was tried (loaded or refused)
        # scenario name -> (id and number of the loaded version that last answered a request in full, when):
        # check_health runs no probe pass for a version that answered within the last health check period.
        # Not the version itself: a version swapped out must not be kept alive here.
        self._answered: dict[str, tuple[int, int, float]] = {}
        # Set as Ray Serve begins to drain this replica (serving.app.hear_of_stops): not ready from then on.
        self.stopping = False
        logger.info(
            "replica pid %s: providers %s, precisions %s, %s ORT threads, numpy BLAS threads %s -> %s",
            os.getpid(),
            providers,
            settings.precisions,
            threads,
            blas_threads,
            "unchanged" if blas_threads is None else 1,
        )

    # ---- loading: the alias poll loop ---------------------------------------------------------
    def start(self) -> None:
        """Load in the background: /readyz answers 503 until every configured scenario is in."""
        self._poll_task = asyncio.get_running_loop().create_task(self._poll_forever())

    async def first_load(self, timeout_s: float) -> bool:
        """Wait (at most timeout_s) for the poll loop's first pass: every configured scenario loaded or
        refused. False when it took longer, or the loop ended first."""
        if self._poll_task is None or timeout_s <= 0:
            return self._first_poll_done.is_set()
        waiter = asyncio.ensure_future(self._first_poll_done.wait())
        try:
            await asyncio.wait(
                {waiter, self._poll_task}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        return self._first_poll_done.is_set()

    def stop(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
        self.batcher.close()

    async def _poll_forever(self) -> None:
        # Polling, not file watching: the repository may be a network volume or an object-store mount
        # where inotify does not fire; a poll is one small JSON read per scenario.
        interval = self.config.reload_poll_interval_s
        shown: set[str] = set()  # scenarios whose loaded_version series /metrics shows
        while True:
            try:
                for event in await asyncio.to_thread(self.registry.poll_once):
                    self._record(event)
                self.metrics.served_scenarios = frozenset(self.registry.served())
                # Set again on every poll, not only at a swap: Ray's metrics export drops a gauge
                # series that was not recorded for a while, and the served version must not vanish.
                loaded = {s.name: s.loaded.version for s in self.registry.states() if s.loaded is not None}
                for name, version in loaded.items():
                    self.metrics.loaded_version.labels(name).set(version)
                for name in shown - loaded.keys():  # forgotten (removed from the repository): not serving
                    self.metrics.loaded_version.remove(name)
                shown = set(loaded)
            except Exception:
                # A bad repository state must not stop future polls.
                logger.exception("alias poll failed; retrying in %.1fs", interval)
            self._first_poll_done.set()
            await asyncio.sleep(interval)

    def _record(self, event: LoadEvent) -> None:
        if event.refused:
            self.metrics.reload_failures.labels(event.name).inc()
            return
        self.metrics.loaded_version.labels(event.name).set(event.version)
        if event.previous is not None:
            self.metrics.reloads.labels(event.name).inc()

    # ---- what the routes call ----------------------------------------------------------------
    async def classify(
        self,
        scenario: str,
        texts: list[str],
        top_k: int | None,
        truncate: bool,
        raw_scores: bool = False,
        abstain: bool = False,
    ) -> dict[str, Any]:
        """Per text, labels with probabilities and token counts; with `raw_scores` the logits too; with
        `abstain` the best label, or None when it scores under the version's decision threshold."""
        # Bind the version once: every text of this request is answered by the same version.
        loaded = self.registry.get(scenario)
        # Tokenized on arrival (one Rust call per request), so that the batch slots know each row's
        # length and build passes of rows of similar length (serving/batching.py). A request of long
        # texts is cleaned and tokenized off the event loop: 64 texts of 20,000 characters took 60-80 ms
        # (cleaning most of it), time in which no other request or probe would be answered.
        if sum(map(len, texts)) > LARGE_REQUEST_CHARS:
            ids, cut = await asyncio.to_thread(tokenize_or_refuse, loaded, texts)
        else:
            ids, cut = tokenize_or_refuse(loaded, texts)
        if not truncate:
            for i, was_cut in enumerate(cut):
                if was_cut:
                    raise TextTooLongError(
                        f"texts.{i}: longer than {loaded.tokenizer.max_length_tokens} tokens and truncate is "
                        "false",
                        field=f"texts.{i}",
                    )
        rows = [Row(loaded, t, i, c) for t, i, c in zip(texts, ids, cut, strict=True)]
        results = await self.batcher.submit_many(rows)
        self._answered[scenario] = (id(loaded), loaded.version, time.monotonic())
        labels = loaded.labels
        tokens = [r.tokens for r in results]
        answer: dict[str, Any] = {
            "scenario": scenario,
            "version": loaded.version,
            "results": [top_labels(labels, r.probs, top_k) for r in results],
            "truncated": [r.truncated for r in results],
            "usage": {"tokens": tokens, "total_tokens": sum(tokens)},
        }
        if raw_scores:
            answer["raw_scores"] = [top_labels(labels, r.probs, top_k, r.logits) for r in results]
        if abstain:
            threshold = decision_threshold(loaded.manifest.metrics)
            answer["threshold"] = threshold
            # the label results ranks first (on a tie the lowest index, as argmax)
            answer["decisions"] = [
                ranked[0]["label"] if threshold is None or float(r.probs.max()) >= threshold else None
                for ranked, r in zip(answer["results"], results, strict=True)
            ]
        return answer

    async def list_scenarios(self) -> list[dict[str, Any]]:
        out = []
        for state in self.registry.states():
            info: dict[str, Any] = {
                "name": state.name,
                "alias": state.alias,
                "version": None,
                "last_error": state.last_error,
                "skipped": state.skipped,
            }
            if state.loaded is not None:
                m = state.loaded.manifest
                info.update(
                    version=m.version,
                    strategy=m.strategy,
                    precision=state.loaded.precision,
                    provider=state.loaded.provider,
                    labels=m.labels,
                    max_length_tokens=m.max_length_tokens,
                    metrics=m.metrics,
                )
            out.append(info)
        return out

    async def check_health(self) -> None:
        """Raise when this replica cannot answer, so that Ray Serve replaces it: the alias poll loop has
        ended, or a one-row pass through a loaded scenario's graph fails or hangs.

        A loaded version that answered a request in full within the last `health_check_period_s` gets no
        probe pass: its graph has just shown it runs. So a replica under traffic does not run, every 2 s,
        a pass through each of its graphs besides (with many scenarios, a pass per graph that evicts the
        busy graphs' weights from the caches), and only idle scenarios are probed. A graph that breaks
        under traffic fails its requests at once (500; the log names the scenario) and is probed, and
        the replica failed, at the first check after it stops answering."""
        if self._poll_task is not None and self._poll_task.done():
            raise RuntimeError("the alias poll loop has ended; this replica can no longer load versions")
        recent = time.monotonic() - self.config.health_check_period_s
        loaded = [
            (state.name, state.loaded)
            for state in self.registry.states()
            if state.loaded and not self._answered_since(state.name, state.loaded, recent)
        ]
        if not loaded:
            return
        rows = [Row(scenario, "health check") for _name, scenario in loaded]
        try:
            outcome = await asyncio.wait_for(
                asyncio.to_thread(self.engine.run, rows), self.config.request_timeout_s
            )
        except TimeoutError:
            raise RuntimeError(
                f"a one-row pass took over {self.config.request_timeout_s:g} s (request_timeout_s)"
            ) from None
        failed = {
            name: out
            for (name, _), out in zip(loaded, outcome.results, strict=True)
            if isinstance(out, Exception)
        }
        if failed:
            detail = "; ".join(f"{name}: {type(exc).__name__}: {exc}" for name, exc in failed.items())
            raise RuntimeError(f"ONNX Runtime fails on this replica ({detail})")

    def _answered_since(self, name: str, loaded: LoadedScenario, since: float) -> bool:
        """Whether this loaded version of `name` answered a request in full after `since` (monotonic)."""
        answered = self._answered.get(name)
        return answered is not None and answered[:2] == (id(loaded), loaded.version) and answered[2] > since

    async def readiness(self) -> dict[str, Any]:
        missing = self.registry.missing()
        if self.stopping:  # its requests in flight are still answered; a probe must send no more
            missing = ["(replica stopping: answering the requests in flight)", *missing]
        return {"ready": not missing, "missing": missing, "skipped": self.registry.skipped()}

    async def engine_metrics(self) -> bytes:
        """Engine metrics not already in the metrics the routes render (none when co-located)."""
        return b""

    async def metrics_text(self) -> bytes:
        """This replica's Prometheus text, for a separate ingress to serve on /metrics after its own (the
        classifier of a separate ingress counts no requests: serving.app.ClassifierDeployment)."""
        return self.metrics.render()


__all__ = [
    "ClassifierService",
    "decision_threshold",
    "limit_blas_threads",
    "tokenize_or_refuse",
    "top_labels",
]
