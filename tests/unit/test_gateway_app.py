"""The gateway app without Triton: body limits (declared and streamed), the OpenAPI contract, health down."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from backend.config import get_settings
from backend.db import migrate
from backend.gateway import create_app
from backend.serving.client import TritonClient

LIMIT = 1024


@pytest.fixture
def api() -> Iterator[TestClient]:
    migrate()
    settings = get_settings().model_copy(update={"gateway_max_body_bytes": LIMIT, "triton_grpc_port": 1})
    with TritonClient("127.0.0.1:1", timeout_s=1) as triton, TestClient(create_app(settings, triton=triton)) as client:
        yield client


def test_a_body_over_the_limit_is_refused_declared_or_streamed(api: TestClient) -> None:
    declared = api.post("/v1/endpoints/any:predict", content=b"x" * (LIMIT + 1))
    assert declared.status_code == 400
    assert declared.json()["error"]["field"] == "body" and f"{LIMIT + 1:,} bytes" in declared.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:
        for _ in range(4):
            yield b"y" * (LIMIT // 2)

    streamed = api.post("/v1/endpoints/any:predict", content=chunks())
    assert streamed.status_code == 400 and streamed.json()["error"]["field"] == "body"


def test_the_openapi_contract(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    predict = spec["paths"]["/v1/endpoints/{name}:predict"]["post"]
    schema = predict["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["instances"]
    assert {"200", "400", "404", "503"} <= set(predict["responses"])
    assert {"/healthz", "/v1/endpoints", "/v1/endpoints/{name}"} <= set(spec["paths"])


def test_health_is_503_without_triton(api: TestClient) -> None:
    health = api.get("/healthz")
    assert health.status_code == 503
    body = health.json()
    assert body["status"] == "down" and body["checks"]["database"]["ok"] is True
    assert body["checks"]["triton"]["ok"] is False
