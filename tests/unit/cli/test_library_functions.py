"""What each `labelwise` command runs is a library function that works without the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import yaml

from labelwise import catalog, errors
from labelwise.client import ClientError, LabelwiseClient
from labelwise.extras import MissingExtraError, require
from labelwise.server import ServePlan, local_replica_cpus, plan_server
from labelwise.training_runs import export_precisions, run_training, train_overrides
from model_repository import (
    InvalidNameError,
    LabelwiseError,
    ModelRepository,
    ScenarioNotFoundError,
    UsageError,
)
from serving.local_ray import local_cores
from tests.conftest import manifest_fields

FIELDS = manifest_fields()


def _publish(repo: ModelRepository, scenario: str) -> int:
    with repo.new_version(scenario, **FIELDS) as draft:
        (draft.path / "labels.txt").write_text("negative\npositive\n")
        (draft.path / "onnx").mkdir()  # promote refuses a version without a graph: no replica loads it
        (draft.path / "onnx" / "model.fp32.onnx").write_bytes(b"graph")
    return draft.version


def test_every_package_error_derives_from_the_root() -> None:
    for name in errors.__all__:
        if name.startswith("EXIT_"):
            continue
        assert issubclass(getattr(errors, name), LabelwiseError), name
    assert (errors.EXIT_RUNTIME, errors.EXIT_USAGE) == (1, 2)
    assert errors.UsageError.exit_code == 2 and errors.RepositoryError.exit_code == 1


def test_catalog_lists_shows_verifies_and_promotes(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    assert catalog.list_scenarios(repo) == []
    _publish(repo, "spam")
    _publish(repo, "spam")
    assert catalog.promote(repo, "spam", 1) is None
    assert catalog.promote(repo, "spam", 2) == 1
    (row,) = catalog.list_scenarios(repo)
    assert (row.scenario, row.versions, row.aliases) == ("spam", [1, 2], {"production": 2})
    assert catalog.show_version(repo, "spam", "production").version == 2
    assert catalog.verify_version(repo, "spam", "1").version == 1
    with pytest.raises(ScenarioNotFoundError):
        catalog.show_version(repo, "absent")
    with pytest.raises(InvalidNameError):
        catalog.promote(repo, "spam", 1, alias="Not Valid")


@pytest.mark.parametrize("body", [b"", b'{"version":"abc"}', b"[1]", b'{"version": true}'])
def test_an_unreadable_alias_is_listed_as_such_and_promote_overwrites_it(tmp_path: Path, body: bytes) -> None:
    repo = ModelRepository(tmp_path)
    _publish(repo, "spam")
    _publish(repo, "spam")
    catalog.promote(repo, "spam", 1, alias="staging")
    (tmp_path / "spam" / "_aliases" / "production.json").write_bytes(body)
    (row,) = catalog.list_scenarios(repo)
    assert row.aliases == {"production": "unreadable", "staging": 1}
    # Another alias of the scenario is promoted without reading the bad one...
    assert catalog.promote(repo, "spam", 2, alias="staging") == 1
    # ...and the bad one is overwritten, and said to have been unreadable (not a new alias).
    assert catalog.promote(repo, "spam", 2) == catalog.UNREADABLE
    assert repo.aliases("spam") == {"production": 2, "staging": 2}


def test_an_all_digit_alias_is_refused(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    _publish(repo, "spam")
    with pytest.raises(InvalidNameError, match="all-digit"):
        catalog.promote(repo, "spam", 1, alias="2")
    assert not (tmp_path / "spam" / "_aliases" / "2.json").exists()


def test_plan_server_reads_the_file_and_applies_the_flags(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "http_options": {"host": "127.0.0.1", "port": 8123},
                "applications": [
                    {
                        "name": "lw",
                        "route_prefix": "/lw",
                        "import_path": "serving.app:build_app",  # Ray's ServeDeploySchema requires it
                        "args": {"max_batch_size": 8},
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    plan = plan_server(config, repository=tmp_path, port=9000)
    assert plan == ServePlan(
        # num_cpus: not in the file, so the one replica gets every core this process may use
        args={
            "max_batch_size": 8,
            "repository": str(tmp_path),
            "num_cpus": float(local_cores()),
            # batch slots sharing the rows waiting, each pass on half the cores
            **(
                {
                    # single-threaded passes (2-3 cores): one pass worker per core
                    "max_concurrent_batches": local_cores() if local_cores() < 4 else 2,
                    "share_waiting_rows": True,
                    "ort_intra_op_threads": local_cores() // 2,
                }
                if local_cores() >= 2
                else {}
            ),
            # one combined replica: its /metrics sees every request, so no second copy through Ray
            "ray_metrics_export": False,
        },
        host="127.0.0.1",
        port=9000,
        app_name="lw",
        route_prefix="/lw",
        direct_ingress=True,
    )


@pytest.mark.parametrize(
    "fields, cores, expected",
    [
        ({}, 2, 2.0),  # one replica: every core, and as many ORT threads
        ({}, 16, 16.0),
        ({"num_replicas": 2}, 16, 8.0),  # --proxy with two replicas: the cores split between them
        ({"num_replicas": 3}, 2, 1.0),  # never below one
        ({"ingress_mode": "separate"}, 4, 3.0),  # the separate ingress keeps its 0.5 CPU
        ({"num_replicas": "auto"}, 16, 1.0),  # autoscaling: room to scale out
    ],
)
def test_local_replicas_share_every_core(fields: dict, cores: int, expected: float) -> None:
    from serving import ServingConfig

    assert local_replica_cpus(ServingConfig(**fields), cores) == expected


def test_a_configured_num_cpus_is_kept_and_a_cluster_gets_none_of_this_machine(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"num_cpus": 1}), encoding="utf-8")
    assert plan_server(config, repository=tmp_path).args["num_cpus"] == 1
    config.write_text(yaml.safe_dump({"max_batch_size": 8}), encoding="utf-8")
    assert "num_cpus" not in plan_server(config, repository=tmp_path, local=False).args


@pytest.mark.parametrize(
    "fields, local, exported",
    [
        ({}, True, False),  # one combined replica on this machine: /metrics is the whole picture
        ({"ray_metrics_export": True}, True, True),  # asked for
        ({"num_replicas": 2}, True, True),  # /metrics shows one replica of two
        ({"ingress_mode": "separate"}, True, True),  # the engine metrics live on another replica
        ({}, False, True),  # a cluster (--address): the chart's PodMonitor reads Ray's export
    ],
)
def test_the_ray_metrics_copy_is_dropped_only_where_metrics_sees_everything(
    tmp_path: Path, fields: dict, local: bool, exported: bool
) -> None:
    from serving import ServingConfig

    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"repository": str(tmp_path), **fields}), encoding="utf-8")
    args = plan_server(config, local=local).args
    assert ServingConfig(**args).ray_metrics_export is exported


def test_plan_server_refuses_bad_configs_before_ray(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        plan_server(tmp_path / "absent.yaml")
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"repository": str(tmp_path), "num_replicas": "auto"}), encoding="utf-8")
    with pytest.raises(UsageError, match="--proxy"):
        plan_server(config)
    assert plan_server(config, direct_ingress=False).args["num_replicas"] == "auto"
    # A fixed number of replicas: each one listens on the port (shared, SO_REUSEPORT).
    config.write_text(yaml.safe_dump({"repository": str(tmp_path), "num_replicas": 2}), encoding="utf-8")
    assert plan_server(config).ingress_replicas == 2
    config.write_text(
        yaml.safe_dump({"repository": str(tmp_path), "num_replicas": 3, "ingress_mode": "separate"}),
        encoding="utf-8",
    )
    assert plan_server(config).ingress_replicas == 1
    config.write_text(yaml.safe_dump({"max_batch_size": "many"}), encoding="utf-8")
    with pytest.raises(UsageError, match="max_batch_size"):
        plan_server(config)
    # A port no socket can bind is refused here, not by a traceback from Ray's HTTP server
    for port in (0, 65536, 99999, -1):
        with pytest.raises(UsageError, match=f"^--port {port}: use a TCP port from 1 to 65535"):
            plan_server(None, port=port)
    assert plan_server(None, port=65535).port == 65535
    # ...and one the Serve file names, as its field (it read "port 0", as if --port had been typed)
    app = {"name": "labelwise", "route_prefix": "/", "import_path": "serving.app:build_app", "args": {}}
    config.write_text(yaml.safe_dump({"http_options": {"port": 0}, "applications": [app]}), encoding="utf-8")
    with pytest.raises(UsageError, match=r"http_options\.port 0: use a TCP port") as refused:
        plan_server(config, repository=tmp_path)
    assert str(refused.value).startswith(f"{config}: ")
    assert plan_server(config, repository=tmp_path, port=8123).port == 8123


def test_option_parsing_for_training() -> None:
    assert export_precisions("fp32, int8") == ["fp32", "int8"]
    assert export_precisions("none") == []
    # An unknown precision is refused when the options are read, before a run it would have published.
    from training.errors import UnknownPrecisionError

    with pytest.raises(UnknownPrecisionError, match=r"^--export fp32,fp64: unknown precision fp64"):
        export_precisions("fp32,fp64")
    assert train_overrides(
        lora_r=None, lora_target_modules="query, value", early_stopping_patience=0, seed=3
    ) == {"lora_target_modules": ["query", "value"], "early_stopping_patience": 0, "seed": 3}  # 0: off


def test_run_training_saves_or_publishes(tiny_roberta_dir: Path, toy_data_dir: Path, tmp_path: Path) -> None:
    from training import custom_scenario, make_train_config

    scenario = custom_scenario("toy", ["positive", "negative", "neutral"], toy_data_dir, max_length_tokens=32)

    def config(folder: str):
        return make_train_config(
            scenario,
            "frozen",
            base_model=str(tiny_roberta_dir),
            output_dir=tmp_path / folder,
            max_steps=2,
            max_train_samples=30,
            max_eval_samples=15,
        )

    saved = run_training(config("saved"), publish=False)
    assert saved.manifest is None and saved.weights_bytes and saved.weights_bytes > 0
    assert "not published" in saved.where()
    repo = ModelRepository(tmp_path / "repo")
    published = run_training(config("published"), repo, export="none")
    assert published.manifest is not None and published.where() == "published toy v1"
    repo.verify("toy", 1)
    # No alias on a version without a graph (no replica loads it): refused before training, nothing published.
    with pytest.raises(UsageError, match="--alias production with --export none"):
        run_training(config("aliased"), repo, export="none", alias="production")
    assert repo.list_versions("toy") == [1] and repo.aliases("toy") == {}
    assert not (tmp_path / "aliased").exists()  # no run folder: no training started


def test_client_error_is_a_labelwise_error() -> None:
    body = {"error": {"type": "unknown_scenario", "message": "no scenario 'x'", "code": 404}}
    client = LabelwiseClient(max_retries=0)
    client._http = httpx.Client(
        base_url="http://127.0.0.1:8000",
        transport=httpx.MockTransport(lambda _r: httpx.Response(404, json=body)),
    )
    with client, pytest.raises(ClientError) as caught:
        client.classify("x", ["a"])
    exc = caught.value
    assert isinstance(exc, LabelwiseError) and exc.exit_code == 1
    assert (exc.status, exc.type, exc.body) == (404, "unknown_scenario", body)
    assert str(exc) == "404 unknown_scenario: no scenario 'x'"


def test_require_names_the_extra() -> None:
    assert require("json").dumps([]) == "[]"
    with pytest.raises(MissingExtraError, match=r"pip install 'labelwise\[dev\]'") as caught:
        require("labelwise_no_such_module")
    assert isinstance(caught.value, ImportError) and caught.value.exit_code == 2


def test_the_demo_serves_as_labelwise_serve_does(tmp_path: Path) -> None:
    """`make demo` is a new user's first run: the same plan as `labelwise serve --repository R --port P`
    (every core, direct ingress), for the demo's own scenarios."""
    from labelwise.demo import DEMO_SCENARIOS, demo_plan

    plan = demo_plan(tmp_path, 8011)
    served = plan_server(repository=tmp_path, host="127.0.0.1", port=8011)
    assert plan.args.pop("scenarios") == [{"name": name} for name in DEMO_SCENARIOS]
    served.args.pop("scenarios", None)
    assert plan == served
    assert plan.direct_ingress and plan.host == "127.0.0.1" and plan.port == 8011
    assert plan.args["num_cpus"] == float(local_cores())


def test_train_and_compare_leave_patience_to_the_scenario_unless_given() -> None:
    """Not giving --early-stopping-patience means the scenario's patience for the strategy (3 for full and
    LoRA in the packaged scenarios), not a CLI default that overrides it."""
    import typer.main

    from labelwise.cli import app
    from training import make_train_config

    command = typer.main.get_command(app)
    for name in ("train", "compare"):
        option = next(p for p in command.commands[name].params if p.name == "early_stopping_patience")
        assert option.default is None, name
    assert (
        make_train_config("emotion", "lora", early_stopping_patience=option.default).early_stopping_patience
        == 3
    )
    assert make_train_config("emotion", "lora", early_stopping_patience=0).early_stopping_patience == 0


def test_local_cores_follow_a_containers_cpu_quota(tmp_path: Path) -> None:
    """`docker run --cpus 1.5` or a Kubernetes CPU limit sets a CFS quota and leaves the affinity whole:
    the replica's num_cpus (and ORT threads) must follow the quota, as Ray's own CPU count does, or a
    replica asks for more CPUs than the node has and never starts."""
    from serving.local_ray import cgroup_cpu_quota

    affinity = len(os.sched_getaffinity(0))
    v2 = tmp_path / "v2"
    v2.mkdir()
    assert cgroup_cpu_quota(v2) is None and local_cores(v2) == affinity  # no cgroup files: the affinity
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(v2) is None and local_cores(v2) == affinity  # no quota
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(v2) == 1.5 and local_cores(v2) == 1  # whole cores, as Ray counts them
    (v2 / "cpu.max").write_text("50000 100000\n")
    assert local_cores(v2) == 1  # at least one
    (v2 / "cpu.max").write_text(f"{(affinity + 8) * 100000} 100000\n")
    assert local_cores(v2) == affinity  # a quota above the affinity does not add cores
    v1 = tmp_path / "v1" / "cpu,cpuacct"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(v1.parent) is None
    (v1 / "cpu.cfs_quota_us").write_text("100000\n")
    assert cgroup_cpu_quota(v1.parent) == 1.0 and local_cores(v1.parent) == 1


def test_the_start_message_url_brackets_an_ipv6_host() -> None:
    """`labelwise serve --host ::1` printed http://::1:8000, which no client can use."""
    from labelwise.server import served_url

    assert served_url("::1", 8000) == "http://[::1]:8000"
    assert served_url("[::1]", 8000, "/api") == "http://[::1]:8000/api"
    assert served_url("127.0.0.1", 8123, "/") == "http://127.0.0.1:8123"


@pytest.mark.parametrize("host", ["", "  "])
def test_an_empty_host_is_refused_by_serve_and_deploy(tmp_path: Path, host: str) -> None:
    """`serve --host ""` took the file's host, saying nothing; `deploy --host ""` sent the cluster an empty
    address. Both refuse it before reading anything (deploy never contacts the address)."""
    from labelwise.server import deploy_to_cluster, plan_server
    from model_repository.errors import UsageError

    with pytest.raises(UsageError, match="--host is empty"):
        plan_server(host=host)
    with pytest.raises(UsageError, match="--host is empty"):
        deploy_to_cluster(tmp_path / "absent.yaml", "http://127.0.0.1:9", host=host)
