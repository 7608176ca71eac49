"""Fixtures for the deploy checks: chart values as helm would coalesce them."""

from __future__ import annotations

from typing import Any

import pytest

from .chart_render import CHART, load_values


@pytest.fixture(scope="module", params=["default", "gpu"])
def chart_values(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """(name, values) for values.yaml alone and with values-gpu.yaml on top."""
    extra = [] if request.param == "default" else [CHART / "values-gpu.yaml"]
    return request.param, load_values(*extra)
