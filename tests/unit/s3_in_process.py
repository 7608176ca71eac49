"""An S3 bucket in this process (moto's `mock_aws`, nothing listening on a port) that s3fs can reach.

moto answers botocore's calls with botocore's own synchronous responses; s3fs calls through aiobotocore,
which awaits the body (aio-libs/aiobotocore#755): `convert_to_response_dict` is wrapped to hand it bytes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

# Fake credentials and a region, and no look at this machine's AWS files or the EC2 metadata endpoint.
_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_CONFIG_FILE": "/nonexistent",
    # aiobotocore's chunked checksum bodies are async; moto reads a request body synchronously
    "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
    "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
}


class _Body:
    """A downloaded object's body, read as aiobotocore's streaming body is."""

    def __init__(self, data: bytes) -> None:
        self._data, self._at = data, 0

    async def read(self, amt: int | None = None) -> bytes:
        end = len(self._data) if amt is None or amt < 0 else self._at + amt
        out, self._at = self._data[self._at : end], min(end, len(self._data))
        return out

    def close(self) -> None:
        pass

    async def __aenter__(self) -> _Body:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass


@dataclass
class Bucket:
    name: str
    client: Any  # boto3's S3 client, to look at and bend the bucket's objects

    def url(self, prefix: str = "repo") -> str:
        return f"s3://{self.name}/{prefix}"

    def object_keys(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture(name="s3_bucket")
def s3_bucket_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[Bucket]:
    pytest.importorskip("s3fs")
    moto = pytest.importorskip("moto")
    import aiobotocore.endpoint
    import boto3
    from aiobotocore.awsrequest import AioAWSResponse

    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in _ENV.items():
        monkeypatch.setenv(name, value)
    real = aiobotocore.endpoint.convert_to_response_dict

    async def convert(http_response: Any, operation_model: Any) -> dict[str, Any]:
        if isinstance(http_response, AioAWSResponse):  # a real endpoint's: never here, the mock answers
            return await real(http_response, operation_model)
        body = http_response.content
        streamed = http_response.status_code < 300 and operation_model.has_streaming_output
        return {
            "headers": http_response.headers,
            "status_code": http_response.status_code,
            "context": {"operation_name": operation_model.name},
            "body": _Body(body) if streamed else body,
        }

    monkeypatch.setattr(aiobotocore.endpoint, "convert_to_response_dict", convert)
    with moto.mock_aws():
        client = boto3.client("s3")
        bucket = Bucket(f"labelwise-{uuid.uuid4().hex[:12]}", client)
        client.create_bucket(Bucket=bucket.name)
        yield bucket
