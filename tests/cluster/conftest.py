"""The two-node tests start whole Ray clusters (2.5-3.5 min on 2 cores, gRPC servers on every interface): a
run that names the `cluster` marker (`make test-cluster`, `pytest -m cluster`) or CI (`CI` set, as
.ci/run does) runs them; a developer's plain `make test` on a shared machine skips them."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "cluster" in (config.option.markexpr or "") or os.environ.get("CI"):
        return
    skip = pytest.mark.skip(reason="starts a two-node Ray cluster: run `make test-cluster`")
    for item in items:
        if "cluster" in item.keywords:
            item.add_marker(skip)
