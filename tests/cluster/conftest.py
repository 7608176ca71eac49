"""The two-node tests start whole Ray clusters (2.5-3.5 min on 2 cores, Ray's gRPC servers on every
interface): only a run that names the `cluster` marker (`make test-cluster`, `pytest -m cluster`) runs
them. `make test` (and so CI, `-m "not slow and not gpu"`) and a bare `pytest` skip them here."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "cluster" in (config.option.markexpr or "").replace("not cluster", ""):
        return
    skip = pytest.mark.skip(reason="starts a two-node Ray cluster: run `make test-cluster`")
    for item in items:
        if "cluster" in item.keywords:
            item.add_marker(skip)
