"""Ray's BackPressureError (a separate ingress whose handle queue is full) is answered in the error shape
with the deployment's own status and Retry-After (backpressure_status_code, retry_after_s), never 500."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize(
    ("status", "retry_after_s", "header"), [(429, 7.0, "7"), (503, 2.5, "3"), (503, None, "1")]
)
def test_backpressure_keeps_the_deployments_status_and_retry_after(
    status: int, retry_after_s: float | None, header: str
) -> None:
    pytest.importorskip("ray.serve")
    from ray.serve.exceptions import BackPressureError

    from serving.api.http_errors import unexpected_error_response

    response = unexpected_error_response(
        BackPressureError(9, 8, status, retry_after_s), "rid-1", "/v1/classify"
    )
    assert response.status_code == status
    assert response.headers["retry-after"] == header  # None: the service's 1 s
    assert json.loads(response.body)["error"]["type"] == "overloaded"


def test_any_other_exception_is_a_500_that_tells_nothing_but_the_request_id() -> None:
    from serving.api.http_errors import unexpected_error_response

    response = unexpected_error_response(RuntimeError("secret detail"), "rid-2", "/v1/classify")
    body = json.loads(response.body)["error"]
    assert response.status_code == 500 and "secret" not in body["message"] and "rid-2" in body["message"]


@pytest.mark.parametrize("status", [429, 503])
def test_backpressure_is_counted_with_the_status_it_is_answered_with(status: int) -> None:
    """The request metrics counted it as a 500, a server fault on the dashboards, where the client got
    the overload status."""
    pytest.importorskip("ray.serve")
    from ray.serve.exceptions import BackPressureError

    from serving.api.routes import counted
    from serving.metrics import ServingMetrics

    metrics = ServingMetrics()
    with pytest.raises(BackPressureError), counted(metrics, "s1"):
        raise BackPressureError(9, 8, status, 1.0)
    with pytest.raises(RuntimeError), counted(metrics, "s1"):
        raise RuntimeError("boom")
    text = metrics.render().decode()
    assert f'labelwise_requests_total{{scenario="_unknown",status="{status}"}} 1.0' in text, text
    assert 'labelwise_requests_total{scenario="_unknown",status="500"} 1.0' in text, text


def test_queue_wait_and_pass_time_resolve_below_a_millisecond() -> None:
    """A row's wait and a CPU pass of a small model take 0.1-2 ms: with the request latency's buckets
    (2 ms the first) every quantile of them read ~1-2 ms whatever the real values."""
    from serving.metrics import ServingMetrics

    metrics = ServingMetrics()
    for _ in range(10):
        metrics.queue_wait.labels().observe(0.0002)
        metrics.inference.labels("lora").observe(0.0003)
    lines = metrics.render().decode().splitlines()
    wait = [line for line in lines if line.startswith("labelwise_queue_wait_seconds_bucket")]
    run = [line for line in lines if line.startswith("labelwise_inference_seconds_bucket")]
    assert any('le="0.00025"' in line and line.endswith(" 10.0") for line in wait), wait
    assert any('le="0.0001"' in line and line.endswith(" 0.0") for line in wait), wait
    assert any('le="0.0005"' in line and line.endswith(" 10.0") for line in run), run
