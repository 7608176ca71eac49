"""A small typed HTTP client for the labelwise service: timeouts, and retries that honour Retry-After."""

from __future__ import annotations

import time
from typing import Any

import httpx
from pydantic import BaseModel, Field

from .errors import ClientError

__all__ = ["ClassifyResult", "ClientError", "LabelScore", "LabelwiseClient"]

_RETRY_STATUSES = {429, 502, 503, 504}


class LabelScore(BaseModel):
    label: str = Field(description="Label name.")
    score: float = Field(description="Probability in [0, 1].")


class ClassifyResult(BaseModel):
    scenario: str = Field(description="Scenario that answered.")
    version: int = Field(description="Model version that answered.")
    results: list[list[LabelScore]] = Field(description="Per text, labels with scores, best first.")
    truncated: list[bool] = Field(description="Per text, whether it was cut to the max length.")


class LabelwiseClient:
    """Synchronous client. Retries 429/502/503/504 and connection errors, waiting Retry-After when sent;
    an error answer raises ClientError (a LabelwiseError) with its status and body."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout_s: float = 10.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_wait_s: float = 30.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s, headers=headers)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s

    def __enter__(self) -> LabelwiseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _wait_s(self, attempt: int, response: httpx.Response | None) -> float:
        header = response.headers.get("retry-after") if response is not None else None
        if header is not None:
            try:
                return min(float(header), self.max_wait_s)
            except ValueError:
                pass
        return min(self.backoff_s * 2**attempt, self.max_wait_s)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in range(self.max_retries + 1):
            response = None
            try:
                response = self._http.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError):
                if attempt == self.max_retries:
                    raise
            if response is not None:
                if response.status_code < 400:
                    return response.json()
                if response.status_code not in _RETRY_STATUSES or attempt == self.max_retries:
                    try:
                        body = response.json()
                    except ValueError:
                        body = {"error": {"message": response.text[:200]}}
                    raise ClientError(response.status_code, body)
            time.sleep(self._wait_s(attempt, response))
        raise AssertionError("unreachable")

    def classify(
        self, scenario: str, texts: list[str], top_k: int | None = None, truncate: bool = True
    ) -> ClassifyResult:
        body = {"scenario": scenario, "texts": texts, "top_k": top_k, "truncate": truncate}
        return ClassifyResult.model_validate(self.request("POST", "/v1/classify", json=body))

    def scenarios(self) -> list[dict[str, Any]]:
        return self.request("GET", "/v1/scenarios")["scenarios"]

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False
