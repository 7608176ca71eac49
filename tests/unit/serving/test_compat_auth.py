"""The compatibility routes stay behind the API key like /v1 (each refusing in its own shape), except the
KServe v2 health probes; run on a real ClassifierService over published tiny versions, in-process."""

from __future__ import annotations

import re
from typing import Any

from model_repository import ModelRepository

from .conftest import serve_in_process


def test_compat_routes_need_the_key_and_v2_probes_do_not(published_repo: ModelRepository) -> None:
    async def check(client: Any) -> None:
        assert (await client.get("/v2/health/live")).json() == {"live": True}
        assert (await client.get("/v2/health/ready")).json() == {"ready": True}
        for tei_probe in ("/health", "/ping"):  # TEI's, /ping its SageMaker health route
            healthy = await client.get(tei_probe)
            assert healthy.status_code == 200 and healthy.content == b"", (tei_probe, healthy.text)

        infinity = await client.post("/classify", json={"model": "frozen_two", "input": ["hi"]})
        assert infinity.status_code == 401 and infinity.json()["error"]["code"] == 401
        tei = await client.post("/predict", json={"inputs": "hi"})
        assert tei.status_code == 401 and tei.json()["error_type"] == "Validation"
        v2_body = {"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}
        v2 = await client.post("/v2/models/frozen_two/infer", json=v2_body)
        assert v2.status_code == 401 and set(v2.json()) == {"error"}
        assert (await client.get("/v2/models/frozen_two")).status_code == 401
        # A binary-tensor body (its JSON header announced in a header) is not read before the key is
        # asked for: a client without the key hears 401, not a refusal of a body it was never to send.
        for binary in (b'{"inputs": [', b"{}xx"):
            sized = {"Inference-Header-Content-Length": str(len(binary) - 2)}
            refused = await client.post("/v2/models/frozen_two/infer", content=binary, headers=sized)
            assert refused.status_code == 401 and "API key" in refused.json()["error"], refused.text

        auth = {"Authorization": "Bearer k3y"}
        meta = await client.get("/v2/models/frozen_two", headers=auth)
        assert meta.status_code == 200 and meta.json()["versions"] == ["1"]
        # Whitespace after the key is the header's optional whitespace (RFC 9110), which uvicorn's parser
        # keeps: the key still matches, on /v1/classify's fast path and on the routes.
        spaced = {"Authorization": "Bearer k3y \t"}
        classify = {"scenario": "frozen_two", "texts": ["hi"]}
        assert (await client.post("/v1/classify", json=classify, headers=spaced)).status_code == 200
        assert (await client.get("/v2/models/frozen_two", headers=spaced)).status_code == 200
        wrong = {"Authorization": "Bearer k3 y"}
        assert (await client.post("/v1/classify", json=classify, headers=wrong)).status_code == 401
        # With the key, refusals are the route's own (a TEI pair), not 401.
        pair = await client.post("/predict", json={"inputs": ["q", "a"]}, headers=auth)
        assert pair.status_code == 422 and pair.json()["error_type"] == "Validation"

        # Off a Serve replica the app echoes X-Request-Id itself; an id unfit for a log line is replaced.
        given = await client.get("/v2/health/live", headers={"X-Request-Id": "trace-1"})
        assert given.headers.get_list("x-request-id") == ["trace-1"]
        odd = await client.get("/v2/health/live", headers={"X-Request-Id": "a b"})
        assert re.fullmatch(r"[0-9a-f]{32}", odd.headers["x-request-id"])

    serve_in_process(published_repo, check, api_key="k3y")


def test_v2_ready_names_the_scenarios_not_loaded(published_repo: ModelRepository) -> None:
    """A configured scenario the repository does not hold is not "still loading": the 503 names it, as
    /readyz's missing list does."""

    async def check(client: Any) -> None:
        readyz = await client.get("/readyz")
        assert readyz.status_code == 503 and readyz.json()["missing"] == ["no_such_scenario"]
        ready = await client.get("/v2/health/ready")
        assert ready.status_code == 503
        message = ready.json()["error"]
        assert "no_such_scenario" in message and "loading" not in message, message

    scenarios = [{"name": "frozen_two"}, {"name": "no_such_scenario"}]
    serve_in_process(published_repo, check, scenarios=scenarios)
