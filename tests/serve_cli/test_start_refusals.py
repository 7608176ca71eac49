"""`labelwise serve` reads its config the way it documents, and refuses what cannot run with one line and
exit 2 before Ray starts: the file's repository over LABELWISE_REPOSITORY, values Ray Serve would refuse
only once started, a repository that is a file, more CPUs than the machine has, an unknown proxy location.
Each run here stops before Ray: at a refusal, or at the port the test holds (checked just before Ray
starts)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from serving.local_ray import local_cores

from .serve_process import LOCAL_ENV, ROOT, free_port


def _serve(
    config: dict, *flags: str, tmp_path: Path, env: dict[str, str] | None = None
) -> tuple[int, str, float]:
    """`labelwise serve --config FILE FLAGS`: its exit code, stderr and how long it took."""
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    # Only the LABELWISE_* variables the test sets; Ray's files (if it starts) in a folder of the test's.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LABELWISE_")}
    environment.update({**LOCAL_ENV, "LABELWISE_RAY_TEMP_DIR": str(tmp_path / "ray"), **(env or {})})

    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "labelwise.cli", "serve", "--config", str(path), *flags],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
    )
    return done.returncode, done.stderr, time.monotonic() - start


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port something listens on: a serve that gets past its config checks stops there."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
        sock.listen()
        yield sock.getsockname()[1]


def _in_use(code: int, err: str, port: int) -> bool:
    return code == 2 and f"127.0.0.1:{port} is in use" in err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_the_config_files_repository_wins_over_LABELWISE_REPOSITORY_and_the_flag_over_both(
    tmp_path: Path, held_port: int
) -> None:
    # The Docker image sets LABELWISE_REPOSITORY=/models; a mounted config's repository must still win,
    # as the file wins over every LABELWISE_* variable, and --repository given on the command line over
    # the file. The warning for the unpublished scenario names the folder the serve would use.
    from_file, from_flag, from_env = (tmp_path / name for name in ("file-repo", "flag-repo", "env-repo"))
    for folder in (from_file, from_flag, from_env):
        folder.mkdir()
    config = {"repository": str(from_file), "scenarios": [{"name": "unpublished"}]}
    port = ["--port", str(held_port)]
    env = {"LABELWISE_REPOSITORY": str(from_env)}

    code, err, _ = _serve(config, *port, tmp_path=tmp_path, env=env)
    assert _in_use(code, err, held_port), err
    assert f"in {from_file}" in err and str(from_env) not in err

    code, err, _ = _serve(config, *port, "--repository", str(from_flag), tmp_path=tmp_path, env=env)
    assert _in_use(code, err, held_port), err
    assert f"in {from_flag}" in err and str(from_file) not in err

    # A file that sets no repository: the variable fills it.
    code, err, _ = _serve({"scenarios": config["scenarios"]}, *port, tmp_path=tmp_path, env=env)
    assert _in_use(code, err, held_port), err
    assert f"in {from_env}" in err


def test_a_listed_scenario_that_does_not_resolve_is_named_at_start(tmp_path: Path, held_port: int) -> None:
    # Not refused: replicas poll their aliases, so a scenario published later is served then. But the
    # start says which one will not answer, and why, instead of only /readyz's 503.
    repo = tmp_path / "repo"
    repo.mkdir()
    config = {"repository": str(repo), "scenarios": [{"name": "nope"}]}
    code, err, _ = _serve(config, "--port", str(held_port), tmp_path=tmp_path)
    assert _in_use(code, err, held_port), err
    (warning,) = [line for line in err.splitlines() if "nope" in line]
    assert warning.startswith("scenario nope: cannot resolve 'production'"), warning
    assert "no published version" in warning and "/readyz" in warning


def test_a_repository_that_is_a_file_is_refused(tmp_path: Path, held_port: int) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a repository\n", encoding="utf-8")
    code, err, took = _serve({"repository": str(afile)}, "--port", str(held_port), tmp_path=tmp_path)
    assert code == 2, err
    assert (
        _one_error_line(err)
        == f"error: repository {afile} is a file, not a folder of scenarios: pass --repository"
    )
    assert took < 30, f"{took:.0f} s"


@pytest.mark.parametrize(
    "config, flags, env, message",
    [
        ({"num_replicas": 0}, [], {}, "num_replicas 0: use 1 or more, or 'auto'"),
        ({}, [], {"LABELWISE_NUM_REPLICAS": "0"}, "num_replicas 0: use 1 or more, or 'auto'"),
        ({"num_replicas": -2}, [], {}, "num_replicas -2"),
        ({"max_queued_requests": 0}, [], {}, "max_queued_requests 0: use -1 (no limit) or 1 or more"),
        (
            {"num_replicas": "auto", "autoscaling_config": {"min_replicas": 5, "max_replicas": 1}},
            ["--proxy"],
            {},
            "autoscaling_config: max_replicas (1) must be greater than or equal to min_replicas (5)",
        ),
        (
            {},
            [],
            {"LABELWISE_SERVE_START_TIMEOUT_S": "5m"},
            "LABELWISE_SERVE_START_TIMEOUT_S='5m': expected seconds",
        ),
        (
            {"num_cpus": 1, "num_replicas": local_cores() + 1},
            [],
            {},
            f"{local_cores() + 1} replicas x num_cpus 1 = {local_cores() + 1} CPUs, more than this machine's "
            f"{local_cores()} cores",
        ),
    ],
    ids=[
        "no-replicas",
        "no-replicas-from-env",
        "negative-replicas",
        "queue-of-0",
        "min-over-max",
        "start-timeout-not-seconds",
        "more-cpus-than-cores",
    ],
)
def test_what_ray_would_refuse_once_started_is_a_usage_error_before_it_starts(
    tmp_path: Path, held_port: int, config: dict, flags: list[str], env: dict[str, str], message: str
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    # Refused before the held port is even checked, which is still before Ray would start.
    code, err, took = _serve(
        {"repository": str(repo), **config}, "--port", str(held_port), *flags, tmp_path=tmp_path, env=env
    )
    assert code == 2, err
    assert message in _one_error_line(err)
    assert took < 30, f"{took:.0f} s"
    assert not (tmp_path / "ray").exists(), "Ray was started"


def test_more_replicas_than_cores_share_them_with_a_warning_when_the_config_sets_no_cpus(
    tmp_path: Path, held_port: int
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    cores = local_cores()
    config = {"repository": str(repo), "num_replicas": cores + 1}
    code, err, _ = _serve(config, "--port", str(held_port), tmp_path=tmp_path)
    assert _in_use(code, err, held_port), err
    share = int(cores / (cores + 1) * 100) / 100
    assert f"{cores + 1} replicas on {cores} cores: {share:g} CPUs each (set num_cpus to choose)" in err


@pytest.mark.parametrize(
    "location, code, said",
    [
        ("everynode", 1, "cannot reach the Ray cluster"),  # any case: checked, then the cluster is tried
        ("HEADONLY", 1, "cannot reach the Ray cluster"),
        ("nowhere", 2, "--proxy-location nowhere: use one of Disabled, HeadOnly, EveryNode (any case)"),
    ],
)
def test_the_proxy_location_is_checked_before_the_cluster_is_contacted(
    tmp_path: Path, location: str, code: int, said: str
) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there: reaching it fails with exit 1
    exit_code, err, _ = _serve(
        {"repository": str(tmp_path)}, "--address", address, "--proxy-location", location, tmp_path=tmp_path
    )
    assert exit_code == code, err
    assert said in _one_error_line(err)


@pytest.mark.parametrize("under", [False, True])
def test_a_ray_temp_dir_that_is_a_file_is_named_with_its_variable(tmp_path: Path, under: bool) -> None:
    """LABELWISE_RAY_TEMP_DIR naming a file (or a path under one) was `error: FileExistsError: [Errno 17]
    File exists: '...'` (or NotADirectoryError), exit 1, naming neither the variable nor the fix."""
    import tempfile

    repo = tmp_path / "repo"
    repo.mkdir()
    with tempfile.TemporaryDirectory(prefix="lw-", dir="/tmp") as short:  # room for Ray's socket paths
        afile = Path(short) / "afile"
        afile.write_text("not a folder\n", encoding="utf-8")
        given = afile / "ray" if under else afile
        env = {"LABELWISE_RAY_TEMP_DIR": str(given)}
        port = str(free_port())  # nothing holds it: serve gets as far as Ray's temp folder
        code, err, _ = _serve({"repository": str(repo)}, "--port", port, tmp_path=tmp_path, env=env)
        assert code == 2, err
        what = f"is inside {afile}, which is a file" if under else "is a file, not a folder"
        line = _one_error_line(err)
        assert line.startswith(f"error: LABELWISE_RAY_TEMP_DIR {given} {what}"), line
        assert afile.read_text(encoding="utf-8") == "not a folder\n"
