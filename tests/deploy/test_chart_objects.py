"""Every object the chart renders, for several value sets, checked against the Kubernetes schemas; and the
install-safety properties of the chart: NetworkPolicy, API key from a Secret, Ray token auth, worker PDB,
Serve autoscaling per deployment, GCS fault tolerance, object storage by default, the model repository's
mount path in the Serve config, the pods' ServiceAccount, and Ray's object store fitting /dev/shm.

The chart's real templates are rendered by tests/deploy/gotemplate.py (no helm binary in CI); when helm is
on PATH, test_helm_template_matches_python_engine checks that engine against `helm template`.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from .chart_render import CHART, coalesce, load_values, render_serve_config
from .gotemplate import FUNCTIONS, TemplateError, render_chart, render_objects

# kubernetes-validate ships the schemas of each Kubernetes release; the chart needs >= 1.25 (Chart.yaml).
K8S_VERSION = "1.30.0"
RELEASE = "labelwise"
RELEASE_LABELS = {"app.kubernetes.io/name": "labelwise", "app.kubernetes.io/instance": RELEASE}
# Custom resources: their schemas come with their operators (KubeRay, Prometheus Operator), not with
# Kubernetes, so kubernetes-validate has none. The RayService's pod templates and Service spec are core
# objects and are validated on their own (_embedded_core_objects); its Serve config is validated with Ray's
# ServeDeploySchema.
CRD_KINDS = {
    "RayService": "KubeRay CRD (ray.io/v1)",
    "ServiceMonitor": "Prometheus Operator CRD (monitoring.coreos.com/v1)",
    "PodMonitor": "Prometheus Operator CRD (monitoring.coreos.com/v1)",
}
RAY_CONTROL_PORTS = {6379: "GCS", 8265: "dashboard", 10001: "Ray client"}
API_KEY = "an-api-key-that-must-never-appear-in-the-rayservice"

# The PVC alternative with everything optional switched on: GCS fault tolerance, monitors, restricted serve
# sources, the API key from a value, separate ingress, a ServiceAccount.
_PVC_FT = {
    "modelRepository": {"source": "pvc"},
    "serviceAccount": {"name": "labelwise-models"},
    "gcsFaultTolerance": {
        "enabled": True,
        "redisAddress": "redis-master.redis.svc.cluster.local:6379",
        "redisPassword": {"existingSecret": "labelwise-redis", "key": "password"},
    },
    "apiKey": {"value": API_KEY},
    "metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
    "networkPolicy": {
        "serveFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}}],
        "metricsFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
    },
    "serve": {
        "args": {"ingress_mode": "separate"},
        "deployments": [
            {
                "name": "labelwise",
                "num_replicas": "auto",
                "autoscaling_config": {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 64},
            },
            {
                "name": "labelwise-classifier",
                "num_replicas": "auto",
                "autoscaling_config": {"min_replicas": 1, "max_replicas": 16, "target_ongoing_requests": 16},
            },
        ],
    },
}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": load_values(),
    "gpu": load_values(CHART / "values-gpu.yaml"),
    "pvc-gcs-ft": coalesce(load_values(), _PVC_FT),
    "existing-secret": coalesce(load_values(), {"apiKey": {"existingSecret": "team-api-key", "revision": 3}}),
}


Rendered = tuple[str, dict[str, Any], list[dict[str, Any]]]


def _render(values: dict[str, Any]) -> list[dict[str, Any]]:
    return render_objects(CHART, values, release=RELEASE, kube_version=K8S_VERSION)


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    values = VALUE_SETS[request.param]
    return request.param, values, _render(values)


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def _pod_templates(service: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = service["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]


def _embedded_core_objects(service: dict[str, Any]) -> list[dict[str, Any]]:
    """The RayService's core Kubernetes parts, wrapped as the objects they become."""
    pods = [
        {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"ray-{i}"}, "template": template}
        for i, template in enumerate(_pod_templates(service))
    ]
    serve = service["spec"]["serveService"]
    return [*pods, {"apiVersion": "v1", "kind": "Service", **serve}]


def _kubernetes_schema_errors(
    objects: list[dict[str, Any]],
) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """(errors, objects checked, kinds skipped): the rendered objects validated with kubernetes-validate."""
    import kubernetes_validate

    to_check, skipped = [], []
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            skipped.append(f"{obj['kind']}: {CRD_KINDS[obj['kind']]}")
            if obj["kind"] == "RayService":
                to_check.extend(_embedded_core_objects(obj))
        else:
            to_check.append(obj)
    errors = []
    for obj in to_check:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{obj['kind']}/{obj['metadata'].get('name')}: {exc.message} at {list(exc.path)}")
    return errors, to_check, skipped


# ---------------------------------------------------------------------------------------------- schemas


def test_every_object_validates_against_kubernetes_schemas(
    rendered: Rendered,
) -> None:
    name, _, objects = rendered
    errors, to_check, skipped = _kubernetes_schema_errors(objects)
    print(f"[{name}] validated {len(to_check)} objects against Kubernetes {K8S_VERSION}; not in its schemas:")
    print("\n".join(f"  {s}" for s in skipped))
    assert errors == [], name
    kinds = {o["kind"] for o in to_check}
    assert {"NetworkPolicy", "PodDisruptionBudget", "PodTemplate", "Service", "Pod"} <= kinds


def test_serve_config_validates_with_ray_schema_and_matches_chart_render(
    rendered: Rendered,
) -> None:
    from ray.serve.schema import ServeDeploySchema

    name, values, objects = rendered
    serve_config = yaml.safe_load(_one(objects, "RayService")["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_config)
    # The engine and chart_render.py (the short Python copy test_chart.py uses) agree.
    assert serve_config == render_serve_config(values), name


@pytest.mark.parametrize(
    ("release", "override", "fullname"),
    [
        ("2024-labelwise", {}, "2024-labelwise"),  # helm takes release names that start with a digit
        ("lw.prod", {}, "lw.prod-labelwise"),  # and with dots
        (RELEASE, {"fullnameOverride": "Labelwise"}, "Labelwise"),
        (RELEASE, {"fullnameOverride": "labelwise_prod"}, "labelwise_prod"),
    ],
)
def test_a_fullname_kuberay_refuses_is_refused_at_render_time(
    release: str, override: dict[str, Any], fullname: str
) -> None:
    """KubeRay refuses a RayService whose name is not a DNS-1035 label, after `helm install` succeeded (the
    RayService is stored, then never reconciled), and the serve Service takes the same name."""
    values = coalesce(load_values(), override)
    with pytest.raises(TemplateError, match=rf"fullname {re.escape(fullname)}: .*DNS-1035 label"):
        render_objects(CHART, values, release=release, kube_version=K8S_VERSION)
    fixed = coalesce(values, {"fullnameOverride": "labelwise-prod"})
    service = _one(render_objects(CHART, fixed, release=release, kube_version=K8S_VERSION), "RayService")
    assert service["metadata"]["name"] == "labelwise-prod"


def test_values_sets_validate_against_values_schema(
    rendered: Rendered,
) -> None:
    import jsonschema

    name, values, _ = rendered
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(values)]
    assert errors == [], name


# ---------------------------------------------------------------------------------------------- network


def _peer_is_release_pods(peer: dict[str, Any]) -> bool:
    """A peer that matches only this release's pods in the policy's own namespace."""
    return set(peer) == {"podSelector"} and peer["podSelector"].get("matchLabels") == RELEASE_LABELS


def _rule_allows(rule: dict[str, Any], port: int) -> bool:
    ports = rule.get("ports")
    return not ports or any(p.get("port") == port for p in ports)


def test_network_policy_keeps_ray_control_ports_to_release_pods(
    rendered: Rendered,
) -> None:
    name, values, objects = rendered
    policy = _one(objects, "NetworkPolicy")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    # Every Ray pod of every Ray cluster of the release.
    assert spec["podSelector"]["matchLabels"] == RELEASE_LABELS
    operator = values["networkPolicy"]["kuberayOperator"]
    operator_peer = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": operator["namespace"]}},
        "podSelector": {"matchLabels": operator["podLabels"]},
    }
    for port, what in RAY_CONTROL_PORTS.items():
        rules = [r for r in spec["ingress"] if _rule_allows(r, port)]
        assert rules, f"{name}: nothing may reach the {what} port, not even the cluster itself"
        for rule in rules:
            peers = rule.get("from")
            assert peers, f"{name}: the {what} port ({port}) is open to any source: {rule}"
            for peer in peers:
                # The KubeRay operator deploys the Serve config through the dashboard: that one exception.
                allowed = _peer_is_release_pods(peer) or (port == 8265 and peer == operator_peer)
                assert allowed, f"{name}: the {what} port ({port}) admits {peer}"
    # The Serve port: from networkPolicy.serveFrom, anyone when empty.
    serve_rules = [r for r in spec["ingress"] if r.get("ports") and _rule_allows(r, 8000)]
    serve_from = values["networkPolicy"]["serveFrom"]
    assert any(r.get("from", []) == serve_from for r in serve_rules), name
    # Ray's metrics port: metricsFrom when set (the monitoring namespace), else release pods only.
    metrics_rules = [r for r in spec["ingress"] if r.get("ports") and _rule_allows(r, 8080)]
    assert [r["from"] for r in metrics_rules] == (
        [values["networkPolicy"]["metricsFrom"]] if values["networkPolicy"]["metricsFrom"] else []
    ), name


def test_network_policy_selects_the_ray_pods(rendered: Rendered) -> None:
    _, _, objects = rendered
    selector = _one(objects, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"]
    for template in _pod_templates(_one(objects, "RayService")):
        labels = template["metadata"]["labels"]
        assert selector.items() <= labels.items()


def test_network_policy_can_be_switched_off() -> None:
    objects = _render(coalesce(load_values(), {"networkPolicy": {"enabled": False}}))
    assert [o for o in objects if o["kind"] == "NetworkPolicy"] == []


# ---------------------------------------------------------------------------------------------- secrets


def _ray_containers(service: dict[str, Any]) -> list[dict[str, Any]]:
    return [t["spec"]["containers"][0] for t in _pod_templates(service)]


def test_api_key_comes_from_a_secret(rendered: Rendered) -> None:
    name, values, objects = rendered
    service = _one(objects, "RayService")
    secret_name = values["apiKey"]["existingSecret"] or f"{RELEASE}-api-key"
    for container in _ray_containers(service):
        (env,) = [e for e in container["env"] if e["name"] == "LABELWISE_API_KEY"]
        assert "value" not in env, f"{name}: a plain API key in the pod spec"
        assert env["valueFrom"]["secretKeyRef"] == {"name": secret_name, "key": values["apiKey"]["key"]}
    args = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert "api_key" not in args
    assert API_KEY not in json.dumps(service)
    secrets_made = [o for o in objects if o["kind"] == "Secret"]
    if values["apiKey"]["existingSecret"]:
        assert secrets_made == [], name  # the chart never overwrites a Secret it does not own
    else:
        (secret,) = secrets_made
        assert secret["metadata"]["name"] == secret_name
        assert set(secret["data"]) == {values["apiKey"]["key"]}
        if values["apiKey"]["value"]:
            assert base64.b64decode(secret["data"]["api-key"]).decode() == API_KEY


def test_api_key_in_serve_args_is_refused() -> None:
    with pytest.raises(TemplateError, match=re.escape("serve.args.api_key")):
        _render(coalesce(load_values(), {"serve": {"args": {"api_key": API_KEY}}}))


def test_api_key_can_be_turned_off_explicitly() -> None:
    objects = _render(coalesce(load_values(), {"apiKey": {"generate": False}}))
    assert [o for o in objects if o["kind"] == "Secret"] == []
    for container in _ray_containers(_one(objects, "RayService")):
        assert "LABELWISE_API_KEY" not in {e["name"] for e in container["env"]}
    for template in _pod_templates(_one(objects, "RayService")):
        assert API_KEY_CHECKSUM not in template["metadata"].get("annotations", {})


# The API key's fingerprint on every Ray pod template (helm/labelwise/templates/_helpers.tpl).
API_KEY_CHECKSUM = "labelwise/api-key-checksum"


def _cluster_config(override: dict[str, Any]) -> dict[str, Any]:
    return _one(_render(coalesce(load_values(), override)), "RayService")["spec"]["rayClusterConfig"]


def _key_checksums(cluster: dict[str, Any]) -> list[str | None]:
    """The fingerprint on the head's and each worker group's pod template, in that order."""
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    return [t["metadata"].get("annotations", {}).get(API_KEY_CHECKSUM) for t in templates]


def test_api_key_fingerprint_is_on_every_ray_pod_template(rendered: Rendered) -> None:
    """Every Ray pod (head and each worker group) reads LABELWISE_API_KEY once, at start: each template
    carries the key's fingerprint, one value for all, and never the key itself."""
    name, values, objects = rendered
    service = _one(objects, "RayService")
    checksums = _key_checksums(service["spec"]["rayClusterConfig"])
    assert len(checksums) == 1 + len(values["workerGroups"])
    assert checksums[0] and set(checksums) == {checksums[0]}, name
    assert re.fullmatch(r"[0-9a-f]{64}", checksums[0]), name
    secrets_made = [o for o in objects if o["kind"] == "Secret"]
    for secret in secrets_made:
        key = base64.b64decode(secret["data"][values["apiKey"]["key"]]).decode()
        assert key not in json.dumps(service), f"{name}: the key itself is in the RayService"


def test_a_new_api_key_rolls_the_ray_cluster() -> None:
    """KubeRay brings up a new Ray cluster (upgradeStrategy NewCluster) only when rayClusterConfig changes.
    A key rotated in the Secret alone left every running pod on the old key and every pod started later (a
    restart, an autoscaled worker) on the new one: clients got 401 from some replicas and not others."""
    a = _cluster_config({"apiKey": {"value": "key-a-0123456789"}})
    # The same key renders the same cluster: an upgrade that keeps the key rebuilds nothing.
    assert _cluster_config({"apiKey": {"value": "key-a-0123456789"}}) == a
    b = _cluster_config({"apiKey": {"value": "key-b-0123456789"}})
    assert a != b
    assert all(x != y for x, y in zip(_key_checksums(a), _key_checksums(b), strict=True))
    # The key in a Secret the chart does not own (and cannot read): its name, then apiKey.revision, which
    # the operator bumps after rotating the key inside it.
    team = _cluster_config({"apiKey": {"existingSecret": "team-api-key"}})
    assert _cluster_config({"apiKey": {"existingSecret": "team-api-key"}}) == team
    assert _cluster_config({"apiKey": {"existingSecret": "team-api-key", "revision": 1}}) != team
    assert _cluster_config({"apiKey": {"existingSecret": "other-api-key"}}) != team
    # A bumped revision rolls the cluster with the chart's own Secret too.
    assert _cluster_config({"apiKey": {"value": "key-a-0123456789", "revision": 1}}) != a


def test_api_key_fingerprint_is_stretched_not_a_plain_hash_of_the_key() -> None:
    """Pod annotations are read by many more than the Secret (anyone who may list pods, monitoring): a plain
    sha256 of a short apiKey.value let it be searched offline at billions of guesses a second. The fingerprint
    hashes the key stretched by sprig's derivePassword (scrypt), salted with the release's fullname."""
    # the engine's derivePassword is sprig's: the example its documentation and tests give
    assert FUNCTIONS["derivePassword"](1, "long", "password", "user", "example.com") == "ZedaFaxcZaso9*"
    key = "key-a-0123456789"
    (fingerprint,) = set(_key_checksums(_cluster_config({"apiKey": {"value": key}})))
    plain = hashlib.sha256(f"key:{key}\nrevision:0".encode()).hexdigest()
    assert fingerprint != plain and fingerprint != hashlib.sha256(key.encode()).hexdigest()
    # another release (another fullname) with the same key gets another fingerprint: no table for all
    other = _cluster_config({"apiKey": {"value": key}, "fullnameOverride": "other-labelwise"})
    assert set(_key_checksums(other)) != {fingerprint}


def test_generated_api_key_fingerprint_is_the_secrets_key() -> None:
    """generate: the fingerprint is the one of the key the chart's Secret holds in the same render (the
    Secret and the RayService come from different template files, and each render draws a new key)."""
    objects = _render(load_values())
    (secret,) = [o for o in objects if o["kind"] == "Secret"]
    key = base64.b64decode(secret["data"]["api-key"]).decode()
    generated = _key_checksums(_one(objects, "RayService")["spec"]["rayClusterConfig"])
    assert generated == _key_checksums(_cluster_config({"apiKey": {"value": key}}))
    # Where helm's lookup finds nothing (helm template, --dry-run, Argo CD), each render draws a new key,
    # so a new fingerprint: documented in values.yaml, since the chart cannot detect such a render.
    again = _key_checksums(_one(_render(load_values()), "RayService")["spec"]["rayClusterConfig"])
    assert again != generated


def test_api_key_fingerprint_cannot_be_overridden() -> None:
    import jsonschema

    with pytest.raises(TemplateError, match="podAnnotations may not set labelwise/api-key-checksum"):
        _render(coalesce(load_values(), {"podAnnotations": {API_KEY_CHECKSUM: "0" * 64}}))
    # The chart keeps the generated key of a render in apiKey._rendered: users may not set it.
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    bad = coalesce(load_values(), {"apiKey": {"_rendered": "a-key-of-my-choosing"}})
    assert list(jsonschema.Draft7Validator(schema).iter_errors(bad))
    # podAnnotations still reach every Ray pod, beside the fingerprint.
    cluster = _cluster_config({"podAnnotations": {"team": "search"}})
    for template in [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]
    ]:
        assert template["metadata"]["annotations"]["team"] == "search"
        assert API_KEY_CHECKSUM in template["metadata"]["annotations"]


def test_ray_token_auth_is_on_by_default(rendered: Rendered) -> None:
    _, values, objects = rendered
    from packaging.version import Version

    assert Version(values["rayVersion"]) >= Version("2.52.0")  # RAY_AUTH_MODE=token exists from Ray 2.52
    cluster = _one(objects, "RayService")["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token"}
    # The token is KubeRay's (a Secret it creates): never a literal RAY_AUTH_TOKEN in the chart.
    for container in _ray_containers(_one(objects, "RayService")):
        assert not {"RAY_AUTH_TOKEN", "RAY_AUTH_MODE"} & {e["name"] for e in container["env"]}


def test_a_pod_monitor_behind_a_closed_metrics_port_is_refused() -> None:
    with pytest.raises(TemplateError, match="metricsFrom"):
        _render(coalesce(load_values(), {"metrics": {"podMonitor": {"enabled": True}}}))
    monitoring = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    opened = {"metrics": {"podMonitor": {"enabled": True}}, "networkPolicy": {"metricsFrom": monitoring}}
    assert any(o["kind"] == "PodMonitor" for o in _render(coalesce(load_values(), opened)))


def test_pod_labels_may_not_repeat_the_charts_own() -> None:
    for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "labelwise/ray-node"):
        with pytest.raises(TemplateError, match="podLabels"):
            _render(coalesce(load_values(), {"podLabels": {key: "x"}}))
    objects = _render(coalesce(load_values(), {"podLabels": {"team": "search"}}))
    for template in _pod_templates(_one(objects, "RayService")):
        assert template["metadata"]["labels"]["team"] == "search"


def test_incremental_upgrade_is_refused_since_kuberay_drops_the_serve_service() -> None:
    with pytest.raises(TemplateError, match="NewClusterWithIncrementalUpgrade"):
        _render(coalesce(load_values(), {"upgradeStrategy": {"type": "NewClusterWithIncrementalUpgrade"}}))


def test_worker_readiness_is_the_pods_own_health_not_the_apps(rendered: Rendered) -> None:
    """KubeRay's own Serve worker check (raylet + this pod's proxy, failure threshold 1): a draining proxy
    leaves the endpoints within a period, and the app-wide /readyz never takes every worker out at once."""
    name, _, objects = rendered
    _head, *workers = _pod_templates(_one(objects, "RayService"))
    assert workers, name
    for template in workers:
        (container,) = [c for c in template["spec"]["containers"] if c["name"].startswith("ray-")]
        probe = container["readinessProbe"]
        command = " ".join(probe["exec"]["command"])
        assert "/-/healthz" in command and "local_raylet_healthz" in command, name
        assert "/readyz" not in command and command.count("--tries 1") == 2, name
        assert probe["failureThreshold"] == 1, name


@pytest.mark.parametrize("port", ["52400", 52400])
def test_worker_probes_ask_the_agent_on_the_port_its_group_gives_it(port: str | int) -> None:
    """A group that moves its dashboard agent (rayStartParams dashboard-agent-listen-port) is probed there, as
    KubeRay's own probes are: the probes asked 52365, so its workers never became ready and liveness restarted
    them. A group that sets nothing, or has no rayStartParams, keeps Ray's default."""
    moved, default, bare = (copy.deepcopy(load_values()["workerGroups"][0]) for _ in range(3))
    moved["rayStartParams"]["dashboard-agent-listen-port"] = port
    default["name"], bare["name"] = "default", "bare"
    del bare["rayStartParams"]
    objects = _render(coalesce(load_values(), {"workerGroups": [moved, default, bare]}))
    _head, *workers = _pod_templates(_one(objects, "RayService"))
    for template, agent in zip(workers, (52400, 52365, 52365), strict=True):
        (container,) = [c for c in template["spec"]["containers"] if c["name"].startswith("ray-")]
        for probe in (container["readinessProbe"], container["livenessProbe"]):
            command = " ".join(probe["exec"]["command"])
            assert re.findall(r"localhost:(\d+)/api/local_raylet_healthz", command) == [str(agent)], command


def test_ray_token_auth_refuses_a_ray_without_it() -> None:
    with pytest.raises(TemplateError, match=re.escape("Ray >= 2.52.0")):
        _render(coalesce(load_values(), {"rayVersion": "2.40.0"}))
    objects = _render(coalesce(load_values(), {"rayVersion": "2.40.0", "rayAuth": {"enabled": False}}))
    assert "authOptions" not in _one(objects, "RayService")["spec"]["rayClusterConfig"]


# ---------------------------------------------------------------------------------------------- availability


def _kept_workers(values: dict[str, Any]) -> int:
    """The workers a Ray cluster always keeps: minReplicas with the Ray autoscaler; without it, replicas
    held between minReplicas and maxReplicas (KubeRay's GetWorkerGroupDesiredReplicas)."""
    if values["autoscaler"]["enabled"]:
        return sum(group["minReplicas"] for group in values["workerGroups"])
    return sum(
        min(group["maxReplicas"], max(group["minReplicas"], group["replicas"]))
        for group in values["workerGroups"]
    )


def test_worker_pod_disruption_budget(rendered: Rendered) -> None:
    name, values, objects = rendered
    pdb = _one(objects, "PodDisruptionBudget")
    # KubeRay's worker pods belong to a RayCluster, which has no scale subresource: for such pods Kubernetes
    # honours only an integer minAvailable. With maxUnavailable (or a percentage) the disruption controller
    # sets disruptionsAllowed to 0 and every `kubectl drain` hangs.
    assert "maxUnavailable" not in pdb["spec"], f"{name}: maxUnavailable blocks every eviction of Ray workers"
    min_available = pdb["spec"]["minAvailable"]
    assert isinstance(min_available, int) and min_available >= 0, name
    at_a_time = values["podDisruptionBudget"]["maxUnavailable"]
    assert min_available == max(0, _kept_workers(values) - at_a_time), name
    selector = pdb["spec"]["selector"]["matchLabels"]
    head, *workers = _pod_templates(_one(objects, "RayService"))
    assert workers, name
    for template in workers:
        assert selector.items() <= template["metadata"]["labels"].items()
    assert not selector.items() <= head["metadata"]["labels"].items(), "the PDB must not hold the single head"
    # Idle workers are not Ready (their proxy answers /-/healthz 503): they must not hold the budget.
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow", name


def test_the_budget_counts_the_workers_kuberay_runs() -> None:
    """Without the Ray autoscaler KubeRay runs each group's replicas clamped to [minReplicas, maxReplicas]:
    a budget counting replicas above maxReplicas asked for more workers than run, and no drain could
    evict any."""
    group = {"name": "cpu", "replicas": 6, "minReplicas": 1, "maxReplicas": 4, "resources": {}}
    values = coalesce(load_values(), {"autoscaler": {"enabled": False}, "workerGroups": [group]})
    assert _one(_render(values), "PodDisruptionBudget")["spec"]["minAvailable"] == 3  # 4 run, 1 at a time
    values["workerGroups"][0].update(replicas=0, minReplicas=2)
    assert _one(_render(values), "PodDisruptionBudget")["spec"]["minAvailable"] == 1  # 2 run


def test_min_replicas_above_max_replicas_is_refused() -> None:
    """KubeRay runs maxReplicas workers then, while the budget and Serve's autoscaling count minReplicas."""
    group = {"name": "cpu", "replicas": 6, "minReplicas": 6, "maxReplicas": 4, "resources": {}}
    with pytest.raises(
        TemplateError, match="workerGroups cpu: minReplicas \\(6\\) is above maxReplicas \\(4\\)"
    ):
        _render(coalesce(load_values(), {"workerGroups": [group]}))


def test_two_worker_groups_with_one_name_are_refused() -> None:
    """KubeRay selects a group's pods by its name: two groups of one name would scale each other's pods."""
    group = load_values()["workerGroups"][0]
    with pytest.raises(TemplateError, match="workerGroups: the name cpu is given to two groups"):
        _render(coalesce(load_values(), {"workerGroups": [group, {**group, "maxReplicas": 2}]}))
    renamed = {**group, "name": "cpu-large"}
    service = _one(_render(coalesce(load_values(), {"workerGroups": [group, renamed]})), "RayService")
    groups = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == ["cpu", "cpu-large"]


def test_the_budget_names_no_eviction_policy_where_the_cluster_lacks_the_field() -> None:
    """unhealthyPodEvictionPolicy came with Kubernetes 1.26; the chart installs from 1.25."""
    old = render_objects(CHART, load_values(), release=RELEASE, kube_version="1.25.0")
    assert "unhealthyPodEvictionPolicy" not in _one(old, "PodDisruptionBudget")["spec"]


@pytest.mark.parametrize(
    ("override", "min_available"),
    [
        # 3 + 2 workers kept by the autoscaler (minReplicas), 1 at a time: 4 stay.
        (
            {
                "workerGroups": [
                    {"name": "a", "replicas": 3, "minReplicas": 3, "maxReplicas": 6},
                    {"name": "b", "replicas": 2, "minReplicas": 2, "maxReplicas": 4},
                ],
                "podDisruptionBudget": {"maxUnavailable": 1},
            },
            4,
        ),
        # Without the autoscaler the cluster keeps `replicas`; 2 at a time.
        (
            {
                "autoscaler": {"enabled": False},
                "workerGroups": [{"name": "a", "replicas": 4, "minReplicas": 1, "maxReplicas": 4}],
                "podDisruptionBudget": {"maxUnavailable": 2},
            },
            2,
        ),
        # More at a time than there are workers: never negative.
        ({"podDisruptionBudget": {"maxUnavailable": 3}}, 0),
        # 0 at a time: every worker the cluster keeps is held.
        (
            {
                "workerGroups": [{"name": "a", "replicas": 2, "minReplicas": 2, "maxReplicas": 4}],
                "podDisruptionBudget": {"maxUnavailable": 0},
            },
            2,
        ),
    ],
)
def test_pod_disruption_budget_is_an_integer_min_available(
    override: dict[str, Any], min_available: int
) -> None:
    import jsonschema

    base = load_values()
    override = copy.deepcopy(override)
    for group in override.get("workerGroups", []):
        group["resources"] = base["workerGroups"][0]["resources"]
    values = coalesce(base, override)
    validator = jsonschema.Draft7Validator(
        json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    )
    assert list(validator.iter_errors(values)) == []
    objects = _render(values)
    errors, _, _ = _kubernetes_schema_errors(objects)
    assert errors == []
    spec = _one(objects, "PodDisruptionBudget")["spec"]
    assert spec["minAvailable"] == min_available and "maxUnavailable" not in spec
    # What the disruption controller then allows with the kept workers healthy: maxUnavailable at a time.
    kept = _kept_workers(values)
    assert max(0, kept - spec["minAvailable"]) == min(kept, values["podDisruptionBudget"]["maxUnavailable"])
    # A percentage cannot become an integer minAvailable: the values schema refuses it.
    bad = coalesce(values, {"podDisruptionBudget": {"maxUnavailable": "25%"}})
    assert list(validator.iter_errors(bad)), "maxUnavailable: 25% accepted"


def _cpus(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_autoscaling_config_per_deployment(rendered: Rendered) -> None:
    from ray.serve.schema import ServeDeploySchema

    name, values, objects = rendered
    serve_config = yaml.safe_load(_one(objects, "RayService")["spec"]["serveConfigV2"])
    (app,) = ServeDeploySchema.model_validate(serve_config).applications
    assert app.deployments, f"{name}: no per-deployment options: Serve would not autoscale"
    args = app.args
    groups = values["workerGroups"]
    for deployment in app.deployments:
        scaling = deployment.autoscaling_config
        assert deployment.num_replicas == "auto" and scaling, f"{name}: {deployment.name} has fixed replicas"
        low, high = scaling["min_replicas"], scaling["max_replicas"]
        assert 1 <= low < high and scaling["target_ongoing_requests"] > 0
        if deployment.name == "labelwise-classifier" or args.get("ingress_mode", "combined") == "combined":
            # The classifier replicas fit the workers at maxReplicas, and outgrow them at minReplicas, so the
            # Ray autoscaler really adds pods when Serve scales up.
            if args.get("num_gpus", 0):
                unit, per_replica = "nvidia.com/gpu", args["num_gpus"]
            else:
                unit, per_replica = "cpu", args.get("num_cpus", 1.0)
            per_pod = [_cpus(g["resources"]["requests"].get(unit, 0)) for g in groups]
            at_max = sum(p * g["maxReplicas"] for p, g in zip(per_pod, groups, strict=True))
            at_min = sum(p * g["minReplicas"] for p, g in zip(per_pod, groups, strict=True))
            assert high * per_replica <= at_max, f"{name}: {high} replicas do not fit the workers"
            assert high * per_replica > at_min, f"{name}: the worker autoscaler would never add a pod"


def test_deployment_options_name_real_deployments(
    rendered: Rendered,
) -> None:
    try:
        from serving.app import deployment_names
        from serving.config import ServingConfig
    except ModuleNotFoundError as exc:
        pytest.skip(f"serving.app does not import: {exc}")

    name, _, objects = rendered
    app = yaml.safe_load(_one(objects, "RayService")["spec"]["serveConfigV2"])["applications"][0]
    real = set(deployment_names(ServingConfig(**app["args"])))
    assert {d["name"] for d in app["deployments"]} <= real, name  # Serve refuses an unknown deployment name


def test_serve_autoscaling_min_above_max_is_refused() -> None:
    """Ray's deploy schema takes any autoscaling mapping: Serve refused it only when KubeRay deployed the
    config, after `helm install` succeeded, and the RayService never got ready."""
    deployment = {
        "name": "labelwise",
        "num_replicas": "auto",
        "autoscaling_config": {"min_replicas": 4, "max_replicas": 2},
    }
    values = coalesce(load_values(), {"serve": {"deployments": [deployment]}})
    with pytest.raises(
        TemplateError,
        match=r"serve.deployments labelwise: autoscaling_config min_replicas \(4\) is above max",
    ):
        _render(values)


def test_gcs_fault_tolerance_is_an_option(rendered: Rendered) -> None:
    _, values, objects = rendered
    cluster = _one(objects, "RayService")["spec"]["rayClusterConfig"]
    ft = values["gcsFaultTolerance"]
    if not ft["enabled"]:
        assert "gcsFaultToleranceOptions" not in cluster
        return
    expected = {
        "redisAddress": ft["redisAddress"],
        "redisPassword": {
            "valueFrom": {
                "secretKeyRef": {
                    "name": ft["redisPassword"]["existingSecret"],
                    "key": ft["redisPassword"]["key"],
                }
            }
        },
    }
    if ft["externalStorageNamespace"]:
        expected["externalStorageNamespace"] = ft["externalStorageNamespace"]
    assert cluster["gcsFaultToleranceOptions"] == expected


def test_gcs_fault_tolerance_is_off_by_default_and_needs_redis() -> None:
    assert load_values()["gcsFaultTolerance"]["enabled"] is False
    with pytest.raises(TemplateError, match="redisAddress"):
        _render(coalesce(load_values(), {"gcsFaultTolerance": {"enabled": True}}))


def test_a_fixed_gcs_namespace_is_refused_where_upgrades_make_new_clusters() -> None:
    """Every RayCluster of the release would share the Redis key prefix: an upgrade's new cluster would load
    the old one's Serve actors and nodes and never get ready. Under upgradeStrategy None (one cluster, kept
    across upgrades) a fixed prefix is the user's choice."""
    ft = {"enabled": True, "redisAddress": "redis:6379", "externalStorageNamespace": "labelwise"}
    with pytest.raises(TemplateError, match="externalStorageNamespace"):
        _render(coalesce(load_values(), {"gcsFaultTolerance": ft}))
    kept = _render(coalesce(load_values(), {"gcsFaultTolerance": ft, "upgradeStrategy": {"type": "None"}}))
    options = _one(kept, "RayService")["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert options["externalStorageNamespace"] == "labelwise"
    default = _render(coalesce(load_values(), {"gcsFaultTolerance": {**ft, "externalStorageNamespace": ""}}))
    assert (
        "externalStorageNamespace"
        not in _one(default, "RayService")["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    )


def test_ray_containers_get_the_serving_tuning_env(rendered: Rendered) -> None:
    """What `labelwise serve` keeps in the image (serving.local_ray's tuning keys) that matters on a cluster:
    one-thread tokenizer calls next to ORT's threads, and Serve's metrics handed over once a second."""
    _, _, objects = rendered
    for container in _ray_containers(_one(objects, "RayService")):
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["TOKENIZERS_PARALLELISM"] == "false"
        assert env["RAY_SERVE_METRICS_EXPORT_INTERVAL_MS"] == "1000"
        assert (
            env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == "serving.api.request_id.ray_http_middlewares"
        )


# ---------------------------------------------------------------------------------------------- storage


def test_object_storage_is_the_default_with_credentials_from_a_secret() -> None:
    values = load_values()
    assert values["modelRepository"]["source"] == "objectStore"
    objects = _render(values)
    assert [o for o in objects if o["kind"] == "PersistentVolumeClaim"] == []
    store = values["modelRepository"]["objectStore"]
    head, *workers = _pod_templates(_one(objects, "RayService"))
    assert not _has_model_repository(head)  # no replica there (test_the_head_gets_the_model_repository...)
    for template in workers:
        spec = template["spec"]
        (init,) = spec["initContainers"]
        sidecars = [c for c in spec["containers"] if c["name"] == "model-sync"]
        for container in [init, *sidecars]:
            assert container["envFrom"] == [{"secretRef": {"name": store["envFromSecret"]}}]
        # The Ray container never sees the object-store credentials.
        assert "envFrom" not in spec["containers"][0]
        (volume,) = [v for v in spec["volumes"] if v["name"] == "model-repository"]
        assert "emptyDir" in volume


def test_pvc_alternative_mounts_the_claim() -> None:
    objects = _render(VALUE_SETS["pvc-gcs-ft"])
    (claim,) = [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    head, *workers = _pod_templates(_one(objects, "RayService"))
    assert "initContainers" not in head["spec"] and not _has_model_repository(head)
    for template in workers:
        assert "initContainers" not in template["spec"]
        (volume,) = [v for v in template["spec"]["volumes"] if v["name"] == "model-repository"]
        assert volume["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"], "readOnly": True}


def test_object_store_needs_a_url() -> None:
    values = coalesce(load_values(), {"modelRepository": {"objectStore": {"url": ""}}})
    with pytest.raises(TemplateError, match=re.escape("objectStore.url")):
        _render(values)


@pytest.mark.parametrize(
    "url", ["s3:labelwise-models/labelwise", "s3,env_auth=true:labelwise-models/labelwise"]
)
def test_a_named_remote_without_its_secret_is_refused(url: str) -> None:
    """rclone reads a named remote (s3: in s3:BUCKET/PREFIX) from RCLONE_CONFIG_<REMOTE>_* variables, which
    only envFromSecret gives the sync containers: without it every worker's init container failed ("didn't
    find section in config file") and no worker ever started."""
    values = coalesce(load_values(), {"modelRepository": {"objectStore": {"url": url, "envFromSecret": ""}}})
    with pytest.raises(
        TemplateError, match=rf"modelRepository.objectStore.url {re.escape(url)}: .*envFromSecret"
    ):
        _render(values)


def test_a_remote_given_inline_needs_no_secret() -> None:
    """Workload identity or a public bucket: the remote's settings in the URL itself, and no Secret."""
    url = ":s3,provider=AWS,env_auth=true:labelwise-models/labelwise"
    values = coalesce(load_values(), {"modelRepository": {"objectStore": {"url": url, "envFromSecret": ""}}})
    for template in _pod_templates(_one(_render(values), "RayService"))[1:]:
        (init,) = template["spec"]["initContainers"]
        assert url in init["args"] and "envFrom" not in init


def test_source_none_reads_the_bucket_directly_without_rclone() -> None:
    """docs/scale-out.md, "straight from object storage": no sync container, no Secret it would need, and
    the Serve config and LABELWISE_REPOSITORY both name the bucket."""
    bucket = "s3://bucket/labelwise"
    values = coalesce(
        load_values(), {"modelRepository": {"source": "none"}, "serve": {"args": {"repository": bucket}}}
    )
    objects = _render(values)
    errors, _, _ = _kubernetes_schema_errors(objects)
    assert errors == []
    assert [o for o in objects if o["kind"] == "PersistentVolumeClaim"] == []
    service = _one(objects, "RayService")
    args = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert args["repository"] == bucket
    for template in _pod_templates(service):
        spec = template["spec"]
        assert "initContainers" not in spec
        assert [c["name"] for c in spec["containers"] if c["name"] == "model-sync"] == []
        ray = spec["containers"][0]
        assert {"name": "LABELWISE_REPOSITORY", "value": bucket} in ray["env"]
        # the volume is the object-store repository's cache of the versions it loads (it was an empty,
        # read-only /models while the cache grew under $HOME in the /tmp volume Ray's logs share)
        mounts = [m for m in ray["volumeMounts"] if m["name"] == "model-repository"]
        if mounts:
            assert mounts[0]["readOnly"] is False
            assert {"name": "LABELWISE_REPOSITORY_CACHE", "value": mounts[0]["mountPath"]} in ray["env"]
    (worker, *_) = _pod_templates(service)[1:]
    assert _has_model_repository(worker)
    notes = render_chart(CHART, values, release=RELEASE)["templates/NOTES.txt"]
    assert f"read straight from {bucket}" in notes and "synced" not in notes


@pytest.mark.parametrize("repository", [None, "/models"])
def test_source_none_needs_a_bucket_in_serve_args(repository: str | None) -> None:
    args = {} if repository is None else {"repository": repository}
    values = coalesce(load_values(), {"modelRepository": {"source": "none"}, "serve": {"args": args}})
    with pytest.raises(TemplateError, match=re.escape("serve.args.repository")):
        _render(values)


@pytest.mark.parametrize("source", ["objectStore", "pvc"])
def test_serve_config_repository_follows_the_mount_path(source: str) -> None:
    """The app reads ServingConfig.repository, and a Serve arg wins over LABELWISE_REPOSITORY: the Serve
    config must name the path where the volume is mounted (and rclone syncs), not a fixed /models."""
    from ray.serve.schema import ServeDeploySchema

    mount = "/data/models"
    values = coalesce(load_values(), {"modelRepository": {"mountPath": mount, "source": source}})
    objects = _render(values)
    errors, _, _ = _kubernetes_schema_errors(objects)
    assert errors == []
    service = _one(objects, "RayService")
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_config)
    assert serve_config["applications"][0]["args"]["repository"] == mount
    assert serve_config == render_serve_config(values)
    head, *workers = _pod_templates(service)
    assert not _has_model_repository(head)
    for template in workers:
        ray = template["spec"]["containers"][0]
        assert {"name": "LABELWISE_REPOSITORY", "value": mount} in ray["env"]
        (volume_mount,) = [m for m in ray["volumeMounts"] if m["name"] == "model-repository"]
        assert volume_mount["mountPath"] == mount
        for sync in template["spec"].get("initContainers", []):
            assert sync["args"][-1] == mount  # rclone copies to where the app reads
    # A repository set in serve.args (a bucket read directly) still wins.
    direct = coalesce(values, {"serve": {"args": {"repository": "s3://bucket/labelwise"}}})
    args = yaml.safe_load(_one(_render(direct), "RayService")["spec"]["serveConfigV2"])["applications"][0][
        "args"
    ]
    assert args["repository"] == "s3://bucket/labelwise"


def _has_model_repository(template: dict[str, Any]) -> bool:
    """Whether a Ray pod template gets the model repository: its volume, a mount, or a sync container."""
    spec = template["spec"]
    containers = spec.get("initContainers", []) + spec["containers"]
    return (
        any(v["name"] == "model-repository" for v in spec["volumes"])
        or any(m["name"] == "model-repository" for c in containers for m in c.get("volumeMounts", []))
        or any(c["name"].startswith("model-sync") for c in containers)
    )


@pytest.mark.parametrize(
    ("override", "head_hosts_replicas"),
    [
        # The defaults: the head offers no CPU (num-cpus "0") and every replica asks for some, so Ray never
        # places a replica there; it runs the GCS, the dashboard, the Serve controller and a proxy, none of
        # which reads the repository (a local repository path is not opened when the app is built).
        ({}, False),
        ({"modelRepository": {"source": "pvc"}}, False),
        ({"serve": {"args": {"ingress_mode": "separate"}}}, False),
        # The head offers CPUs: replicas may land there.
        ({"head": {"rayStartParams": {"num-cpus": "2"}}}, True),
        ({"head": {"rayStartParams": {"num-cpus": None}}}, True),  # unset: Ray counts the container's CPUs
        ({"head": {"rayStartParams": None}}, True),
        # Replicas that ask for no CPU fit the head too.
        ({"serve": {"args": {"num_cpus": 0.0}}}, True),
        ({"serve": {"deployments": [{"name": "labelwise", "ray_actor_options": {"num_cpus": 0}}]}}, True),
        # Two of them (a separate ingress and its classifier): still once ("truetrue" read as false).
        (
            {
                "serve": {
                    "args": {"ingress_mode": "separate"},
                    "deployments": [
                        {"name": "labelwise", "ray_actor_options": {"num_cpus": 0}},
                        {"name": "labelwise-classifier", "ray_actor_options": {"num_cpus": 0}},
                    ],
                }
            },
            True,
        ),
    ],
)
def test_the_head_gets_the_model_repository_only_when_replicas_may_run_there(
    override: dict[str, Any], head_hosts_replicas: bool
) -> None:
    """With objectStore the repository is a copy of the whole bucket prefix, downloaded at pod start and
    re-synced every minute: the head, where no replica runs, gets neither that copy nor its containers."""
    values = coalesce(load_values(), override)
    objects = _render(values)
    errors, _, _ = _kubernetes_schema_errors(objects)
    assert errors == []
    head, *workers = _pod_templates(_one(objects, "RayService"))
    assert _has_model_repository(head) is head_hosts_replicas
    if not head_hosts_replicas:
        assert "initContainers" not in head["spec"]
        assert [c["name"] for c in head["spec"]["containers"]] == ["ray-head"]
    for template in workers:
        assert _has_model_repository(template)
        if values["modelRepository"]["source"] == "objectStore":
            assert [c["name"] for c in template["spec"]["initContainers"]] == ["model-sync-init"]
            assert "model-sync" in [c["name"] for c in template["spec"]["containers"]]


def test_service_account_name_applies_to_every_ray_pod() -> None:
    """Workload identity (IRSA, GKE Workload Identity) needs the Ray pods on a chosen ServiceAccount."""
    import jsonschema

    default = _render(load_values())
    for template in _pod_templates(_one(default, "RayService")):
        assert "serviceAccountName" not in template["spec"]  # empty: the namespace's default account
    values = coalesce(load_values(), {"serviceAccount": {"name": "labelwise-models"}})
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    assert list(jsonschema.Draft7Validator(schema).iter_errors(values)) == []
    objects = _render(values)
    errors, _, _ = _kubernetes_schema_errors(objects)
    assert errors == []
    templates = _pod_templates(_one(objects, "RayService"))
    assert len(templates) == 1 + len(values["workerGroups"])
    for template in templates:
        assert template["spec"]["serviceAccountName"] == "labelwise-models"


_QUANTITY_SUFFIXES = {
    **{s: 1024**i for i, s in enumerate(["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"], start=1)},
    **{s: 1000**i for i, s in enumerate(["k", "M", "G", "T", "P", "E"], start=1)},
}


def _bytes(quantity: str | int | float) -> int:
    """A Kubernetes memory quantity in bytes."""
    text = str(quantity)
    for suffix in sorted(_QUANTITY_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * _QUANTITY_SUFFIXES[suffix])
    return int(float(text))


def _ray_object_store_bytes(memory_limit: int, shm: int, ray_start_params: dict[str, Any]) -> int:
    """The object store Ray sizes on a node (ray._private.utils.resolve_object_store_memory), at most: the
    proportion of the available memory, which inside a container is at most its memory limit."""
    from ray._private import ray_constants

    if "object-store-memory" in ray_start_params:
        return int(ray_start_params["object-store-memory"])
    cap = min(
        ray_constants.DEFAULT_OBJECT_STORE_MAX_MEMORY_BYTES,
        max(ray_constants.REQUIRE_SHM_SIZE_THRESHOLD, int(shm * 0.95)),
    )
    return min(int(memory_limit * ray_constants.DEFAULT_OBJECT_STORE_MEMORY_PROPORTION), cap)


def test_ray_object_store_fits_in_dev_shm(rendered: Rendered) -> None:
    """Ray puts the object store in /dev/shm only when it fits there; otherwise on the disk-backed /tmp."""
    name, _, objects = rendered
    cluster = _one(objects, "RayService")["spec"]["rayClusterConfig"]
    groups = [("head", cluster["headGroupSpec"])] + [(g["groupName"], g) for g in cluster["workerGroupSpecs"]]
    for group_name, group in groups:
        spec = group["template"]["spec"]
        (shm_volume,) = [v for v in spec["volumes"] if v["name"] == "dshm"]
        assert shm_volume["emptyDir"]["medium"] == "Memory"
        assert {"name": "dshm", "mountPath": "/dev/shm"} in spec["containers"][0]["volumeMounts"]
        shm = _bytes(shm_volume["emptyDir"]["sizeLimit"])
        limits = spec["containers"][0]["resources"].get("limits", {})
        assert "memory" in limits, (
            f"{name}/{group_name}: Ray would size the object store from the node's memory"
        )
        store = _ray_object_store_bytes(_bytes(limits["memory"]), shm, group.get("rayStartParams") or {})
        # Room besides the object store for what else lives in /dev/shm (Python multiprocessing, NCCL).
        room = shm - store
        assert room >= 256 * 1024**2, (
            f"{name}/{group_name}: Ray's object store ({store / 1024**3:.2f} GiB) does not fit the "
            f"{shm / 1024**3:.2f} GiB /dev/shm with 256 MiB to spare: it would fall back to disk-backed /tmp"
        )


def test_notes_render(rendered: Rendered) -> None:
    _, values, _ = rendered
    notes = render_chart(CHART, values, release=RELEASE)["templates/NOTES.txt"]
    assert "kubectl port-forward" in notes
    assert API_KEY not in notes


# ---------------------------------------------------------------------------------------------- helm


def test_helm_template_matches_python_engine(rendered: Rendered) -> None:
    helm = shutil.which("helm")
    if helm is None:
        pytest.skip("helm is not on PATH: the Python template engine is not compared with helm")
    name, values, objects = rendered
    out = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--kube-version", K8S_VERSION, "-f", "-"],
        input=json.dumps(values),
        capture_output=True,
        text=True,
        check=True,
    )
    from_helm = [d for d in yaml.safe_load_all(out.stdout) if d]

    def comparable(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        docs = json.loads(json.dumps(docs))
        generated = not values["apiKey"]["value"] and not values["apiKey"]["existingSecret"]
        for doc in docs:
            if doc["kind"] == "Secret" and not values["apiKey"]["value"]:
                doc["data"] = "<generated>"
            if doc["kind"] == "RayService" and generated:  # the random key's fingerprint
                for template in _pod_templates(doc):
                    annotations = template["metadata"].get("annotations", {})
                    if API_KEY_CHECKSUM in annotations:
                        annotations[API_KEY_CHECKSUM] = "<generated>"
        return sorted(docs, key=lambda d: (d["kind"], d["metadata"]["name"]))

    assert comparable(from_helm) == comparable(objects), name


def test_image_pull_secrets_reach_every_pod_that_runs_the_image() -> None:
    """A private registry: the Ray pods and the `helm test` pod (which runs the same image) all pull with
    the chart's imagePullSecrets."""
    secrets = [{"name": "registry-credentials"}]
    values = coalesce(load_values(), {"imagePullSecrets": secrets, "tests": {"enabled": True}})
    objects = _render(values)
    pods = [template["spec"] for template in _pod_templates(_one(objects, "RayService"))]
    pods += [o["spec"] for o in objects if o["kind"] == "Pod"]
    assert len(pods) >= 3  # head, the worker group, the test pod
    for spec in pods:
        assert spec.get("imagePullSecrets") == secrets
