"""Review mends of how `labelwise serve`, `deploy` and `doctor` read their config before anything starts:
an empty --repository, Serve config keys a local run would drop, object stores opened on the operator's
machine, and doctor's sizing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import labelwise.cli.serve as serve_cli
from labelwise.cli import app
from labelwise.server import load_serve_file, plan_server, read_deploy_config
from model_repository import UsageError

BUILD_APP = "serving.app:build_app"


def _serve_file(tmp_path: Path, http: dict | None = None, **first: object) -> Path:
    apps = [{"name": "labelwise", "route_prefix": "/", "import_path": BUILD_APP, "args": {}, **first}]
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump({"http_options": {"port": 8000, **(http or {})}, "applications": apps}))
    return path


def test_serve_refuses_an_empty_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """typer makes -r "" into Path('.'): the current folder would be served."""
    started = []
    monkeypatch.setattr(serve_cli, "run_server", lambda *a, **k: started.append(a))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["serve", "-r", ""])
    assert result.exit_code == 2 and "--repository is empty" in result.output
    assert not started


@pytest.mark.parametrize(
    ("http", "first", "named"),
    [
        ({"ssl_certfile": "/tls/crt", "ssl_keyfile": "/tls/key"}, {}, "http_options.ssl_certfile"),
        ({}, {"runtime_env": {"env_vars": {"LABELWISE_API_KEY": "s3cret"}}}, "applications[0].runtime_env"),
        ({}, {"import_path": "other.app:build"}, "applications[0].import_path other.app:build"),
    ],
)
def test_serve_refuses_config_keys_it_would_drop(tmp_path: Path, http: dict, first: dict, named: str) -> None:
    pytest.importorskip("ray.serve")
    with pytest.raises(UsageError, match=named.replace("[", r"\[").replace("]", r"\]")):
        load_serve_file(_serve_file(tmp_path, http, **first))


def test_serve_warns_of_ignored_http_options_and_applications(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("ray.serve")
    path = _serve_file(tmp_path, {"request_timeout_s": 5})
    raw = yaml.safe_load(path.read_text())
    raw["applications"].append({"name": "other", "route_prefix": "/o", "import_path": BUILD_APP, "args": {}})
    path.write_text(yaml.safe_dump(raw))
    with caplog.at_level(logging.WARNING, logger="labelwise"):
        assert load_serve_file(path).app_name == "labelwise"
    assert "http_options.request_timeout_s not applied" in caplog.text
    assert "only the first application (labelwise)" in caplog.text and "not other" in caplog.text


@pytest.fixture
def store_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every object-store repository ServingConfig opens (and refuses it: no store here)."""
    import model_repository
    from model_repository import RepositoryError

    opened: list[str] = []

    def opener(root: str) -> None:
        opened.append(root)
        raise RepositoryError(f"{root}: no such store here")

    monkeypatch.setattr(model_repository, "ModelRepository", opener)
    return opened


def test_cluster_paths_check_an_object_store_url_without_opening_it(
    tmp_path: Path, store_opens: list[str]
) -> None:
    pytest.importorskip("ray.serve")
    url = "gs://my-bucket/labelwise"
    plan = plan_server(_serve_file(tmp_path, args={"repository": url}), local=False, direct_ingress=False)
    assert plan.args["repository"] == url
    assert read_deploy_config(_serve_file(tmp_path, args={"repository": url}))["applications"][0]
    assert store_opens == []
    with pytest.raises(UsageError, match="names no bucket"):  # the syntax is still checked
        plan_server(_serve_file(tmp_path, args={"repository": "gs://"}), local=False, direct_ingress=False)
    # A local serve (and a replica) opens it.
    with pytest.raises(UsageError, match="no such store here"):
        plan_server(_serve_file(tmp_path, args={"repository": url}))
    assert store_opens == [url]


def test_doctor_reports_the_sizing_serve_would_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr("serving.local_ray.local_cores", lambda *a: 8)
    monkeypatch.setattr("os.cpu_count", lambda: 64)  # the machine's count, not what serve may use
    result = CliRunner().invoke(app, ["doctor", "-r", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "CPU cores: 8" in result.output
    # serve's plan on 8 cores: one replica of 8 CPUs, 2 pass workers x 4 ORT threads
    assert "ORT intra-op threads: 4" in result.output


@pytest.mark.parametrize("command", ["serve", "doctor"])
def test_a_bad_ingress_mode_flag_is_refused_as_the_flag_not_blamed_on_the_config(
    tmp_path: Path, command: str
) -> None:
    """It read "serving config (<the chart's serve-config.yaml>): ... ingress_mode", a file not naming it."""
    pytest.importorskip("ray.serve")
    pytest.importorskip("onnxruntime")
    result = CliRunner().invoke(app, [command, "-r", str(tmp_path), "--ingress-mode", "bogus"])
    assert result.exit_code == 2, result.output
    assert "--ingress-mode bogus: use combined or separate" in result.output
    assert "serve-config.yaml" not in result.output
