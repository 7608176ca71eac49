"""`labelwise serve --config` reads the Serve file with Ray's ServeDeploySchema: what Ray refuses is
refused here, naming the file and the field; the flat form of ServingConfig fields still works."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from labelwise.server import load_serve_file
from model_repository import UsageError

pytest.importorskip("ray.serve")


def _write(tmp_path: Path, content: dict[str, Any]) -> Path:
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def _app(**extra: Any) -> dict[str, Any]:
    return {
        "name": "lw",
        "route_prefix": "/",
        "import_path": "serving.app:build_app",
        "args": {"max_batch_size": 4},
        **extra,
    }


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ({"applications": [{"name": "lw", "args": {}}]}, "applications.0.import_path"),
        ({"applications": [_app(deployments=[{"name": "X", "num_replicas": "many"}])]}, "deployments.0"),
        ({"applications": [_app(logging_config={"log_level": "LOUD"})]}, "logging_config"),
        ({"http_options": {"port": "eighty"}, "applications": [_app()]}, "http_options.port"),
        ({"applications": [_app(), _app()]}, "multiple configs"),
    ],
)
def test_what_ray_refuses_is_refused_naming_file_and_field(
    tmp_path: Path, content: dict, fragment: str
) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(UsageError, match=r"serve\.yaml: not a valid Serve config") as caught:
        load_serve_file(path)
    assert fragment in str(caught.value)


def test_deployments_and_logging_config_are_read_and_the_local_run_says_it_does_not_apply_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    deployments = [{"name": "LabelwiseIngress", "num_replicas": 2}]
    path = _write(
        tmp_path,
        {
            "logging_config": {"encoding": "JSON"},
            "http_options": {"port": 8123},
            "applications": [_app(deployments=deployments)],
        },
    )
    with caplog.at_level(logging.WARNING, logger="labelwise"):
        loaded = load_serve_file(path)
    assert (loaded.args, loaded.app_name, loaded.port) == ({"max_batch_size": 4}, "lw", 8123)
    assert loaded.host == "127.0.0.1"  # Ray's default is 0.0.0.0; a local run stays on loopback
    assert "deployments and logging_config applied by `serve deploy`" in caplog.text


def test_the_flat_form_needs_no_ray_schema(tmp_path: Path) -> None:
    path = tmp_path / "flat.yaml"
    path.write_text("max_batch_size: 4\napi_key: k\n")
    loaded = load_serve_file(path)
    assert loaded.args == {"max_batch_size": 4, "api_key": "k"} and loaded.port == 8000


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"\xff\xfe\x00", "cannot read the Serve config ('utf-8' codec can't decode"),
        (b"[]\n", "expected a Serve config or a mapping of ServingConfig fields"),
        (b"0\n", "expected a Serve config or a mapping of ServingConfig fields"),
    ],
)
def test_a_config_not_utf8_or_not_a_mapping_is_refused_naming_it(
    tmp_path: Path, content: bytes, said: str
) -> None:
    """Bytes that are not UTF-8 were a UnicodeDecodeError traceback; `[]` (falsy) read as the defaults."""
    path = tmp_path / "serve.yaml"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=r"serve\.yaml: ") as caught:
        load_serve_file(path)
    assert said in str(caught.value)
    path.write_bytes(b"")  # an empty file is the defaults, as before
    assert load_serve_file(path).args == {}


def test_doctor_names_a_config_that_is_a_folder_as_a_folder(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from labelwise.cli import app

    result = CliRunner().invoke(app, ["doctor", "-c", str(tmp_path), "-r", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert f"--config {tmp_path} is a folder" in result.output
    assert "does not exist" not in result.output


@pytest.mark.parametrize("prefix", ["api", "/api/", "/v{version}"])
def test_a_route_prefix_ray_refuses_is_refused_before_ray_starts_or_the_upload(
    tmp_path: Path, prefix: str
) -> None:
    """ServeDeploySchema took it; serve.run refused it after Ray started, the cluster after the upload."""
    from labelwise.server import read_deploy_config

    path = _write(tmp_path, {"applications": [_app(), _app(name="other", route_prefix=prefix)]})
    for read in (load_serve_file, read_deploy_config):
        with pytest.raises(UsageError, match=r"serve\.yaml: not a valid Serve config") as caught:
            read(path)
        assert f"applications.1.route_prefix: Invalid route_prefix '{prefix}'" in str(caught.value)
