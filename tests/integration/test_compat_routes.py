"""The compatibility routes on the real app, called with each ecosystem's own request and response
shapes: Infinity's POST /classify, TEI's POST /predict, KServe v2 / Triton's /v2. Each must agree with
/v1/classify on the same texts and refuse in its own error shape."""

from __future__ import annotations

import json

import pytest

from .conftest import ServedApp
from .published import LATE_SCENARIO, SCENARIOS, labels_of

pytestmark = pytest.mark.integration

TEXTS = ["The film was great today.", "My order was awful again.", "The flight was listed by noon."]


def _loaded(served: ServedApp) -> None:
    def every_one() -> bool:
        entries = {e["name"]: e for e in served.client.get("/v1/scenarios").json()["scenarios"]}
        return all(entries[name]["version"] for name in SCENARIOS)

    served.wait_for(every_one, 90, "every scenario loaded")


def _v1(served: ServedApp, scenario: str, texts: list[str], **extra) -> dict:
    response = served.client.post("/v1/classify", json={"scenario": scenario, "texts": texts, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def _pairs(rows: list[list[dict]]) -> list[list[tuple[str, float]]]:
    return [[(x["label"], round(x["score"], 5)) for x in row] for row in rows]


def _infinity_error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == status and error["message"]
    return error


def _tei_error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type"} and body["error"]
    assert body["error_type"] in {"Validation", "Tokenizer", "Backend", "Overloaded", "Unhealthy", "Empty"}
    return body


def _v2_error(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    return body["error"]


# ---- Infinity ---------------------------------------------------------------------------------------
def test_infinity_classify_answers_every_label_like_v1(served: ServedApp) -> None:
    _loaded(served)
    for scenario in SCENARIOS:
        response = served.client.post("/classify", json={"model": scenario, "input": TEXTS})
        assert response.status_code == 200, response.text
        body = response.json()
        v1 = _v1(served, scenario, TEXTS)
        assert body["object"] == "classify" and body["model"] == scenario
        assert all(list(item) == ["score", "label"] for row in body["data"] for item in row)
        assert _pairs(body["data"]) == _pairs(v1["results"])
        assert all(len(row) == len(labels_of(scenario)) for row in body["data"])
        assert body["usage"] == {
            "prompt_tokens": v1["usage"]["total_tokens"],
            "total_tokens": v1["usage"]["total_tokens"],
        }
        assert body["id"] == f"labelwise-{response.headers['x-request-id']}" and body["created"] > 0
        assert response.headers["x-labelwise-version"] == str(v1["version"])

    raw = served.client.post("/classify", json={"model": "topic_frozen", "input": TEXTS, "raw_scores": True})
    assert _pairs(raw.json()["data"]) == _pairs(
        _v1(served, "topic_frozen", TEXTS, raw_scores=True)["raw_scores"]
    )


def test_infinity_refusals_are_in_its_shape(served: ServedApp) -> None:
    _loaded(served)
    unknown = _infinity_error(served.client.post("/classify", json={"model": "nope", "input": ["hi"]}), 400)
    assert "nope" not in unknown["message"] and unknown["type"] == "unknown_scenario"
    missing = _infinity_error(served.client.post("/classify", json={"model": "topic_frozen"}), 422)
    assert missing["param"] == "input"
    too_many = _infinity_error(
        served.client.post("/classify", json={"model": "topic_frozen", "input": ["hi"] * 9}), 422
    )
    assert too_many["param"] == "input" and "at most 8" in too_many["message"]
    # No model and several scenarios served, no default_scenario: the request must name one.
    nameless = _infinity_error(served.client.post("/classify", json={"input": ["hi"]}), 422)
    assert nameless["param"] == "model" and "name one in `model`" in nameless["message"], nameless
    not_json = _infinity_error(
        served.client.post("/classify", content=b"{not json", headers={"content-type": "application/json"}),
        400,
    )
    assert not_json["param"] == "body" and "not valid JSON" in not_json["message"], not_json
    # Infinity's own client sends its default model name when none is chosen: read as no model.
    unnamed = _infinity_error(
        served.client.post("/classify", json={"model": "default/not-specified", "input": ["hi"]}), 422
    )
    assert unnamed["param"] == "model" and "name one in `model`" in unnamed["message"], unnamed


def test_v2_reads_json_whatever_the_content_type(served: ServedApp) -> None:
    """tritonclient sends no Content-Type (its aio client application/octet-stream); Triton and KServe
    read the body as JSON anyway, and so does /v2. /v1 (like TEI's axum and Infinity) stays strict."""
    _loaded(served)
    infer = b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["great film"]}]}'
    for content_type in (None, "application/octet-stream", "text/plain"):
        headers = {"content-type": content_type} if content_type else {}
        response = served.client.post("/v2/models/topic_frozen/infer", content=infer, headers=headers)
        assert response.status_code == 200, (content_type, response.text)
        assert response.json()["outputs"][0]["shape"] == [1]
    strict = served.client.post(
        "/v1/classify",
        content=b'{"scenario": "topic_frozen", "texts": ["great film"]}',
        headers={"content-type": "text/plain"},
    )
    assert strict.status_code == 415 and strict.json()["error"]["field"] == "Content-Type", strict.text


# ---- TEI --------------------------------------------------------------------------------------------
def _predict(served: ServedApp, body: dict, scenario: str | None = "sentiment_full"):
    headers = {"X-Labelwise-Scenario": scenario} if scenario else {}
    return served.client.post("/predict", json=body, headers=headers)


def test_tei_predict_single_and_batch(served: ServedApp) -> None:
    _loaded(served)
    v1 = _v1(served, "sentiment_full", TEXTS)
    single = _predict(served, {"inputs": TEXTS[0]})
    assert single.status_code == 200, single.text
    assert all(list(item) == ["score", "label"] for item in single.json())
    assert _pairs([single.json()]) == _pairs(v1["results"][:1])
    assert _predict(served, {"inputs": [TEXTS[0]]}).json() == single.json()  # a one-text list is one text
    batch = _predict(served, {"inputs": [[t] for t in TEXTS]})
    assert batch.status_code == 200 and _pairs(batch.json()) == _pairs(v1["results"])
    raw = _predict(served, {"inputs": [[t] for t in TEXTS], "raw_scores": True}).json()
    assert _pairs(raw) == _pairs(_v1(served, "sentiment_full", TEXTS, raw_scores=True)["raw_scores"])
    assert batch.headers["x-labelwise-version"] == str(v1["version"])


def test_tei_truncate_pairs_and_scenario_choice(served: ServedApp) -> None:
    _loaded(served)
    long_text = "the film was great and " * 20
    # TEI (auto-truncate on by default since 1.9) cuts a long text unless the request says truncate false;
    # then it is a validation error (422), named as TEI's request names it: `inputs` for one text,
    # `inputs.<i>` in a batch (not /v1's texts.<i>).
    cut = _predict(served, {"inputs": long_text})
    assert cut.status_code == 200, cut.text
    assert _predict(served, {"inputs": long_text, "truncate": None}).json() == cut.json()
    assert _predict(served, {"inputs": long_text, "truncate": True}).json() == cut.json()
    refused = _tei_error(_predict(served, {"inputs": long_text, "truncate": False}), 422)
    assert refused["error_type"] == "Validation" and refused["error"].startswith("inputs: longer than")
    in_batch = _tei_error(_predict(served, {"inputs": [["short"], [long_text]], "truncate": False}), 422)
    assert in_batch["error"].startswith("inputs.1: longer than") and "tokens" in in_batch["error"], in_batch
    pair = _tei_error(_predict(served, {"inputs": ["a question", "an answer"]}), 422)
    assert pair["error_type"] == "Validation" and "pair" in pair["error"]
    assert "pair" in _tei_error(_predict(served, {"inputs": [["ok"], ["q", "a"]]}), 422)["error"]
    _tei_error(_predict(served, {"inputs": []}), 422)
    _tei_error(_predict(served, {"inputs": "hi", "truncation_direction": "left"}), 422)
    _tei_error(_predict(served, {"inputs": 3}), 422)
    # The scenario: the header, else default_scenario, else the only one served; this app serves five.
    nameless = _tei_error(_predict(served, {"inputs": "hi"}, scenario=None), 422)
    assert "X-Labelwise-Scenario" in nameless["error"]
    unknown = _tei_error(_predict(served, {"inputs": "hi"}, scenario="nope"), 404)
    assert "nope" not in unknown["error"]
    other = _predict(served, {"inputs": "hi"}, scenario="mood_frozen").json()
    assert {x["label"] for x in other} == set(labels_of("mood_frozen"))


def test_tei_routes_beside_predict(served: ServedApp) -> None:
    """TEI also serves predict on / and /invocations (huggingface_hub's InferenceClient posts to the
    server's root), GET /health, and GET /info describing the model."""
    _loaded(served)
    header = {"X-Labelwise-Scenario": "mood_frozen"}
    predicted = served.client.post("/predict", json={"inputs": TEXTS[0]}, headers=header).json()
    for path in ("/", "/invocations"):
        response = served.client.post(path, json={"inputs": TEXTS[0]}, headers=header)
        assert response.status_code == 200 and response.json() == predicted, (path, response.text)
    health = served.client.get("/health")
    assert health.status_code in (200, 503)
    if health.status_code == 200:
        assert health.content == b""
    else:
        assert _tei_error(health, 503)["error_type"] == "Unhealthy"
    info = served.client.get("/info", headers=header)
    assert info.status_code == 200, info.text
    body = info.json()
    labels = labels_of("mood_frozen")
    assert body["served_model_name"] == "mood_frozen" and body["auto_truncate"] is True
    assert body["model_type"] == {
        "classifier": {
            "id2label": {str(i): label for i, label in enumerate(labels)},
            "label2id": {label: i for i, label in enumerate(labels)},
        }
    }
    assert body["max_client_batch_size"] == 8 and body["max_input_length"] > 0
    # Several scenarios and no default: /info needs the header, as /predict does.
    assert "X-Labelwise-Scenario" in _tei_error(served.client.get("/info"), 422)["error"]


# ---- KServe v2 / Triton -------------------------------------------------------------------------------
def _infer(served: ServedApp, scenario: str, body: dict):
    return served.client.post(f"/v2/models/{scenario}/infer", json=body)


def _bytes_input(texts: list, shape: list[int] | None = None) -> dict:
    return {"inputs": [{"name": "text", "shape": shape or [len(texts)], "datatype": "BYTES", "data": texts}]}


def test_v2_health_and_model_metadata(served: ServedApp) -> None:
    _loaded(served)
    assert served.client.get("/v2/health/live").json() == {"live": True}
    ready = served.client.get("/v2/health/ready")
    readyz = served.client.get("/readyz")
    assert (ready.status_code == 200) == (readyz.status_code == 200)
    if ready.status_code == 200:
        assert ready.json() == {"ready": True}
    else:
        _v2_error(ready, 503)
    meta = served.client.get("/v2/models/intent_lora")
    assert meta.status_code == 200, meta.text
    body = meta.json()
    assert body["name"] == "intent_lora" and body["versions"] == [
        str(_v1(served, "intent_lora", ["x"])["version"])
    ]
    assert body["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["label"]["datatype"] == "BYTES" and outputs["score"]["datatype"] == "FP32"
    assert outputs["scores"]["shape"] == [-1, len(labels_of("intent_lora"))]
    assert served.client.get("/v2/models/intent_lora/ready").json() == {"name": "intent_lora", "ready": True}
    # The version the metadata lists can be asked for by path (tritonclient's model_version=); no other.
    version = body["versions"][0]
    assert served.client.get(f"/v2/models/intent_lora/versions/{version}").json() == body
    ready_v = served.client.get(f"/v2/models/intent_lora/versions/{version}/ready")
    assert ready_v.json() == {"name": "intent_lora", "ready": True}
    by_version = f"/v2/models/intent_lora/versions/{version}"
    infer_v = served.client.post(f"{by_version}/infer", json=_bytes_input(["hi"]))
    assert infer_v.status_code == 200 and infer_v.json()["model_version"] == version, infer_v.text
    for path in ("", "/ready", "/infer"):
        method = served.client.post if path == "/infer" else served.client.get
        kwargs = {"json": _bytes_input(["hi"])} if path == "/infer" else {}
        other = method(f"/v2/models/intent_lora/versions/{int(version) + 50}{path}", **kwargs)
        assert f"v{version} is served" in _v2_error(other, 404), path
    assert "nope" not in _v2_error(served.client.get("/v2/models/nope"), 404)
    _v2_error(served.client.get("/v2/models/nope/ready"), 404)
    late = served.client.get(f"/v2/models/{LATE_SCENARIO}/ready")  # configured; loaded only once published
    late_version = {e["name"]: e for e in served.client.get("/v1/scenarios").json()["scenarios"]}[
        LATE_SCENARIO
    ]
    if late_version["version"] is None:
        _v2_error(late, 503)
    else:
        assert late.status_code == 200


def test_v2_infer_answers_labels_and_scores_like_v1(served: ServedApp) -> None:
    _loaded(served)
    for scenario in SCENARIOS:
        response = _infer(served, scenario, {"id": "req-1", **_bytes_input(TEXTS)})
        assert response.status_code == 200, response.text
        body = response.json()
        v1 = _v1(served, scenario, TEXTS, raw_scores=True)
        assert (
            body["model_name"] == scenario
            and body["model_version"] == str(v1["version"])
            and body["id"] == "req-1"
        )
        out = {o["name"]: o for o in body["outputs"]}
        k = len(labels_of(scenario))
        assert out["label"] == {
            "name": "label",
            "datatype": "BYTES",
            "shape": [3],
            "data": [r[0]["label"] for r in v1["results"]],
        }
        assert out["score"]["datatype"] == "FP32" and out["score"]["shape"] == [3]
        assert [round(s, 5) for s in out["score"]["data"]] == [round(r[0]["score"], 5) for r in v1["results"]]
        assert out["labels"]["shape"] == [3, k] and out["scores"]["shape"] == [3, k]
        assert out["labels"]["data"] == [x["label"] for r in v1["results"] for x in r]
        assert [round(x, 5) for x in out["logits"]["data"]] == [
            round(x["score"], 5) for r in v1["raw_scores"] for x in r
        ]
    # [N, 1] with nested data, and only the outputs asked for.
    nested = _infer(
        served, "topic_frozen", {**_bytes_input([[t] for t in TEXTS], [3, 1]), "outputs": [{"name": "label"}]}
    )
    assert nested.status_code == 200, nested.text
    assert [o["name"] for o in nested.json()["outputs"]] == ["label"]
    assert nested.json()["outputs"][0]["data"] == [
        r[0]["label"] for r in _v1(served, "topic_frozen", TEXTS)["results"]
    ]


def _binary_body(texts: list[str], outputs: list[str] | None = None) -> tuple[bytes, dict[str, str]]:
    """A request in the protocol's binary tensor extension, byte for byte as tritonclient 2.x builds it
    (InferenceServerClient.generate_request_body with set_data_from_numpy(..., binary_data=True)):
    a JSON header, then each element as a 4-byte little-endian length and its UTF-8 bytes."""
    data = b"".join(len(t.encode()).to_bytes(4, "little") + t.encode() for t in texts)
    header = {
        "inputs": [
            {
                "name": "text",
                "shape": [len(texts)],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(data)},
            }
        ]
    }
    if outputs:
        header["outputs"] = [{"name": o, "parameters": {"binary_data": True}} for o in outputs]
    head = json.dumps(header, separators=(",", ":")).encode()
    return head + data, {"Inference-Header-Content-Length": str(len(head))}


def test_v2_reads_binary_tensor_inputs(served: ServedApp) -> None:
    """tritonclient sends texts as binary BYTES tensors by default: answered as the same texts in JSON."""
    _loaded(served)
    texts = [*TEXTS, "héllo wörld ✓"]
    body, headers = _binary_body(texts, outputs=["label", "scores"])
    binary = served.client.post("/v2/models/topic_frozen/infer", content=body, headers=headers)
    assert binary.status_code == 200, binary.text
    as_json = _infer(
        served, "topic_frozen", {**_bytes_input(texts), "outputs": [{"name": "label"}, {"name": "scores"}]}
    )
    assert binary.json()["outputs"] == as_json.json()["outputs"]
    # Malformed binary bodies are refused by name, in the protocol's shape.
    cut = _v2_error(
        served.client.post("/v2/models/topic_frozen/infer", content=body[:-3], headers=headers), 400
    )
    assert "binary_data_size" in cut, cut
    wrong_size = {"Inference-Header-Content-Length": str(len(body) + 1)}
    assert "Inference-Header-Content-Length" in _v2_error(
        served.client.post("/v2/models/topic_frozen/infer", content=body, headers=wrong_size), 400
    )
    trailing = _v2_error(
        served.client.post("/v2/models/topic_frozen/infer", content=body + b"xx", headers=headers), 400
    )
    assert "2 bytes after" in trailing, trailing
    size = int(headers["Inference-Header-Content-Length"])
    overlong = body[:size] + (65535).to_bytes(4, "little") + body[size + 4 :]  # element 0 claims 64 KiB
    inside = _v2_error(
        served.client.post("/v2/models/topic_frozen/infer", content=overlong, headers=headers), 400
    )
    assert "ends inside element 0" in inside, inside


def test_v2_refusals_are_in_its_shape(served: ServedApp) -> None:
    _loaded(served)
    assert "nope" not in _v2_error(_infer(served, "nope", _bytes_input(["hi"])), 404)
    wrong_type = {"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    assert "BYTES" in _v2_error(_infer(served, "topic_frozen", wrong_type), 400)
    assert "shape" in _v2_error(_infer(served, "topic_frozen", _bytes_input(["a", "b"], [3])), 400)
    assert "data.1" in _v2_error(_infer(served, "topic_frozen", _bytes_input(["a", 7])), 400)
    assert "outputs" in _v2_error(
        _infer(served, "topic_frozen", {**_bytes_input(["a"]), "outputs": [{"name": "embedding"}]}), 400
    )
    assert "at most 8" in _v2_error(_infer(served, "topic_frozen", _bytes_input(["a"] * 9)), 400)
    _v2_error(_infer(served, "topic_frozen", {"inputs": "texts"}), 400)
    long_text = "the film was great and " * 20
    refuse = {**_bytes_input([long_text]), "parameters": {"truncate": False}}
    assert _v2_error(_infer(served, "topic_frozen", refuse), 413).startswith("inputs.0.data.0: longer than")


def test_unreadable_bodies_are_refused_in_each_routes_shape(served: ServedApp) -> None:
    """Not UTF-8 (400) and a chunked body that passes max_body_bytes as it streams in (413): answered in
    the route's own error shape, never as a 500."""
    _loaded(served)
    limit = served.client.get("/v1/scenarios").json()["limits"]["max_body_bytes"]
    routes = {
        "/classify": (_infinity_error, b'{"model": "topic_frozen", "input": ["\xff"]}'),
        "/predict": (_tei_error, b'{"inputs": "\xff"}'),
        "/v2/models/topic_frozen/infer": (
            _v2_error,
            b'{"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["\xff"]}]}',
        ),
    }

    def streamed():
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    json_type = {"content-type": "application/json"}
    for path, (error_of, not_utf8) in routes.items():
        refused = error_of(served.client.post(path, content=not_utf8, headers=json_type), 400)
        assert "not UTF-8" in str(refused), (path, refused)
        too_big = error_of(served.client.post(path, content=streamed(), headers=json_type), 413)
        assert f"over {limit} bytes" in str(too_big), (path, too_big)
