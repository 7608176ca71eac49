"""`labelwise serve` reads the chart's Serve config: app name, route prefix, port and args from the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from labelwise.server import default_serve_config, load_serve_file, load_serving_args
from model_repository import UsageError
from serving import ServingConfig

CHART_FILE = Path(__file__).resolve().parents[3] / "helm" / "labelwise" / "files" / "serve-config.yaml"


def test_the_default_is_the_charts_file_and_its_args_validate() -> None:
    assert default_serve_config() == CHART_FILE
    loaded = load_serve_file(default_serve_config())
    raw = yaml.safe_load(CHART_FILE.read_text(encoding="utf-8"))
    app = raw["applications"][0]
    assert (loaded.app_name, loaded.route_prefix) == (app["name"], app["route_prefix"])
    assert (loaded.host, loaded.port) == (raw["http_options"]["host"], raw["http_options"]["port"])
    ServingConfig(**loaded.args)


def test_name_route_port_and_args_come_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "http_options": {"host": "127.0.0.1", "port": 8123},
                "applications": [
                    {
                        "name": "lw-test",
                        "route_prefix": "/lw",
                        "import_path": "serving.app:build_app",
                        "args": {"max_batch_size": 8},
                    }
                ],
            }
        )
    )
    loaded = load_serve_file(path)
    assert (loaded.app_name, loaded.route_prefix, loaded.port) == ("lw-test", "/lw", 8123)
    assert load_serving_args(path, repository="r", ingress_mode=None) == {
        "max_batch_size": 8,
        "repository": "r",
    }


def test_a_flat_file_gives_args_and_default_address(tmp_path: Path) -> None:
    path = tmp_path / "flat.yaml"
    path.write_text("max_batch_size: 4\n")
    loaded = load_serve_file(path)
    assert loaded.args == {"max_batch_size": 4}
    assert (loaded.app_name, loaded.route_prefix, loaded.port) == ("labelwise", "/", 8000)


def test_a_bad_file_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("applications: []\n")
    with pytest.raises(UsageError, match=r"bad\.yaml"):
        load_serve_file(path)


@pytest.mark.parametrize("key", ["", "   "])
def test_a_blank_api_key_is_a_config_error_not_an_open_api(
    key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="api_key"):
        ServingConfig(repository=str(tmp_path), api_key=key)
    monkeypatch.setenv("LABELWISE_API_KEY", key)  # the same through the environment
    with pytest.raises(ValidationError, match="api_key"):
        ServingConfig(repository=str(tmp_path))
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"api_key": key}), encoding="utf-8")
    monkeypatch.delenv("LABELWISE_API_KEY")
    from labelwise.server import plan_server

    with pytest.raises(UsageError, match="api_key"):  # `labelwise serve` refuses before Ray starts
        plan_server(config, repository=tmp_path)


def test_an_api_key_from_the_environment_never_travels_in_the_deployment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray keeps a deployment's init argument in its controller checkpoint (GCS, Redis) and state API: a
    key from LABELWISE_API_KEY (the chart's Secret) is left out and read by each replica from its own env."""
    pytest.importorskip("ray.serve")
    from serving.app import replica_config, replica_payload

    monkeypatch.setenv("LABELWISE_API_KEY", "s3cret")
    args = {"repository": str(tmp_path)}
    payload = replica_payload(ServingConfig(**args), args)
    assert "s3cret" not in repr(payload) and "api_key" not in payload
    assert replica_config(payload).api_key == "s3cret"  # the replica's own environment
    monkeypatch.setenv("LABELWISE_API_KEY", "r0tated")
    assert replica_config(payload).api_key == "r0tated"  # a rotated Secret, on the next replica start
    monkeypatch.delenv("LABELWISE_API_KEY")
    with pytest.raises(RuntimeError, match="LABELWISE_API_KEY"):  # never an open /v1 instead
        replica_config(payload)
    # A key given in the app's args (a local config file) travels as given; no key at all stays open.
    keyed = {**args, "api_key": "from-file"}
    assert replica_config(replica_payload(ServingConfig(**keyed), keyed)).api_key == "from-file"
    assert replica_config(replica_payload(ServingConfig(**args), args)).api_key is None
