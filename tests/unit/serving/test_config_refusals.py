"""Values Ray Serve refuses only once it has started, and configs that would serve nothing, are refused
where a config is read: ServingConfig, `labelwise deploy`'s read_deploy_config (before the cluster is
contacted) and `labelwise serve`'s plan (before Ray starts). A local plan fits the machine's cores."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import get_args

import pytest
import yaml
from pydantic import ValidationError

from labelwise.server import plan_server, read_deploy_config
from model_repository import UsageError
from serving import ServingConfig
from serving.local_ray import local_cores

REFUSED = {
    "no-replicas": ({"num_replicas": 0}, "num_replicas 0: use 1 or more, or 'auto'"),
    "negative-replicas": ({"num_replicas": -2}, "num_replicas -2: use 1 or more, or 'auto'"),
    # YAML's true is a bool, which pydantic read as 1 (bool is an int): one replica, said nowhere
    "boolean-replicas": ({"num_replicas": True}, "num_replicas true: a boolean where a number goes"),
    "boolean-gpus": ({"num_gpus": True}, "num_gpus true: a boolean where a number goes"),
    "queue-of-0": ({"max_queued_requests": 0}, r"max_queued_requests 0: use -1 \(no limit\) or 1 or more"),
    "min-over-max": (
        {"num_replicas": "auto", "autoscaling_config": {"min_replicas": 5, "max_replicas": 1}},
        r"autoscaling_config: max_replicas \(1\) must be greater than or equal to min_replicas \(5\)",
    ),
    "not-a-number": (
        {"num_replicas": "auto", "autoscaling_config": {"max_replicas": "many"}},
        "autoscaling_config: max_replicas: Input should be a valid integer",
    ),
    "unknown-autoscaling-key": (
        {"num_replicas": "auto", "autoscaling_config": {"max_replica": 3}},
        r"autoscaling_config: unknown key max_replica \(Ray Serve's keys: .*max_replicas",
    ),
    "gpus-below-ray-unit": (
        {"num_gpus": 0.00001},
        r"num_gpus 1e-05: Ray refuses a nonzero resource amount below 0\.0001 \(its smallest fraction\); "
        r"use 0 or 0\.0001 or more",
    ),
    "cpus-below-ray-unit": ({"num_cpus": 0.00009999}, r"num_cpus 9\.999e-05: Ray refuses .* below 0\.0001"),
    "ingress-cpus-below-ray-unit": ({"ingress_num_cpus": 1e-9}, r"ingress_num_cpus 1e-09: Ray refuses"),
    "scenario-name": ({"scenarios": [{"name": "Full Three"}]}, "invalid scenario name 'Full Three'"),
    "alias-name": ({"scenarios": [{"name": "spam", "alias": "Prod"}]}, "invalid alias name 'Prod'"),
    "default-alias-name": ({"default_alias": "the best"}, "invalid alias name 'the best'"),
    "default-scenario-not-listed": (
        {"scenarios": [{"name": "full_three"}, {"name": "frozen_three"}], "default_scenario": "frozen_two"},
        r"default_scenario 'frozen_two' is not in scenarios \(full_three, frozen_three\)",
    ),
    # serve-all mode too: a name no repository holds answered every request that names none 404
    "default-scenario-name": (
        {"default_scenario": "Support Ticket"},
        "invalid default_scenario name 'Support",
    ),
}


@pytest.mark.parametrize(("fields", "message"), REFUSED.values(), ids=REFUSED)
def test_every_reader_refuses_what_ray_or_the_repository_would_refuse_later(
    tmp_path: Path, fields: dict, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        ServingConfig(repository=str(tmp_path), **fields)
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"repository": str(tmp_path), **fields}), encoding="utf-8")
    with pytest.raises(UsageError, match=message):  # `labelwise deploy`, before the cluster is contacted
        read_deploy_config(config)
    with pytest.raises(UsageError, match=message):  # `labelwise serve`, before Ray starts
        plan_server(config, direct_ingress=False)


NUMBER_FIELDS = [
    name
    for name, field in ServingConfig.model_fields.items()
    if {int, float} & {*get_args(field.annotation), field.annotation}
]


@pytest.mark.parametrize("name", NUMBER_FIELDS)
@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_refused_for_every_number_field_naming_it(
    tmp_path: Path, name: str, value: bool
) -> None:
    """Every int or float field (num_replicas, max_batch_size, num_cpus, ...), not only those checked one
    by one; the boolean fields still take true and false."""
    with pytest.raises(ValidationError) as refused:
        ServingConfig(repository=str(tmp_path), **{name: value})
    (error,) = refused.value.errors()
    assert error["loc"] == (name,)
    assert f"{name} {str(value).lower()}: a boolean where a number goes" in error["msg"]


def test_the_boolean_fields_still_take_booleans(tmp_path: Path) -> None:
    config = ServingConfig(repository=str(tmp_path), share_waiting_rows=True, ray_metrics_export=False)
    assert config.share_waiting_rows is True and config.ray_metrics_export is False
    assert len(NUMBER_FIELDS) > 15  # the refusal above is parametrized over them: none went missing


def test_the_values_next_to_the_refused_ones_are_accepted(tmp_path: Path) -> None:
    accepted = [
        {"num_replicas": 1, "max_queued_requests": -1},
        {"max_queued_requests": 1},
        {"num_replicas": "auto", "autoscaling_config": {"min_replicas": 1, "max_replicas": 3}},
        {"scenarios": [{"name": "spam", "alias": "latest"}, {"name": "ham", "alias": "3"}]},
        {"scenarios": [{"name": "spam"}], "default_scenario": "spam"},
        {"default_scenario": "anything"},  # serve-all mode: nothing to check it against
        {"num_gpus": 0.0001, "num_cpus": 0, "ingress_num_cpus": 0.00015},  # Ray's smallest unit, and none
    ]
    for fields in accepted:
        ServingConfig(repository=str(tmp_path), **fields)


@pytest.mark.parametrize("amount", [0.0, 1e-9, 0.00001, 0.00009999, 0.0001, 0.00015, 0.25, 1.0, 2.0])
def test_resource_amounts_are_refused_exactly_where_ray_refuses_them(tmp_path: Path, amount: float) -> None:
    from ray._common.ray_option_utils import _validate_resource_quantity

    ray_refuses = _validate_resource_quantity("num_gpus", amount) is not None
    try:
        ServingConfig(repository=str(tmp_path), num_gpus=amount, num_cpus=amount, ingress_num_cpus=amount)
    except ValidationError as exc:
        assert ray_refuses, exc
        assert {e["loc"][0] for e in exc.errors()} == {"num_gpus", "num_cpus", "ingress_num_cpus"}
    else:
        assert not ray_refuses, f"{amount} accepted, which Ray refuses at deploy time"


def test_a_replica_count_from_the_environment_is_checked_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABELWISE_NUM_REPLICAS", "0")
    with pytest.raises(UsageError, match="num_replicas 0"):
        plan_server(None, repository=tmp_path)


def test_a_bad_variable_is_named_not_blamed_on_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A malformed LABELWISE_SCENARIOS was reported as a type error in a config file that never sets it."""
    monkeypatch.setenv("LABELWISE_SCENARIOS", '[{"name": "x"')
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"repository": str(tmp_path)}), encoding="utf-8")
    with pytest.raises(
        UsageError, match=r"serve\.yaml\) with LABELWISE_SCENARIOS from the environment \(JSON"
    ):
        plan_server(config, direct_ingress=False)
    config.write_text(yaml.safe_dump({"repository": str(tmp_path), "scenarios": "x"}), encoding="utf-8")
    with pytest.raises(UsageError) as caught:  # the file sets it: the file's value is the one refused
        plan_server(config, direct_ingress=False)
    assert "from the environment" not in str(caught.value)


def test_a_version_number_written_as_a_yaml_number_is_a_version(tmp_path: Path) -> None:
    """`alias: 3` reached the string check as an int: "Input should be a valid string"."""
    plan = _plan(tmp_path, scenarios=[{"name": "spam", "alias": 3}, {"name": "ham"}], default_alias=2)
    assert plan.args["scenarios"] == [{"name": "spam", "alias": 3}, {"name": "ham"}]
    listed = [{"name": "spam", "alias": 3}, {"name": "ham"}]
    config = ServingConfig(repository=str(tmp_path), scenarios=listed, default_alias=2)
    assert [(s.name, s.alias) for s in config.scenarios or ()] == [("spam", "3"), ("ham", "2")]
    with pytest.raises(ValidationError, match="valid string"):
        ServingConfig(repository=str(tmp_path), scenarios=[{"name": "spam", "alias": True}])


def test_a_listed_scenario_without_an_alias_serves_the_default_alias(tmp_path: Path) -> None:
    config = ServingConfig(
        repository=str(tmp_path),
        default_alias="staging",
        scenarios=[{"name": "spam"}, {"name": "ham", "alias": "production"}],
    )
    assert [(s.name, s.alias) for s in config.scenarios or ()] == [("spam", "staging"), ("ham", "production")]


def _plan(tmp_path: Path, **fields: object):
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"repository": str(tmp_path), **fields}), encoding="utf-8")
    return plan_server(config, direct_ingress=False)


@pytest.mark.parametrize(
    "fields",
    [
        {"num_replicas": local_cores() + 1},
        {"num_replicas": local_cores(), "ingress_mode": "separate"},
        {
            "num_replicas": "auto",
            "autoscaling_config": {"min_replicas": local_cores() + 2, "max_replicas": 9},
        },
    ],
    ids=["more-replicas-than-cores", "separate-ingress-beside-one-replica-a-core", "autoscaled-minimum"],
)
def test_replicas_the_local_node_could_not_all_run_share_its_cores(
    tmp_path: Path, fields: dict, caplog: pytest.LogCaptureFixture
) -> None:
    """The plan sized num_cpus itself: an even share (rounded down to 0.01), said in a warning, and Ray's
    node gets exactly the cores the plan counted (start_local_ray), so every replica is scheduled."""
    cores = local_cores()
    with caplog.at_level(logging.WARNING, logger="labelwise"):
        plan = _plan(tmp_path, **fields)
    config = ServingConfig(**plan.args)
    replicas = (
        config.num_replicas
        if config.num_replicas != "auto"
        else (config.autoscaling_config or {})["min_replicas"]
    )
    ingress = config.ingress_num_cpus if config.ingress_mode == "separate" else 0.0
    assert replicas * config.num_cpus + ingress <= cores
    assert config.num_cpus >= (cores - ingress) / replicas - 0.01
    assert f"{replicas} replicas on {cores} cores: {config.num_cpus:g} CPUs each" in caplog.text
    assert config.ort_threads == 1


def test_num_cpus_the_config_sets_is_refused_when_the_replicas_do_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cores = local_cores()
    with pytest.raises(UsageError) as refused:
        _plan(tmp_path, num_replicas=cores + 1, num_cpus=1)
    assert str(refused.value) == (
        f"{cores + 1} replicas x num_cpus 1 = {cores + 1} CPUs, more than this machine's {cores} cores: Ray "
        "would never start the replicas beyond them; lower num_replicas, or set num_cpus to "
        f"{int(cores / (cores + 1) * 100) / 100:g} or less (fractions are allowed)"
    )
    monkeypatch.setenv("LABELWISE_NUM_CPUS", str(cores + 1))
    with pytest.raises(UsageError, match=f"1 replica x num_cpus {cores + 1} = {cores + 1} CPUs, more than"):
        _plan(tmp_path)
    # A cluster's replicas are not this machine's business (serve --address, deploy).
    monkeypatch.delenv("LABELWISE_NUM_CPUS")
    config = tmp_path / "serve.yaml"
    fields = {"repository": str(tmp_path), "num_replicas": cores + 1, "num_cpus": 1}
    config.write_text(yaml.safe_dump(fields), encoding="utf-8")
    assert plan_server(config, local=False, direct_ingress=False).args["num_replicas"] == cores + 1


def test_the_environments_repository_reaches_the_apps_args_where_the_file_sets_none(tmp_path: Path) -> None:
    """`labelwise serve --address` deploys plan.args onto a cluster whose replicas do not see this
    machine's LABELWISE_REPOSITORY: the variable must be in them when it is what names the repository."""
    from_env, from_file = str(tmp_path / "env-repo"), str(tmp_path / "file-repo")
    bare, named = tmp_path / "bare.yaml", tmp_path / "named.yaml"
    bare.write_text(yaml.safe_dump({"scenarios": [{"name": "s"}]}), encoding="utf-8")
    named.write_text(yaml.safe_dump({"repository": from_file}), encoding="utf-8")
    plan = plan_server(bare, repository_fallback=from_env, local=False, direct_ingress=False)
    assert plan.args["repository"] == str(plan.config.repository) == from_env
    plan = plan_server(named, repository_fallback=from_env, local=False, direct_ingress=False)
    assert plan.args["repository"] == str(plan.config.repository) == from_file
