# syntax=docker/dockerfile:1.7
# labelwise serving image, one Dockerfile for two targets:
#   docker build --build-arg TARGET=cpu -t labelwise:0.1.0-cpu .   python:3.11-slim + onnxruntime
#   docker build --build-arg TARGET=gpu -t labelwise:0.1.0-gpu .   CUDA/cuDNN runtime + onnxruntime-gpu
# The image holds ray[serve], so the same image runs `labelwise serve` on one machine and the head
# and workers of a KubeRay RayService (which replaces the entrypoint with `ray start`). It installs
# only the serving extra: serving never imports torch, so neither torch nor CUDA wheels for it ship.

ARG TARGET=cpu
ARG PYTHON_VERSION=3.11
# cuDNN 9 on CUDA 13: what onnxruntime-gpu wheels on PyPI are built against since 1.27 (1.31.1's
# build_and_package_info says cuda_version 13.0; its CUDA provider links libcublas.so.13 and
# libcudart.so.13). GPU nodes need an NVIDIA driver of release 580 or later.
# tests/unit/cli/test_gpu_doctor.py keeps this CUDA major equal to the pinned wheel's.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.8.22
# The same pin as constraints.txt (tests/unit/cli/test_gpu_doctor.py keeps them equal): it replaces
# onnxruntime, and the two must never share an env. 1.31.1 is the newest onnxruntime-gpu on PyPI.
ARG ORT_GPU_VERSION=1.31.1

# ---------------------------------------------------------------------------------------------------
FROM ${UV_IMAGE} AS uv

# Build stage, CPU: a virtual environment with the serving extra, pinned by constraints.txt.
FROM python:${PYTHON_VERSION}-slim-bookworm AS build-cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY labelwise ./labelwise
COPY serving ./serving
COPY model_repository ./model_repository
COPY training ./training
COPY loadtests ./loadtests
# The build backend is pinned too: pip builds the project in an isolated environment that -c does not
# reach. PIP_BUILD_CONSTRAINT reaches it from pip 25.3 (which no longer hands PIP_CONSTRAINT on to it),
# PIP_CONSTRAINT before (the venv's pip is whichever this Python's ensurepip bundles).
ENV PIP_CONSTRAINT=/src/constraints.txt PIP_BUILD_CONSTRAINT=/src/constraints.txt
# object-store: replicas read an s3:// (or other fsspec) LABELWISE_REPOSITORY themselves.
RUN /opt/venv/bin/pip install ".[serving,object-store]" \
    && /opt/venv/bin/python -c "import onnxruntime, ray.serve, serving, labelwise.cli, s3fs" \
    && ! /opt/venv/bin/pip show --quiet onnxruntime-gpu 2>/dev/null

# Build stage, GPU: the CUDA image has no Python 3.11, so uv installs a standalone CPython under
# /opt/python (copied as is into the runtime stage) and the same venv layout as the CPU target.
FROM ${CUDA_IMAGE} AS build-gpu
ARG PYTHON_VERSION
ARG ORT_GPU_VERSION
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python UV_NO_CACHE=1 UV_LINK_MODE=copy
RUN uv python install "${PYTHON_VERSION}" \
    && uv venv --python "${PYTHON_VERSION}" --seed /opt/venv
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY labelwise ./labelwise
COPY serving ./serving
COPY model_repository ./model_repository
COPY training ./training
COPY loadtests ./loadtests
# The gpu extra asks for onnxruntime-gpu and never for onnxruntime; the check fails the build if
# anything pulled the CPU package in beside it. --build-constraints: uv's -c does not reach the isolated
# build of the project either.
RUN uv pip install --python /opt/venv/bin/python -c constraints.txt --build-constraints constraints.txt \
    ".[gpu,object-store]" "onnxruntime-gpu==${ORT_GPU_VERSION}" \
    && ! uv pip show --python /opt/venv/bin/python onnxruntime >/dev/null 2>&1 \
    && /opt/venv/bin/python -c "import onnxruntime, ray.serve, serving, labelwise.cli, s3fs"

# ---------------------------------------------------------------------------------------------------
# Runtime bases. wget: KubeRay's default probes and the HEALTHCHECK call it. ca-certificates stays
# unpinned on purpose: it must follow the distribution's security updates.
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime-cpu
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget=1.21.* ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build-cpu /opt/venv /opt/venv

FROM ${CUDA_IMAGE} AS runtime-gpu
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget=1.21.* ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build-gpu /opt/python /opt/python
COPY --from=build-gpu /opt/venv /opt/venv

# ---------------------------------------------------------------------------------------------------
# hadolint ignore=DL3006
FROM runtime-${TARGET} AS final
# Non-root uid 1000, as KubeRay expects (it writes /tmp/ray). The CUDA Ubuntu base ships a user
# `ubuntu` with that uid: remove it first. KubeRay starts Ray with `bash -c`, or `bash -lc` when the
# operator runs with ENABLE_LOGIN_SHELL; a login shell resets PATH, so the profile script puts the venv
# back on it (single quotes: expand at login). ENV PATH below covers the plain shell.
# hadolint ignore=SC2016
RUN (userdel --remove ubuntu 2>/dev/null || true) \
    && useradd --uid 1000 --gid 0 --create-home --home-dir /home/labelwise --shell /bin/bash labelwise \
    && mkdir -p /models /etc/labelwise \
    && chown 1000:0 /models \
    && echo 'export PATH=/opt/venv/bin:$PATH' > /etc/profile.d/labelwise-venv.sh
# The one Serve config file: the Helm chart renders the same file into the RayService.
COPY helm/labelwise/files/serve-config.yaml /etc/labelwise/serve-config.yaml
# LABELWISE_LOCAL_ONLY_ENV=0: `labelwise serve` leaves out its loopback-only Ray settings (auth off, telemetry
# off), which a developer's machine wants and an image or a cluster must not get.
ENV PATH=/opt/venv/bin:$PATH \
    LABELWISE_LOCAL_ONLY_ENV=0 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LABELWISE_REPOSITORY=/models
# The model repository: mount a volume here, or let the chart sync it from object storage.
VOLUME ["/models"]
USER 1000
WORKDIR /home/labelwise
# 8000 Serve HTTP, 8265 dashboard, 6379 GCS, 10001 Ray client, 8080 Ray metrics.
EXPOSE 8000 8265 6379 10001 8080
# Shell form for `|| exit 1`: Docker reserves exit codes other than 0 and 1.
# hadolint ignore=DL3025
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD wget -q -T 4 -O /dev/null http://127.0.0.1:8000/healthz || exit 1
ENTRYPOINT ["labelwise", "serve"]
CMD ["--config", "/etc/labelwise/serve-config.yaml", "--host", "0.0.0.0"]
