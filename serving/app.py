"""The application builder: `serve run serving.app:build_app repository=...` or a `serve deploy` YAML."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.config import BackpressureConfig

from .config import ServingConfig
from .deployments import ClassifierCore, ClassifierServer, IngressServer


def classifier_options(config: ServingConfig) -> dict[str, Any]:
    """Ray Serve deployment options of the classifier replicas, from the one config."""
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": config.num_cpus, "num_gpus": config.num_gpus},
        "max_ongoing_requests": config.max_ongoing_requests,
        "max_queued_requests": config.max_queued_requests,
        "backpressure_config": BackpressureConfig(
            status_code=config.backpressure_status_code, retry_after_s=config.retry_after_s
        ),
        "health_check_period_s": 10,
        "graceful_shutdown_timeout_s": 20,
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


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Build the Serve app; args are ServingConfig fields, LABELWISE_* env vars fill the rest."""
    config = ServingConfig(**(args or {}))
    payload = config.model_dump(mode="json")
    if config.ingress_mode == "combined":
        deployment = serve.deployment(ClassifierServer, name="labelwise").options(
            **classifier_options(config)
        )
        return deployment.bind(payload)
    classifier = serve.deployment(ClassifierCore, name="labelwise-classifier").options(
        **classifier_options(config)
    )
    ingress = serve.deployment(IngressServer, name="labelwise").options(
        ray_actor_options={"num_cpus": config.ingress_num_cpus},
        max_ongoing_requests=config.max_ongoing_requests,
        max_queued_requests=config.max_queued_requests,
        backpressure_config=BackpressureConfig(
            status_code=config.backpressure_status_code, retry_after_s=config.retry_after_s
        ),
    )
    return ingress.bind(payload, classifier.bind(payload))
