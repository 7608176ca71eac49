"""`labelwise serve` sets its loopback-only Ray settings on a developer's machine, and none of them where
LABELWISE_LOCAL_ONLY_ENV=0 (the image): ray.init and serve.start are replaced to see what they would get."""

from __future__ import annotations

import contextlib
import os
import socket

import pytest

import serving.local_ray as local_ray

LOCAL_ONLY = ("ORT_DISABLE_TELEMETRY", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE", "HF_HUB_OFFLINE")
TUNING = (
    "RAY_worker_niceness",
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S",
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS",
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH",
    "TOKENIZERS_PARALLELISM",
)


def _start(monkeypatch: pytest.MonkeyPatch, tmp_path, host: str = "127.0.0.1") -> dict:
    import ray
    from ray import serve

    for key in (*LOCAL_ONLY, *TUNING, "RAY_USAGE_STATS_ENABLED"):
        monkeypatch.delenv(key, raising=False)
    # Short enough for Ray's sockets (pytest's tmp_path is refused as too long); ray.init is replaced, so
    # nothing is made there.
    monkeypatch.setenv("LABELWISE_RAY_TEMP_DIR", f"/tmp/lw-t-{os.getpid()}/ray")
    seen: dict = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    monkeypatch.setattr(serve, "start", lambda **kw: seen.update(serve=kw))
    monkeypatch.setattr(local_ray, "_lean_head", contextlib.nullcontext)
    # start_local_ray writes os.environ directly: monkeypatch puts back what it had.
    for key in os.environ.copy():
        monkeypatch.setenv(key, os.environ[key])
    local_ray.start_local_ray(host=host, port=8000, direct_ingress=True)
    seen["environ"] = dict(os.environ)
    return seen


def test_the_image_opt_out_sets_no_local_only_setting(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("LABELWISE_LOCAL_ONLY_ENV", "0")
    seen = _start(monkeypatch, tmp_path, host="0.0.0.0")
    passed = seen["runtime_env"]["env_vars"]
    for key in LOCAL_ONLY:
        assert key not in passed and key not in seen["environ"], key
    for key in TUNING:
        assert passed[key] == local_ray.LOCAL_ENV[key]


def test_a_plain_local_serve_keeps_the_local_only_settings(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("LABELWISE_LOCAL_ONLY_ENV", raising=False)
    seen = _start(monkeypatch, tmp_path)
    passed = seen["runtime_env"]["env_vars"]
    for key in ("ORT_DISABLE_TELEMETRY", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE"):
        assert passed[key] == seen["environ"][key] == local_ray.LOCAL_ENV[key]
    assert seen["_node_ip_address"] == "127.0.0.1"


def test_ray_env_is_chosen_from_the_environment_given() -> None:
    assert local_ray.ray_env({}) == local_ray.LOCAL_ENV
    trimmed = local_ray.ray_env({"LABELWISE_LOCAL_ONLY_ENV": "false"})
    assert set(trimmed) == set(TUNING)


def test_the_spare_proxy_port_is_checked_on_the_host_it_binds(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    asked = []
    monkeypatch.setattr(local_ray, "free_loopback_port", lambda host="127.0.0.1": asked.append(host) or 9999)
    seen = _start(monkeypatch, tmp_path, host="0.0.0.0")
    assert asked == ["0.0.0.0"] and seen["serve"]["http_options"]["port"] == 9999


def test_free_port_binds_on_the_host_named() -> None:
    port = local_ray.free_loopback_port("0.0.0.0")
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", port))
