"""A request cancelled under way (its client left, or request_timeout_s passed) is never counted as answered,
and through a deployment handle the classifier replica is told to stop its part."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest


def test_a_cancelled_request_is_counted_499_not_200() -> None:
    pytest.importorskip("prometheus_client")
    from serving.api.routes import counted
    from serving.metrics import ServingMetrics

    metrics = ServingMetrics()
    metrics.scenario_label("toy", answered=True)  # a served name, so the label is the name

    async def scenario() -> None:
        async def request() -> None:
            with counted(metrics, "toy"):
                await asyncio.sleep(10)

        task = asyncio.ensure_future(request())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    text = metrics.render().decode()
    assert 'status="499"} 1.0' in text and 'status="200"' not in text, text


class _Response:
    """What a Ray DeploymentHandle call returns: awaitable, and cancellable on the replica."""

    def __init__(self) -> None:
        self.cancelled = False

    def __await__(self) -> Any:
        return asyncio.sleep(10).__await__()

    def cancel(self) -> None:
        self.cancelled = True


class _Handle:
    def __init__(self) -> None:
        self.responses: list[_Response] = []
        self.call = self

    def remote(self, *_args: Any) -> _Response:
        self.responses.append(_Response())
        return self.responses[-1]


def test_a_call_through_the_handle_that_times_out_cancels_the_replicas_work() -> None:
    pytest.importorskip("ray.serve")
    from serving.app import HandleBackend

    handle = _Handle()
    backend = HandleBackend(handle)

    async def scenario() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await backend._call("classify", "toy", ["hi"])

    asyncio.run(scenario())
    assert [r.cancelled for r in handle.responses] == [True]
