"""The REST gateway (FastAPI under uvicorn): Vertex-style online prediction in front of Triton.

``python -m backend.gateway`` (the ``gateway`` line of infra/Procfile) serves on
``Settings.gateway_host:gateway_port``; OpenAPI docs at ``/docs``.

- ``GET /healthz``: database, Triton and MLflow status (503 when the database or Triton is down).
- ``GET /v1/endpoints`` and ``GET /v1/endpoints/{name}``: deployments, traffic, live state, inputs.
- ``POST /v1/endpoints/{name}:predict`` with ``{"instances": [{feature: value, ...}, ...]}`` →
  ``{"predictions": [...], "deployed_model": {"model": ..., "version": ...}}``.

A request goes to one deployment, chosen by the endpoint's traffic split (sticky per
``X-Request-ID`` when given), and to Triton over gRPC through one shared client. Errors are JSON
``{"error": {"code", "status", "message", "field"}}``: 400 for a bad request (naming the field),
404 for an unknown endpoint, 503 when Triton is down or the model not ready. Every request is
logged through ``RequestLog`` (batched DB writes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from backend.config import Settings, get_settings
from backend.db import get_engine, session_scope
from backend.errors import InvalidInputError, NotFoundError, SextantError
from backend.serving import endpoints
from backend.serving.client import TritonClient
from backend.serving.endpoints import EndpointInfo
from backend.serving.errors import InferenceError, ModelNotReadyError, TritonUnavailableError
from backend.serving.online import (
    RequestError,
    choose_deployment,
    format_predictions,
    instances_of,
    instances_to_columns,
    traffic_bucket,
)
from backend.serving.request_log import RequestLog, RequestRecord

log = logging.getLogger("sextant.gateway")

REQUEST_ID_HEADER = "x-request-id"
# Gateway requests give up on Triton sooner than bulk jobs do.
TRITON_TIMEOUT_S = 30.0
HEALTH_TIMEOUT_S = 2.0
MAX_CACHED_ENDPOINTS = 10_000
STATUS_NAMES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 500: "INTERNAL", 503: "UNAVAILABLE"}


# API schema (OpenAPI docs) ---------------------------------------------------------------------


class InputSchema(BaseModel):
    name: str
    type: str = Field(description="MLflow column type: boolean, long, integer, double, float or string")
    nullable: bool = Field(description="null / NaN accepted (a missing value the model imputes)")


class DeployedModel(BaseModel):
    id: int
    model: str
    version: int
    alias: str | None = Field(description="the alias this deployment follows (MODEL@ALIAS), if any")
    traffic_percent: int
    state: str = Field(description="loading, ready, failed or unavailable (Triton unreachable)")
    message: str = Field(description="why it is not ready (Triton's own message for a failed load)")
    framework: str
    task: str
    classes: list[Any] | None
    inputs: list[InputSchema]
    updated_at: str


class EndpointOut(BaseModel):
    name: str
    description: str
    state: str
    created_at: str
    updated_at: str
    predict_url: str
    deployed_models: list[DeployedModel]
    inputs: list[InputSchema] = Field(description="what each instance holds (the main deployment's signature)")
    example: dict[str, Any] | None = Field(description="one instance from the model's input example")


class EndpointList(BaseModel):
    endpoints: list[EndpointOut]


class PredictRequest(BaseModel):
    instances: list[dict[str, Any]] = Field(
        description="one object per instance: every input feature by name (null = missing where nullable)",
        examples=[[{"tenure_months": 3, "monthly_charges": 80.5, "plan": "basic"}]],
    )


class DeployedModelRef(BaseModel):
    model: str
    version: int


class PredictResponse(BaseModel):
    predictions: list[Any] = Field(
        description='per instance: {"class": label, "probabilities": {label: p}} for classifiers, the value for '
        "regression"
    )
    deployed_model: DeployedModelRef


class ErrorBody(BaseModel):
    code: int
    status: str
    message: str
    field: str | None = Field(default=None, description="the request field at fault, e.g. instances[0].age")


class ErrorOut(BaseModel):
    error: ErrorBody


class Check(BaseModel):
    ok: bool
    detail: str


class HealthOut(BaseModel):
    status: str = Field(description="ok, degraded (MLflow down: serving works) or down")
    checks: dict[str, Check]


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": description}
    for code, description in (
        (400, "bad request: the message names the field"),
        (404, "no such endpoint"),
        (503, "Triton is down or the model is not ready"),
    )
}


class GatewayError(Exception):
    def __init__(self, code: int, message: str, *, field: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


def error_response(code: int, message: str, *, field: str | None = None) -> JSONResponse:
    body = {"error": {"code": code, "status": STATUS_NAMES.get(code, "ERROR"), "message": message}}
    if field is not None:
        body["error"]["field"] = field
    return JSONResponse(body, status_code=code)


# Endpoint cache --------------------------------------------------------------------------------


class EndpointCache:
    """Endpoints read from the DB, reused for ``ttl_s`` so a request costs no DB read."""

    def __init__(self, database_url: str, *, ttl_s: float):
        self.database_url = database_url
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, EndpointInfo | None]] = {}
        self._lock = threading.Lock()

    def cached(self, name: str) -> tuple[bool, EndpointInfo | None]:
        """(fresh, info) without touching the DB: the hot path stays on the event loop."""
        with self._lock:
            entry = self._entries.get(name)
        if entry is not None and entry[0] > time.monotonic():
            return True, entry[1]
        return False, None

    def get(self, name: str) -> EndpointInfo | None:
        fresh, info = self.cached(name)
        if fresh:
            return info
        now = time.monotonic()
        try:
            with session_scope(self.database_url) as session:
                info: EndpointInfo | None = endpoints.get_endpoint(session, name=name)
        except NotFoundError:
            info = None
        with self._lock:
            if len(self._entries) >= MAX_CACHED_ENDPOINTS:
                # Requests to ever new unknown names must not grow the cache without bound.
                self._entries.clear()
            self._entries[name] = (now + self.ttl_s, info)
        return info


# Health ----------------------------------------------------------------------------------------


def _check_database(url: str) -> tuple[bool, str]:
    try:
        with get_engine(url).connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:
        return False, f"{type(error).__name__}: {error}".splitlines()[0]
    return True, get_engine(url).dialect.name


def _check_triton(triton: TritonClient, settings: Settings) -> tuple[bool, str]:
    if triton.is_server_ready(timeout_s=HEALTH_TIMEOUT_S):
        return True, settings.triton_grpc_url
    return False, f"not answering at {settings.triton_grpc_url}"


def _check_mlflow(settings: Settings) -> tuple[bool, str]:
    uri = settings.resolved_mlflow_tracking_uri
    try:
        if uri.startswith(("http://", "https://")):
            response = httpx.get(f"{uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S)
            return response.status_code == 200, f"{uri} answered {response.status_code}"
        if uri.startswith("sqlite:///"):
            path = uri.removeprefix("sqlite:///")
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=HEALTH_TIMEOUT_S)) as connection:
                connection.execute("SELECT 1 FROM registered_models LIMIT 1")
            return True, uri
        with get_engine(uri).connect() as connection:
            connection.execute(text("SELECT 1"))
        return True, uri
    except Exception as error:
        return False, f"{uri}: {type(error).__name__}: {error}".splitlines()[0]


# Application -----------------------------------------------------------------------------------


def _endpoint_out(info: EndpointInfo) -> dict[str, Any]:
    return info.as_dict() | {"predict_url": f"/v1/endpoints/{info.name}:predict"}


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"the body is {int(declared):,} bytes; at most {limit:,} are accepted", field="body")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"the body is over {limit:,} bytes, the most accepted", field="body")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: Settings | None = None, *, triton: TritonClient | None = None) -> FastAPI:
    """The gateway app; ``triton`` is shared by every request (made from Settings when None)."""
    settings = settings or get_settings()
    database_url = settings.resolved_database_url
    client = triton or TritonClient(settings.triton_grpc_url, timeout_s=TRITON_TIMEOUT_S)
    request_log = RequestLog(
        database_url, flush_interval_s=settings.gateway_log_flush_s, batch_rows=settings.gateway_log_batch_rows
    )
    cache = EndpointCache(database_url, ttl_s=settings.gateway_endpoint_cache_s)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        request_log.start()
        try:
            yield
        finally:
            request_log.stop()
            if triton is None:
                client.close()

    app = FastAPI(
        title="Sextant gateway",
        version="1",
        summary="Online prediction on Sextant endpoints (models served by NVIDIA Triton).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.triton = client
    app.state.request_log = request_log
    app.state.endpoint_cache = cache

    @app.get("/healthz", response_model=HealthOut, tags=["health"], responses={503: {"model": HealthOut}})
    async def healthz() -> JSONResponse:
        """Database, Triton and MLflow; 503 when the database or Triton is down (MLflow is not needed to serve)."""
        database, triton_ok, mlflow_ok = await asyncio.gather(
            run_in_threadpool(_check_database, database_url),
            run_in_threadpool(_check_triton, client, settings),
            run_in_threadpool(_check_mlflow, settings),
        )
        checks = {
            "database": {"ok": database[0], "detail": database[1]},
            "triton": {"ok": triton_ok[0], "detail": triton_ok[1]},
            "mlflow": {"ok": mlflow_ok[0], "detail": mlflow_ok[1]},
        }
        serving = database[0] and triton_ok[0]
        status = ("ok" if mlflow_ok[0] else "degraded") if serving else "down"
        return JSONResponse({"status": status, "checks": checks}, status_code=200 if serving else 503)

    @app.get("/v1/endpoints", response_model=EndpointList, tags=["endpoints"])
    async def list_endpoints() -> dict[str, Any]:
        """Every endpoint with its deployed models, traffic and live state."""

        def read() -> list[EndpointInfo]:
            with session_scope(database_url) as session:
                return endpoints.list_endpoints(session, triton=client)

        return {"endpoints": [_endpoint_out(info) for info in await run_in_threadpool(read)]}

    @app.get("/v1/endpoints/{name}", response_model=EndpointOut, tags=["endpoints"], responses={404: ERRORS[404]})
    async def get_endpoint(name: str) -> Any:
        """One endpoint: deployed models (version, traffic, state), and the inputs an instance holds."""

        def read() -> EndpointInfo:
            with session_scope(database_url) as session:
                return endpoints.get_endpoint(session, name=name, triton=client)

        try:
            return _endpoint_out(await run_in_threadpool(read))
        except NotFoundError as error:
            return error_response(404, str(error))

    @app.post(
        "/v1/endpoints/{name}:predict",
        response_model=PredictResponse,
        tags=["prediction"],
        responses=ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
            },
            "parameters": [
                {
                    "name": "X-Request-ID",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "requests with the same id go to the same deployed model",
                }
            ],
        },
    )
    async def predict(name: str, request: Request) -> JSONResponse:
        """Predict on instances with one of the endpoint's deployed models (chosen by the traffic split)."""
        started = time.perf_counter()
        record: dict[str, Any] = {"endpoint": name, "instances": 0}
        failure: GatewayError | None = None
        try:
            body = await _read_body(request, settings.gateway_max_body_bytes)
            fresh, info = cache.cached(name)
            if not fresh:
                info = await run_in_threadpool(cache.get, name)
            if info is None:
                raise GatewayError(404, f"no endpoint named {name!r}")
            try:
                payload = json.loads(body)
            except (UnicodeDecodeError, ValueError) as error:
                raise RequestError(f"the body is not valid JSON: {error}", field="body") from error
            instances = instances_of(payload, max_instances=settings.gateway_max_instances)
            record["instances"] = len(instances)
            deployment = choose_deployment(info.deployments, traffic_bucket(request.headers.get(REQUEST_ID_HEADER)))
            if deployment is None:
                raise GatewayError(503, f"endpoint {name!r} has no model deployed: deploy one first")
            record.update(model_name=deployment.model, model_version=deployment.version)
            columns = instances_to_columns(instances, deployment.inputs)
            outputs = await run_in_threadpool(client.infer, deployment.triton_name, deployment.version, columns)
            predictions = format_predictions(outputs, task=deployment.task, classes=deployment.classes)
        except RequestError as error:
            failure = GatewayError(400, str(error), field=error.field)
        except GatewayError as error:
            failure = error
        except (TritonUnavailableError, ModelNotReadyError) as error:
            failure = GatewayError(503, str(error))
        except (InferenceError, InvalidInputError, SextantError) as error:
            log.warning("prediction on %s failed: %s", name, error)
            failure = GatewayError(500, f"prediction failed: {error}")
        except Exception as error:
            log.exception("unexpected error on %s", name)
            failure = GatewayError(500, f"internal error: {type(error).__name__}")
        if failure is None:
            deployed = {"model": deployment.model, "version": deployment.version}
            response = JSONResponse({"predictions": predictions, "deployed_model": deployed})
        else:
            response = error_response(failure.code, failure.message, field=failure.field)
        request_log.record(
            RequestRecord(
                status_code=response.status_code,
                latency_ms=(time.perf_counter() - started) * 1000,
                error=failure.message if failure else None,
                **record,
            )
        )
        return response

    return app


def main() -> int:
    import uvicorn

    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level="warning",
        # Every request is in the request log already.
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
