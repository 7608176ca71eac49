"""`labelwise deploy` refuses a `deployments:` entry naming a deployment the app does not have (Ray refused
it only on the cluster, after the upload), and a cluster run says when Serve's proxies would listen on
loopback (reachable only from inside each node). No cluster is contacted: the address is a closed port."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from labelwise.cli import app
from labelwise.server import deploy_to_cluster, plan_server, read_deploy_config
from model_repository.errors import LabelwiseError, UsageError
from serving.local_ray import free_loopback_port

pytest.importorskip("ray.serve")

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "helm" / "labelwise" / "files" / "serve-config.yaml"
BUILD_APP = "serving.app:build_app"
LOOPBACK_WARNING = "Serve's proxies will answer only on each node's own loopback"


def _deploy_file(tmp_path: Path, args: dict[str, object], deployments: list[dict[str, object]]) -> Path:
    entry = {"name": "labelwise", "route_prefix": "/", "import_path": BUILD_APP, "args": args}
    path = tmp_path / "serve.yaml"
    path.write_text(
        yaml.safe_dump({"applications": [{**entry, "deployments": deployments}]}), encoding="utf-8"
    )
    return path


def test_deploy_refuses_a_deployment_the_app_does_not_have_by_name(tmp_path: Path) -> None:
    # Before: accepted here, refused by Serve on the cluster after the upload.
    config = _deploy_file(tmp_path, {"num_replicas": 2}, [{"name": "Classifier", "num_replicas": 3}])
    with pytest.raises(UsageError) as refused:
        read_deploy_config(config)
    message = str(refused.value)
    assert "'Classifier'" in message and "its deployments are 'labelwise'" in message, message
    result = CliRunner().invoke(
        app, ["deploy", "--address", f"http://127.0.0.1:{free_loopback_port()}", "--config", str(config)]
    )
    assert result.exit_code == 2, result.output  # before the (closed) address is tried: that is exit 1
    assert "'Classifier'" in result.output


@pytest.mark.parametrize(
    "args, names",
    [
        ({}, ["labelwise"]),
        ({"ingress_mode": "separate"}, ["labelwise", "labelwise-classifier"]),
    ],
    ids=["combined", "separate"],
)
def test_deploy_accepts_the_apps_own_deployment_names(
    tmp_path: Path, args: dict[str, object], names: list[str]
) -> None:
    config = _deploy_file(tmp_path, args, [{"name": name, "num_replicas": 2} for name in names])
    sent = read_deploy_config(config)
    assert [d["name"] for d in sent["applications"][0]["deployments"]] == names
    # ...and the classifier's name only where the app has that deployment
    if len(names) == 1:
        with pytest.raises(UsageError, match="'labelwise-classifier'"):
            read_deploy_config(_deploy_file(tmp_path, args, [{"name": "labelwise-classifier"}]))


@pytest.mark.parametrize(
    "autoscaling, problem",
    [
        # Serve ignores a key it does not know: max_replicas stayed at its default, 1 replica
        ({"min_replicas": 1, "max_replica": 16}, "unknown key max_replica"),
        ({"min_replicas": 4, "max_replicas": 2}, "max_replicas"),  # Serve refused it after the upload
    ],
    ids=["typo", "min-above-max"],
)
def test_deploy_checks_a_deployments_autoscaling_config_as_the_apps_own(
    tmp_path: Path, autoscaling: dict[str, object], problem: str
) -> None:
    # Before: args.autoscaling_config was checked by Ray's AutoscalingConfig here, a deployments entry's
    # (the chart's way) was sent as it was.
    entry = {"name": "labelwise", "num_replicas": "auto", "autoscaling_config": autoscaling}
    config = _deploy_file(tmp_path, {}, [entry])
    with pytest.raises(UsageError, match=f"deployments labelwise: autoscaling_config: .*{problem}"):
        read_deploy_config(config)
    result = CliRunner().invoke(
        app, ["deploy", "--address", f"http://127.0.0.1:{free_loopback_port()}", "--config", str(config)]
    )
    assert result.exit_code == 2, result.output  # before the (closed) address is tried: that is exit 1
    good = {**entry, "autoscaling_config": {"min_replicas": 1, "max_replicas": 16}}
    assert read_deploy_config(_deploy_file(tmp_path, {}, [good]))["applications"][0]["deployments"] == [good]


def test_serve_on_a_cluster_warns_where_the_proxies_would_listen_on_loopback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: the shipped file's 127.0.0.1 went to the cluster unsaid; a flat file (no host) got it too.
    with caplog.at_level(logging.WARNING, logger="labelwise"):
        plan = plan_server(SHIPPED, repository=tmp_path, local=False, direct_ingress=False)
    assert plan.host == "127.0.0.1"
    assert LOOPBACK_WARNING in caplog.text and "--host 0.0.0.0" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="labelwise"):
        plan = plan_server(SHIPPED, repository=tmp_path, host="0.0.0.0", local=False, direct_ingress=False)
    assert plan.host == "0.0.0.0" and LOOPBACK_WARNING not in caplog.text
    # A flat file names no host: on a cluster Ray's default, as `labelwise deploy` sends it; locally loopback.
    flat = tmp_path / "flat.yaml"
    flat.write_text(yaml.safe_dump({"repository": str(tmp_path)}), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="labelwise"):
        assert plan_server(flat, local=False, direct_ingress=False).host == "0.0.0.0"
    assert LOOPBACK_WARNING not in caplog.text
    assert plan_server(flat, direct_ingress=False).host == "127.0.0.1"


def test_deploy_warns_where_the_proxies_would_listen_on_loopback(caplog: pytest.LogCaptureFixture) -> None:
    closed = f"http://127.0.0.1:{free_loopback_port()}"  # nothing listens: the deploy ends there, exit 1
    with caplog.at_level(logging.WARNING, logger="labelwise"), pytest.raises(LabelwiseError, match="reach"):
        deploy_to_cluster(SHIPPED, closed, timeout_s=0)
    assert LOOPBACK_WARNING in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="labelwise"), pytest.raises(LabelwiseError, match="reach"):
        deploy_to_cluster(SHIPPED, closed, timeout_s=0, host="0.0.0.0")
    assert LOOPBACK_WARNING not in caplog.text


@pytest.mark.parametrize(
    ("app_extra", "where"),
    [
        ({"args": {"api_key": "sekret-abc123"}}, "args.api_key"),
        ({"runtime_env": {"env_vars": {"LABELWISE_API_KEY": "sekret-abc123"}}}, "LABELWISE_API_KEY"),
    ],
)
def test_deploy_refuses_an_api_key_in_the_serve_config(
    tmp_path: Path, app_extra: dict[str, object], where: str
) -> None:
    """The key went to the cluster as written, where `serve config` and the dashboard show it."""
    entry = {
        "name": "labelwise",
        "import_path": BUILD_APP,
        "args": {"repository": "/srv/models"},
        **app_extra,
    }
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"applications": [entry]}), encoding="utf-8")
    with pytest.raises(UsageError) as refused:
        read_deploy_config(config)
    assert where in str(refused.value) and "sekret" not in str(refused.value)
    assert "ray start" in str(refused.value)


def test_deploy_names_an_app_the_file_leaves_unnamed_and_warns_of_a_node_relative_repository(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An app without `name` was deployed, then the command failed on KeyError 'name' (the file had
    replaced the cluster's apps by then); a relative repository resolves on each node, not here."""
    config = tmp_path / "serve.yaml"
    entry = {"import_path": BUILD_APP, "args": {"repository": "../repo"}}
    config.write_text(yaml.safe_dump({"applications": [entry]}), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="labelwise"):
        sent = read_deploy_config(config)
    assert sent["applications"][0]["name"] == "default"  # Serve's own default, named
    assert any("repository ../repo is relative" in r.getMessage() for r in caplog.records), caplog.text
    plan = plan_server(None, repository=Path("../repo"), local=False)
    assert Path(plan.args["repository"]).is_absolute()  # resolved here, where it was given


def test_serve_on_a_cluster_takes_the_files_proxy_location_unless_one_is_given(tmp_path: Path) -> None:
    """`labelwise serve --address --config` with `proxy_location: HeadOnly` started Serve with EveryNode
    (the option's default), without a word; `labelwise deploy` applied the same file's HeadOnly."""
    entry = {"name": "labelwise", "import_path": BUILD_APP, "args": {"repository": "/srv/models"}}
    config = tmp_path / "serve.yaml"
    config.write_text(
        yaml.safe_dump({"proxy_location": "HeadOnly", "applications": [entry]}), encoding="utf-8"
    )
    assert plan_server(config, local=False).proxy_location == "HeadOnly"
    assert (
        plan_server(_deploy_file(tmp_path, {"repository": "/srv/models"}, []), local=False).proxy_location
        is None
    )


@pytest.mark.parametrize("address", ["http://", "https://", "http://:8265"])
def test_deploy_refuses_a_dashboard_url_without_a_host_before_contacting_anything(
    tmp_path: Path, address: str
) -> None:
    # Before: "cannot reach the Ray cluster at http:" after a 10 s lookup, exit 1.
    config = _deploy_file(tmp_path, {"num_replicas": 1}, [])
    result = CliRunner().invoke(app, ["deploy", "--address", address, "--config", str(config)])
    assert result.exit_code == 2 and "no host" in result.output, result.output


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("s3://models/prod", "s3://models/prod"),
        ("gs://models", "gs://models"),
        ("file:///srv/models", "/srv/models"),
    ],
)
def test_serve_on_a_cluster_sends_a_repository_url_as_a_url(given: str, sent: str) -> None:
    """`labelwise serve --address ... -r s3://models/prod` reaches plan_server as a Path, `s3:/models/prod`,
    which was taken for a relative folder and sent to the cluster as `<cwd>/s3:/models/prod`."""
    assert plan_server(None, repository=Path(given), local=False).args["repository"] == sent


def test_deploy_warns_of_a_relative_folder_but_not_of_an_object_store_url(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The relative-repository warning reads the repository as serving does: `s3:/bucket/prefix` (a URL
    that went through a Path) is a URL, not a relative folder, and `file:///srv/models` an absolute one."""
    cases = (
        ("models/v1", True),
        ("s3:/bucket/prefix", False),
        ("file:///srv/models", False),
        ("/srv", False),
    )
    for repository, warned in cases:
        config = tmp_path / "serve.yaml"
        entry = {"name": "labelwise", "import_path": BUILD_APP, "args": {"repository": repository}}
        config.write_text(yaml.safe_dump({"applications": [entry]}), encoding="utf-8")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="labelwise"):
            read_deploy_config(config)
        assert any("is relative" in r.getMessage() for r in caplog.records) is warned, (
            repository,
            caplog.text,
        )


@pytest.mark.parametrize("timeout", ["nan", "-5"])
def test_deploy_refuses_a_timeout_that_is_not_seconds(timeout: str) -> None:
    # Before: nan was never past the deadline (the wait never ended), -5 passed as 0 does.
    address = f"http://127.0.0.1:{free_loopback_port()}"
    result = CliRunner().invoke(
        app, ["deploy", "--address", address, "--config", str(SHIPPED), "--timeout-s", timeout]
    )
    assert result.exit_code == 2, result.output  # before the config is read or the address tried
    assert f"--timeout-s {float(timeout)}: give seconds" in result.output
    assert LOOPBACK_WARNING not in result.output
