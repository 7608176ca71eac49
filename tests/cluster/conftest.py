"""The two-node tests start whole Ray clusters (minutes on 2 cores): only a run that names the `cluster`
marker (`make test-cluster`, `pytest -m cluster`) runs them; any other run skips them."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "cluster" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="starts a two-node Ray cluster: run `make test-cluster`")
    for item in items:
        if "cluster" in item.keywords:
            item.add_marker(skip)
