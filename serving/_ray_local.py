"""Start a local, loopback-only Ray and Serve for `labelwise serve`, the demo and the tests."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

LOCAL_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "ORT_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def start_local_ray(host: str = "127.0.0.1", port: int = 8000, num_cpus: int | None = None) -> Path:
    """ray.init bound to 127.0.0.1 with its own temp dir, no dashboard; then Serve's proxy on host:port."""
    for key, value in LOCAL_ENV.items():
        os.environ.setdefault(key, value)
    import ray
    from ray import serve

    temp_dir = Path(os.environ.get("LABELWISE_RAY_TEMP_DIR") or tempfile.mkdtemp(prefix="lw-ray-"))
    if not ray.is_initialized():
        ray.init(
            address="local",
            _node_ip_address="127.0.0.1",
            _temp_dir=str(temp_dir),
            include_dashboard=False,
            num_cpus=num_cpus,
            logging_level="WARNING",
            log_to_driver=False,
            configure_logging=True,
            runtime_env={"env_vars": {k: os.environ[k] for k in LOCAL_ENV}},
        )
    serve.start(http_options={"host": host, "port": port, "location": "HeadOnly"})
    return temp_dir


def stop_local_ray() -> None:
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()
