"""What `helm template` would put in the RayService's serveConfigV2, reproduced in Python for CI (no helm).

Faithful because the template is plain on purpose (helm/labelwise/templates/_helpers.tpl,
"labelwise.serveConfig"): read files/serve-config.yaml, `set` each key of values.serve.httpOptions, the
`repository` arg to values.modelRepository.mountPath, then each key of values.serve.args, set deployments /
logging_config when not empty, toYaml. Values are coalesced the way
helm does it: maps merge key by key, lists and scalars replace, null deletes. Numbers go through JSON as
in helm, so a whole float prints as an int (1.0 -> 1). When a helm binary is on PATH,
test_chart.py::test_helm_template_matches_python_renderer compares this with the real output.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "labelwise"
SERVE_CONFIG_FILE = CHART / "files" / "serve-config.yaml"


def coalesce(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's values merge: override wins; nested maps merge; a null in override deletes the key."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = coalesce(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_values(*extra_files: Path) -> dict[str, Any]:
    """values.yaml, then each `-f` file in order."""
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    for path in extra_files:
        values = coalesce(values, yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    return values


def _as_helm_number(value: Any) -> Any:
    # helm's toYaml goes through encoding/json: float64 1.0 is written "1".
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _as_helm_number(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_helm_number(v) for v in value]
    return value


def render_serve_config(values: dict[str, Any]) -> dict[str, Any]:
    """The serveConfigV2 document, parsed, as the chart renders it for these values."""
    config = yaml.safe_load(SERVE_CONFIG_FILE.read_text(encoding="utf-8"))
    serve = values["serve"]
    config["http_options"].update(serve.get("httpOptions") or {})
    app = config["applications"][0]
    # The mounted model repository, unless serve.args names another (e.g. s3://...).
    app["args"]["repository"] = values["modelRepository"]["mountPath"]
    app["args"].update(serve.get("args") or {})
    if serve.get("deployments"):
        app["deployments"] = serve["deployments"]
    if serve.get("loggingConfig"):
        app["logging_config"] = serve["loggingConfig"]
    return _as_helm_number(config)


def render_serve_config_text(values: dict[str, Any]) -> str:
    """The serveConfigV2 string (keys sorted, as toYaml writes them)."""
    return yaml.safe_dump(render_serve_config(values), sort_keys=True, default_flow_style=False)
