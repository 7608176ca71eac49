"""The Ray Serve application: `serve run serving.app:build_app repository=...` or a `serve deploy` YAML.

Two shapes, one service:
- `ingress_mode: combined` (default): one deployment, `ClassifierIngress`, whose replicas hold a
  ClassifierService and serve the FastAPI routes themselves (no extra hop).
- `ingress_mode: separate`: an `IngressDeployment` serves the routes and forwards each service call
  to the classifier replicas through a deployment handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.config import BackpressureConfig

from .api import create_api
from .config import ServingConfig
from .direct_ingress import allow_rebind, swap_replica_function
from .errors import NotReadyError
from .local_ray import keep_replica_grpc_local
from .metrics import ServingMetrics
from .service import ClassifierService

logger = logging.getLogger("labelwise.serving")

# A replica_payload key, not a ServingConfig field: the key is read from each replica's environment.
API_KEY_FROM_ENV = "_api_key_from_env"

_STOP_MARK = "_labelwise_hears_of_stops"


def hear_of_stops() -> bool:
    """Patch Ray Serve's replica drain so that a replica's ClassifierService hears of its stop as the drain
    begins, and its readiness (/readyz, the compatibility routes' probes) says so while the requests in
    flight are answered. Ray tells user code only once the drain is over (__del__): until then /readyz
    said ready. True when applied; a Ray without that method keeps its behaviour, with a warning."""

    def telling_the_service(drain: Any) -> Any:
        async def perform_graceful_shutdown(self: Any) -> None:
            with contextlib.suppress(Exception):  # no replica context (never initialized): nothing to tell
                service = getattr(serve.get_replica_context().servable_object, "service", None)
                if isinstance(service, ClassifierService):
                    service.stopping = True
            await drain(self)

        return perform_graceful_shutdown

    return swap_replica_function(
        "Replica.perform_graceful_shutdown",
        telling_the_service,
        _STOP_MARK,
        "this Ray has no Replica.perform_graceful_shutdown: /readyz says ready as it drains",
    )


# Run where Ray imports this module: in each replica, before it starts its HTTP and gRPC servers.
allow_rebind()
keep_replica_grpc_local()
hear_of_stops()


class ClassifierDeployment:
    """A classifier replica: its ClassifierService, and the HTTP routes when it is the ingress."""

    # Whether this replica answers HTTP, and so counts the requests. Behind a separate ingress it does
    # not: the ingress counts them, and serves this replica's metrics after its own on /metrics, where a
    # second labelwise_requests family would break the exposition format.
    serves_http = False

    async def __init__(self, config: dict[str, Any]) -> None:
        self.config = replica_config(config)
        metrics = ServingMetrics(request_metrics=self.serves_http, ray_export=self.config.ray_metrics_export)
        self.service = ClassifierService(self.config, metrics)
        self.service.start()
        # Serve counts a replica running once this returns (and KubeRay moves traffic to an upgraded
        # cluster once its apps run): a replica that returned before loading would answer 503 to the
        # traffic routed to it. So the first load happens here, within first_load_wait_s.
        wait_s = self.config.first_load_wait_s
        if not await self.service.first_load(wait_s) and wait_s > 0:
            logger.warning(
                "replica still loading after %g s (first_load_wait_s): up now, /readyz 503 until it ends",
                wait_s,
            )

    def __del__(self) -> None:
        """Ray Serve calls this once a stopping replica has drained (and Python may call it again at
        exit): the alias poll ends and the pass workers stop, rows still queued answered 503."""
        service = getattr(self, "service", None)  # absent when __init__ failed
        if service is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed: nothing left to stop
                service.stop()

    # What a separate ingress calls through its handle: the service's own methods.
    async def call(self, method: str, *args: Any) -> Any:
        return await getattr(self.service, method)(*args)

    async def check_health(self) -> None:
        """Ray Serve calls this every health_check_period_s: raising marks the replica unhealthy, and
        Ray replaces it (a replica whose ONNX sessions fail, or whose poll loop ended)."""
        await self.service.check_health()


@serve.ingress()
class ClassifierIngress(ClassifierDeployment):
    """ingress_mode combined: the FastAPI app sits on the classifier replica."""

    serves_http = True

    def __serve_build_asgi_app__(self):
        return create_api(self.service, self.config, self.service.metrics)


class HandleBackend:
    """The service seen through a deployment handle: any service method, awaited on a replica."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    async def _call(self, method: str, *args: Any) -> Any:
        from ray.exceptions import ActorDiedError, ActorUnavailableError

        response = self._handle.call.remote(method, *args)
        try:
            return await response
        except asyncio.CancelledError:  # request_timeout_s (504) or the client left: stop the replica's work
            response.cancel()
            raise
        except (ActorDiedError, ActorUnavailableError) as exc:
            # The classifier replica died (or restarts) with this call on it: Serve replaces it within
            # seconds, so the client is told to retry, not that the service is broken.
            raise NotReadyError(
                f"the classifier replica became unavailable ({type(exc).__name__}); retry"
            ) from None
        except Exception as exc:  # Ray wraps the replica's exception; the routes map the original
            raise (getattr(exc, "cause", None) or exc) from None

    def __getattr__(self, method: str) -> Any:
        async def call(*args: Any) -> Any:
            return await self._call(method, *args)

        return call

    async def engine_metrics(self) -> bytes:
        # One classifier replica's figures; with several replicas scrape Ray's metrics export instead.
        return await self._call("metrics_text")


@serve.ingress()
class IngressDeployment:
    """ingress_mode separate: routes here, model work on the classifier deployment."""

    async def __init__(self, config: dict[str, Any], classifier: Any) -> None:
        self.config = replica_config(config)
        self.metrics = ServingMetrics(
            request_metrics=True, engine_metrics=False, ray_export=self.config.ray_metrics_export
        )
        self.backend = HandleBackend(classifier)
        # The scenario label of a refused request is its name only when served (ServingMetrics); which
        # names are served is known on the classifier: listed ones at once, in serve-all mode as polled.
        self.metrics.served_scenarios = frozenset(s.name for s in self.config.scenarios or ())
        self._follow_task = (
            asyncio.get_running_loop().create_task(self._follow_served_scenarios())
            if self.config.scenarios is None
            else None
        )

    def __del__(self) -> None:
        """Ray Serve calls this once a stopping replica has drained: the served-scenarios poll ends."""
        task = getattr(self, "_follow_task", None)
        if task is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                task.cancel()

    async def _follow_served_scenarios(self) -> None:
        """Serve-all mode: the classifier's served scenarios, asked again every reload_poll_interval_s."""
        failures = 0
        while True:
            try:
                listed = await self.backend.list_scenarios()
                served = frozenset(e["name"] for e in listed if not e.get("skipped"))
            except Exception as exc:  # the classifier is starting or being replaced: ask again
                failures += 1
                # said once a streak outlasts a start (3 polls): refused requests count as _unknown meanwhile
                log = logger.warning if failures == 3 else logger.debug
                log("served scenarios not read from the classifier (%d polls in a row): %s", failures, exc)
            else:
                failures = 0
                self.metrics.served_scenarios = served
            await asyncio.sleep(self.config.reload_poll_interval_s)

    def __serve_build_asgi_app__(self):
        return create_api(self.backend, self.config, self.metrics)


def _overload(config: ServingConfig) -> BackpressureConfig:
    return BackpressureConfig(status_code=config.backpressure_status_code, retry_after_s=config.retry_after_s)


def http_ingress_cap(config: ServingConfig) -> int:
    """Ray's max_ongoing_requests for a deployment that serves HTTP.

    The app admits `max_ongoing_requests` API requests and refuses the rest itself, in JSON
    (serving/api/admission.py); Ray's cap sits well above that, so that refusals still in flight and
    the probes never meet Ray's text/plain backpressure or wait in its queue."""
    return 2 * config.max_ongoing_requests + 64


def classifier_options(config: ServingConfig, serves_http: bool) -> dict[str, Any]:
    """Ray Serve deployment options of the classifier replicas, from the one config."""
    cap = http_ingress_cap(config) if serves_http else config.max_ongoing_requests
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": config.num_cpus, "num_gpus": config.num_gpus},
        "max_ongoing_requests": cap,
        "max_queued_requests": config.max_queued_requests,
        "backpressure_config": _overload(config),
        # Short: a replica whose sessions broke (check_health) or that died is replaced within seconds.
        "health_check_period_s": config.health_check_period_s,
        # A drained replica finishes what it holds: the longest a request may take, and a margin.
        "graceful_shutdown_timeout_s": max(20.0, config.request_timeout_s + 5),
    }
    if config.num_replicas == "auto":
        options["num_replicas"] = "auto"
        options["autoscaling_config"] = config.autoscaling_config or {
            "min_replicas": 1,
            "max_replicas": 4,
            "target_ongoing_requests": 64,
        }
    else:
        options["num_replicas"] = config.num_replicas
    return options


INGRESS_NAME = "labelwise"
CLASSIFIER_NAME = "labelwise-classifier"


def deployment_names(config: ServingConfig) -> list[str]:
    """The deployments `build_app` makes for this config: what a Serve `deployments:` entry may name."""
    return [INGRESS_NAME] if config.ingress_mode == "combined" else [INGRESS_NAME, CLASSIFIER_NAME]


def replica_payload(config: ServingConfig, args: dict[str, Any]) -> dict[str, Any]:
    """The ServingConfig a replica is built with, as the deployment's init argument, which Ray keeps in
    the Serve controller's checkpoint (in the GCS, in Redis with GCS fault tolerance) and shows in its
    state API. An API key that came from the environment (LABELWISE_API_KEY: the chart's Secret) is left
    out: each replica reads it from its own environment (replica_config), so the key is stored nowhere in
    Ray, and a rotated Secret takes effect as pods restart, without a new deployment. A key given in
    args (a local config file) travels as given. Only the fields set (args, this process's LABELWISE_*
    variables) travel: the rest are left to each replica's own LABELWISE_* variables and defaults, so
    that a cluster's LABELWISE_REPOSITORY=/models applies where the driver set no repository."""
    payload = config.model_dump(mode="json", exclude_unset=True)
    if config.api_key is not None and "api_key" not in args:
        del payload["api_key"]
        payload[API_KEY_FROM_ENV] = True
    return payload


def replica_config(payload: dict[str, Any]) -> ServingConfig:
    """A replica's ServingConfig from replica_payload's dict. A key expected from the environment but
    not found there stops the replica (it would otherwise serve /v1 without the key)."""
    fields = dict(payload)
    key_from_env = fields.pop(API_KEY_FROM_ENV, False)
    config = ServingConfig(**fields)
    if key_from_env and config.api_key is None:
        raise RuntimeError(
            "the app was built with an API key from LABELWISE_API_KEY, which this replica's environment "
            "does not have: refusing to serve /v1 without it (set it on every Ray node)"
        )
    return config


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Build the Serve app; args are ServingConfig fields, LABELWISE_* env vars fill the rest."""
    config = ServingConfig(**(args or {}))
    payload = replica_payload(config, args or {})
    if config.ingress_mode == "combined":
        deployment = serve.deployment(ClassifierIngress, name=INGRESS_NAME)
        return deployment.options(**classifier_options(config, serves_http=True)).bind(payload)
    classifier = serve.deployment(ClassifierDeployment, name=CLASSIFIER_NAME)
    ingress = serve.deployment(IngressDeployment, name=INGRESS_NAME).options(
        ray_actor_options={"num_cpus": config.ingress_num_cpus},
        max_ongoing_requests=http_ingress_cap(config),
        max_queued_requests=config.max_queued_requests,
        backpressure_config=_overload(config),
        health_check_period_s=config.health_check_period_s,
    )
    classifier_app = classifier.options(**classifier_options(config, serves_http=False)).bind(payload)
    return ingress.bind(payload, classifier_app)
