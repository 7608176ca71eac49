"""The Dockerfile, read as text (no docker engine here): its entrypoint parses with the real CLI, every
file it copies is in the build context, and the two targets install the right ONNX Runtime."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .chart_render import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


def _instruction(name: str) -> list[str]:
    (line,) = [line for line in DOCKERFILE.splitlines() if line.startswith(name + " ")]
    return json.loads(line[len(name) + 1 :])


def test_entrypoint_and_cmd_parse_with_the_labelwise_cli() -> None:
    import typer.main

    from labelwise.cli import app

    entrypoint, cmd = _instruction("ENTRYPOINT"), _instruction("CMD")
    assert entrypoint == ["labelwise", "serve"]
    group = typer.main.get_command(app)
    with group.make_context("labelwise", ["serve"]) as ctx:
        serve = group.get_command(ctx, "serve")
        params = serve.make_context("serve", list(cmd)).params  # an unknown flag raises here
    assert params["host"] == "0.0.0.0"
    config = Path(params["config"])
    copied = re.search(rf"^COPY (\S+) {re.escape(str(config))}$", DOCKERFILE, re.M)
    assert copied and (ROOT / copied.group(1)).is_file()


def test_build_context_holds_every_copied_path() -> None:
    rules = [r for r in (ROOT / ".dockerignore").read_text().splitlines() if r and not r.startswith("#")]
    assert rules[0] == "*"  # everything out, then each needed path back in
    included = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    sources = [m.group(1) for m in re.finditer(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.M)]
    for group in sources:
        for source in group.split():
            assert source.rstrip("/") in included, f"{source} is copied but .dockerignore leaves it out"
            assert (ROOT / source).exists(), source


def test_targets_install_one_onnxruntime_each() -> None:
    stages = re.split(r"^FROM ", DOCKERFILE, flags=re.M)
    build_cpu = next(s for s in stages if " AS build-cpu" in s.splitlines()[0])
    build_gpu = next(s for s in stages if " AS build-gpu" in s.splitlines()[0])
    assert '".[serving,object-store]"' in build_cpu and "onnxruntime-gpu" not in build_cpu.replace(
        "pip show --quiet onnxruntime-gpu", ""
    )
    assert '".[gpu,object-store]"' in build_gpu and '"onnxruntime-gpu==${ORT_GPU_VERSION}"' in build_gpu
    assert "! uv pip show --python /opt/venv/bin/python onnxruntime " in build_gpu  # the build fails on both
    assert re.search(r"^USER 1000$", DOCKERFILE, re.M)
    assert "HEALTHCHECK" in DOCKERFILE and "/healthz" in DOCKERFILE


def test_image_opts_out_of_the_local_only_settings() -> None:
    # The image runs `labelwise serve --host 0.0.0.0`: Ray there needs its normal auth and addressing.
    env_lines = re.findall(r"^ENV (?:.*\\\n)*.*$", DOCKERFILE, re.M)
    env_text = "\n".join(env_lines)
    assert re.search(r"\bLABELWISE_LOCAL_ONLY_ENV=0\b", env_text)
    instructions = "\n".join(line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#"))
    for key in (
        "ORT_DISABLE_TELEMETRY",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
        "RAY_AUTH_MODE",
        "HF_HUB_OFFLINE",
    ):
        assert key not in instructions, key


def test_pyproject_builds_without_setuptools_deprecations() -> None:
    # The image (`pip install .`) and `make install` build with the newest setuptools the build-system
    # table allows: a form setuptools deprecates stops building on the date its warning names.
    import warnings

    pytest.importorskip("setuptools")
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert dist.metadata.name == "labelwise"


def test_both_targets_build_the_project_with_the_pinned_build_backend() -> None:
    # pip and uv build the project in an isolated environment that -c does not reach: without build
    # constraints the image got whichever setuptools and wheel were newest on the day it was built.
    import tomllib

    from packaging.requirements import Requirement

    pins = dict(
        line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line
    )
    build_system = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for requirement in map(Requirement, build_system):
        assert requirement.name in pins, f"constraints.txt pins no {requirement.name} (build-system requires)"
        assert requirement.specifier.contains(pins[requirement.name]), (requirement, pins[requirement.name])
    stages = re.split(r"^FROM ", DOCKERFILE, flags=re.M)
    build_cpu = next(s for s in stages if " AS build-cpu" in s.splitlines()[0])
    build_gpu = next(s for s in stages if " AS build-gpu" in s.splitlines()[0])
    workdir = re.search(r"^WORKDIR (\S+)$", build_cpu, re.M).group(1)
    assert re.search(r"^COPY .*\bconstraints\.txt\b.* \./$", build_cpu, re.M)
    env = " ".join(re.findall(r"^ENV (?:.*\\\n)*.*$", build_cpu, re.M))
    # pip before 25.3 hands PIP_CONSTRAINT on to its build; from 25.3 only a build constraint reaches it
    for variable in ("PIP_CONSTRAINT", "PIP_BUILD_CONSTRAINT"):
        assert re.search(rf"\b{variable}={re.escape(workdir)}/constraints\.txt\b", env), variable
    (install,) = [line for line in build_gpu.replace("\\\n", " ").splitlines() if "uv pip install" in line]
    assert "-c constraints.txt" in install and "--build-constraints constraints.txt" in install, install
