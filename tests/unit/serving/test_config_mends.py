"""Review mends of the serving config: what a cluster's replicas are built with, and configs that would
serve nothing or be ignored in part, refused where the config is read."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from serving import ServingConfig


def _payload(args: dict) -> dict:
    from serving.app import replica_payload

    return replica_payload(ServingConfig(**args), args)


def test_cluster_replicas_apply_their_own_labelwise_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """`labelwise serve --address` without -r: the replicas' LABELWISE_REPOSITORY (the image's /models)
    applies, not the driver's default ./var/model-repository."""
    pytest.importorskip("ray.serve")
    from labelwise.server import plan_server
    from serving.app import replica_config

    for name in ("LABELWISE_REPOSITORY", "LABELWISE_MAX_BATCH_TOKENS"):
        monkeypatch.delenv(name, raising=False)
    plan = plan_server(local=False, direct_ingress=False)
    payload = _payload(plan.args)
    monkeypatch.setenv("LABELWISE_REPOSITORY", "/models")  # the cluster node's environment
    monkeypatch.setenv("LABELWISE_MAX_BATCH_TOKENS", "65536")
    replica = replica_config(payload)
    assert (replica.repository, replica.max_batch_tokens) == ("/models", 65536)


def test_a_local_serve_still_passes_its_plan_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("ray.serve")
    from labelwise.server import plan_server
    from serving.app import replica_config

    monkeypatch.setenv("LABELWISE_MAX_BATCH_SIZE", "7")
    plan = plan_server(repository=tmp_path)
    payload = _payload(plan.args)
    assert payload["repository"] == str(tmp_path) and payload["max_batch_size"] == 7
    assert payload["num_cpus"] == plan.config.num_cpus  # the local sizing travels explicitly
    monkeypatch.delenv("LABELWISE_MAX_BATCH_SIZE")
    assert replica_config(payload).max_batch_size == 7


@pytest.mark.parametrize(
    ("scenarios", "message"),
    [
        ([], "scenarios is empty"),
        (
            [{"name": "a", "alias": "production"}, {"name": "a", "alias": "staging"}],
            "scenarios lists a more than once",
        ),
    ],
)
def test_scenarios_that_would_serve_nothing_or_collapse_are_refused(scenarios: list, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        ServingConfig(scenarios=scenarios)
    assert caught.value.errors()[0]["loc"] == ("scenarios",)


def test_serve_all_and_distinct_scenarios_still_validate() -> None:
    assert ServingConfig().scenarios is None
    listed = ServingConfig(scenarios=[{"name": "a"}, {"name": "b", "alias": "staging"}]).scenarios
    assert [(s.name, s.alias) for s in listed or []] == [("a", "production"), ("b", "staging")]


@pytest.mark.parametrize("replicas", [{"num_replicas": 2}, {}])
def test_autoscaling_config_beside_fixed_replicas_is_refused(replicas: dict) -> None:
    pytest.importorskip("ray.serve")
    with pytest.raises(ValidationError, match="autoscaling_config is set but num_replicas is") as caught:
        ServingConfig(**replicas, autoscaling_config={"min_replicas": 1, "max_replicas": 4})
    assert "'auto'" in str(caught.value)
    ServingConfig(num_replicas="auto", autoscaling_config={"min_replicas": 1, "max_replicas": 4})
