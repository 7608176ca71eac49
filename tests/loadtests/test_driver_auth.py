"""The bench's load drivers send the key a labelwise server with an api_key checks (--serve-arg api_key=...,
or LABELWISE_API_KEY, which the servers the bench starts inherit)."""

from __future__ import annotations

import pytest

from loadtests.bench import BenchOptions, _Runner
from loadtests.wrk import find_wrk

from .conftest import API_KEY, KeyedServer


@pytest.mark.parametrize("driver", ["python", "wrk"])
def test_the_bench_sends_the_served_api_key(
    keyed_server: KeyedServer, driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if driver == "wrk" and find_wrk() is None:
        pytest.skip("wrk is not installed (`make wrk`)")
    monkeypatch.delenv("LABELWISE_API_KEY", raising=False)
    options = BenchOptions(duration_s=1, warmup_s=0, attach_timeout_s=5, serve_overrides={"api_key": API_KEY})
    result = _Runner(options, None, driver).load(keyed_server.url, ["alpha"], 1, 2)
    assert result["requests"] > 0 and result["errors"] == 0, result["error_kinds"]
    assert keyed_server.counts.requests >= result["requests"]


def test_the_bench_reads_the_key_from_the_environment(
    keyed_server: KeyedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABELWISE_API_KEY", API_KEY)
    result = _Runner(BenchOptions(duration_s=1, warmup_s=0), None, "python").load(
        keyed_server.url, ["alpha"], 1, 2
    )
    assert result["requests"] > 0 and result["errors"] == 0, result["error_kinds"]
