"""The gateway against a real, supervised tritonserver: predictions equal the MLflow pyfunc's (XGBoost,
PyTorch, regression), an 80/20 canary split, every bad request → 400 naming the field, 404 / 503,
the batched request log, a real uvicorn gateway process (with its p50 latency), and kill -9 of
tritonserver → restarted by the supervisor, models reloaded by the reload hook, the endpoint serves again.

Request validation goes through FastAPI's TestClient; one uvicorn process serves the rest.
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from backend.config import Settings, get_settings
from backend.db import migrate, session_scope
from backend.gateway import create_app
from backend.serving import endpoints
from backend.serving.client import TritonClient
from backend.serving.request_log import count_requests
from backend.serving.server import SupervisorStats, TritonServer, resolve_reload_hook, supervise
from backend.tracking import tracking_client
from tests.conftest import free_ports
from tests.integration.test_endpoints_service import (
    CHARGES,
    CHURN,
    EXAMPLE_CSV,
    REPO_ROOT,
    TORCH_VERSION,
    XGBOOST_VERSION,
    ServingStack,
    trained_store,
    wait_for,
)

MAX_INSTANCES = 100
MAX_BODY_BYTES = 64 * 1024
TOLERANCE = 1e-5
SPLIT_REQUESTS = 1000
LATENCY_REQUESTS = 300


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingStack]:
    stack = ServingStack.create(tmp_path_factory.mktemp("gateway"), trained_store(tmp_path_factory), own_database=True)
    with pytest.MonkeyPatch.context() as patch:
        stack.apply(patch)
        migrate()
        yield stack


@pytest.fixture(autouse=True)
def stack_env(sextant_home: Path, stack: ServingStack, monkeypatch: pytest.MonkeyPatch) -> None:
    stack.apply(monkeypatch)


class Supervised:
    def __init__(self, server: TritonServer, stats: SupervisorStats, stop: threading.Event, thread: threading.Thread):
        self.server, self.stats, self.stop, self.thread = server, stats, stop, thread


@pytest.fixture(scope="module")
def supervised(stack: ServingStack) -> Iterator[Supervised]:
    """tritonserver under the supervising loop of `make run`, with the reload hook the settings name."""
    server = stack.server(stack.home.parent)
    stats = SupervisorStats()
    stop = threading.Event()
    hook = resolve_reload_hook(get_settings().triton_reload_hook)
    thread = threading.Thread(
        target=supervise,
        kwargs={"server": server, "stop": stop, "reload_hook": hook, "health_interval_s": 0.2, "stats": stats},
        daemon=True,
    )
    thread.start()
    wait_for(lambda: stats.reloads == 1, 60, "tritonserver to start")
    try:
        yield Supervised(server, stats, stop, thread)
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not server.is_running()


@pytest.fixture(scope="module")
def triton(supervised: Supervised, stack: ServingStack) -> Iterator[TritonClient]:
    with TritonClient(stack.grpc_url) as client:
        yield client


@pytest.fixture(scope="module")
def deployed(triton: TritonClient) -> dict[str, endpoints.EndpointInfo]:
    """churn: XGBoost 80 % + PyTorch 20 %; one endpoint per model for parity; an empty one."""
    plan = {
        "churn": [(CHURN, XGBOOST_VERSION, 100), (CHURN, TORCH_VERSION, 20)],
        "churn-xgboost": [(CHURN, XGBOOST_VERSION, 100)],
        "churn-torch": [(CHURN, TORCH_VERSION, 100)],
        "charges": [(CHARGES, 1, 100)],
        "empty": [],
    }
    infos = {}
    with session_scope() as session:
        for name, deployments in plan.items():
            endpoints.create_endpoint(session, name=name)
            for model, version, traffic in deployments:
                endpoints.deploy_model(
                    session, endpoint=name, model=model, version=version, traffic_percent=traffic, triton=triton
                )
            infos[name] = endpoints.get_endpoint(session, name=name)
    assert all(d.state == "ready" for info in infos.values() for d in info.deployments)
    return infos


@pytest.fixture(scope="module")
def gateway_settings(stack: ServingStack) -> Settings:
    return get_settings().model_copy(
        update={"gateway_max_instances": MAX_INSTANCES, "gateway_max_body_bytes": MAX_BODY_BYTES}
    )


@pytest.fixture(scope="module")
def api(deployed: dict[str, endpoints.EndpointInfo], gateway_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(gateway_settings)) as client:
        yield client


@pytest.fixture(scope="module")
def uvicorn_gateway(deployed: dict[str, endpoints.EndpointInfo], stack: ServingStack) -> Iterator[str]:
    """``python -m backend.gateway`` as `make run` starts it, on a free port."""
    (port,) = free_ports(1)
    env = os.environ | stack.environment() | {"SEXTANT_GATEWAY_PORT": str(port)}
    log_path = stack.home.parent / "gateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "backend.gateway"], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                assert process.poll() is None, log_path.read_text()
                return False

        wait_for(healthy, 60, "the gateway")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def sample_frame() -> pd.DataFrame:
    """Raw rows of the example with missing values (where the pyfunc allows them) and an unseen category."""
    frame = pd.read_csv(EXAMPLE_CSV).head(60)
    frame.loc[0, "monthly_charges"] = np.nan
    frame.loc[3, "data_usage_gb"] = np.nan
    frame.loc[1, "region"] = None
    frame.loc[2, "region"] = "atlantis"
    frame.loc[4, "plan"] = None
    return frame


def instances_of(frame: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    return [
        {column: (None if pd.isna(value) else value.item() if hasattr(value, "item") else value)
         for column, value in row.items()}
        for row in frame[columns].to_dict("records")
    ]  # fmt: skip


def a_good_instance(info: endpoints.EndpointInfo) -> dict[str, Any]:
    assert info.example is not None
    return dict(info.example)


def test_health_and_endpoints(api: TestClient, deployed: dict[str, endpoints.EndpointInfo]) -> None:
    health = api.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert {name: check["ok"] for name, check in health.json()["checks"].items()} == {
        "database": True,
        "triton": True,
        "mlflow": True,
    }
    listed = api.get("/v1/endpoints").json()["endpoints"]
    assert [item["name"] for item in listed] == sorted(deployed)

    churn = api.get("/v1/endpoints/churn").json()
    assert churn["state"] == "ready" and churn["predict_url"] == "/v1/endpoints/churn:predict"
    assert [(m["model"], m["version"], m["traffic_percent"], m["state"]) for m in churn["deployed_models"]] == [
        (CHURN, XGBOOST_VERSION, 80, "ready"),
        (CHURN, TORCH_VERSION, 20, "ready"),
    ]
    inputs = {item["name"]: item["type"] for item in churn["inputs"]}
    assert inputs["plan"] == "string" and inputs["tenure_months"] == "long" and inputs["monthly_charges"] == "double"
    assert set(churn["example"]) == set(inputs)
    missing = api.get("/v1/endpoints/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]["message"]
    assert "/v1/endpoints/{name}:predict" in api.get("/openapi.json").json()["paths"]
    assert api.get("/docs").status_code == 200


@pytest.mark.parametrize(
    ("endpoint", "model", "version"),
    [("churn-xgboost", CHURN, XGBOOST_VERSION), ("churn-torch", CHURN, TORCH_VERSION), ("charges", CHARGES, 1)],
    ids=["xgboost-binary", "torch-binary", "xgboost-regression"],
)
def test_predictions_equal_the_pyfunc(
    api: TestClient, deployed: dict[str, endpoints.EndpointInfo], endpoint: str, model: str, version: int
) -> None:
    tracking_client()
    pyfunc = mlflow.pyfunc.load_model(f"models:/{model}/{version}")
    columns = pyfunc.metadata.get_input_schema().input_names()
    frame = sample_frame()
    expected = pyfunc.predict(frame[columns])

    response = api.post(f"/v1/endpoints/{endpoint}:predict", json={"instances": instances_of(frame, columns)})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["deployed_model"] == {"model": model, "version": version}
    predictions = body["predictions"]
    assert len(predictions) == len(frame)
    if model == CHARGES:
        assert np.abs(np.array(predictions) - expected["prediction"].to_numpy()).max() <= TOLERANCE
        return
    classes = deployed[endpoint].deployments[0].classes
    probabilities = np.array([[p["probabilities"][str(label)] for label in classes] for p in predictions])
    expected_probabilities = expected[[f"probability_{label}" for label in classes]].to_numpy()
    assert np.abs(probabilities - expected_probabilities).max() <= TOLERANCE
    assert [p["class"] for p in predictions] == expected["prediction"].tolist()


def test_an_80_20_split_over_1000_requests(uvicorn_gateway: str, deployed: dict[str, endpoints.EndpointInfo]) -> None:
    body = {"instances": [a_good_instance(deployed["churn"])]}
    with httpx.Client(base_url=uvicorn_gateway, timeout=10) as client:

        def version(headers: dict[str, str] | None = None) -> int:
            response = client.post("/v1/endpoints/churn:predict", json=body, headers=headers)
            assert response.status_code == 200, response.text
            return response.json()["deployed_model"]["version"]

        # A few requests in flight, as clients send them; each is routed on its own.
        with ThreadPoolExecutor(max_workers=4) as pool:
            versions = Counter(pool.map(lambda _: version(), range(SPLIT_REQUESTS)))
        # Binomial(1000, 0.8) has a standard deviation of 12.6: ±60 is beyond 4.7 sigma.
        assert abs(versions[XGBOOST_VERSION] - 800) <= 60, versions
        assert versions[XGBOOST_VERSION] + versions[TORCH_VERSION] == SPLIT_REQUESTS

        # The same request id always reaches the same version; different ids spread over both.
        assert len({version({"X-Request-ID": "customer-42"}) for _ in range(20)}) == 1
        spread = Counter(version({"X-Request-ID": f"id-{index}"}) for index in range(100))
        assert set(spread) == {XGBOOST_VERSION, TORCH_VERSION}


def _bad_requests(good: dict[str, Any]) -> list[tuple[str, Any, str, str]]:
    """(case, body (object or raw text), field the error names, words of the message)."""
    without_tenure = {key: value for key, value in good.items() if key != "tenure_months"}
    return [
        ("missing feature", {"instances": [good, without_tenure]}, "instances[1].tenure_months", "is missing"),
        ("wrong type: text for a number", {"instances": [{**good, "tenure_months": "ten"}]},
         "instances[0].tenure_months", "must be an integer"),
        ("wrong type: fraction for an integer", {"instances": [{**good, "support_calls": 2.5}]},
         "instances[0].support_calls", "must be an integer"),
        ("wrong type: number for text", {"instances": [{**good, "plan": 3}]}, "instances[0].plan",
         "must be a string"),
        ("wrong type: boolean for a number", {"instances": [{**good, "monthly_charges": True}]},
         "instances[0].monthly_charges", "must be a number"),
        ("NaN where not allowed", json.dumps({"instances": [{**good, "logins_30d": math.nan}]}),
         "instances[0].logins_30d", "no missing values"),
        ("null where not allowed", {"instances": [{**good, "tenure_months": None}]}, "instances[0].tenure_months",
         "no missing values"),
        ("infinity", json.dumps({"instances": [{**good, "monthly_charges": math.inf}]}),
         "instances[0].monthly_charges", "finite"),
        ("extra field", {"instances": [{**good, "colour": "red"}]}, "instances[0].colour", "not an input"),
        ("empty instances", {"instances": []}, "instances", "empty"),
        ("more instances than the limit", {"instances": [good] * (MAX_INSTANCES + 1)}, "instances",
         f"at most {MAX_INSTANCES}"),
        ("body over the size limit", {"instances": [{**good, "plan": "x" * MAX_BODY_BYTES}]}, "body", "bytes"),
        ("not JSON", "{instances: [", "body", "not valid JSON"),
        ("no instances", {"rows": [good]}, "rows", "unknown field"),
        ("instances not a list", {"instances": good}, "instances", "must be an array"),
        ("instance not an object", {"instances": [good, [1, 2]]}, "instances[1]", "must be an object"),
    ]  # fmt: skip


def test_every_bad_request_is_a_400_naming_the_field(
    api: TestClient, deployed: dict[str, endpoints.EndpointInfo]
) -> None:
    good = a_good_instance(deployed["churn-xgboost"])
    for case, body, field, words in _bad_requests(good):
        if isinstance(body, str):
            response = api.post("/v1/endpoints/churn-xgboost:predict", content=body.encode(),
                                headers={"content-type": "application/json"})  # fmt: skip
        else:
            response = api.post("/v1/endpoints/churn-xgboost:predict", json=body)
        assert response.status_code == 400, (case, response.text)
        error = response.json()["error"]
        assert (error["code"], error["status"], error["field"]) == (400, "INVALID_ARGUMENT", field), case
        assert words in error["message"] and field in error["message"], (case, error)
    # Missing values are fine where the pyfunc takes them (text, floats), and the gateway stays up.
    nullable = {**good, "region": None, "monthly_charges": None}
    assert api.post("/v1/endpoints/churn-xgboost:predict", json={"instances": [nullable]}).status_code == 200


def test_unknown_endpoint_404_and_no_model_503(api: TestClient, deployed: dict[str, endpoints.EndpointInfo]) -> None:
    body = {"instances": [a_good_instance(deployed["churn"])]}
    unknown = api.post("/v1/endpoints/nope:predict", json=body)
    assert unknown.status_code == 404
    assert unknown.json()["error"] == {"code": 404, "status": "NOT_FOUND", "message": "no endpoint named 'nope'"}
    empty = api.post("/v1/endpoints/empty:predict", json=body)
    assert empty.status_code == 503 and "no model deployed" in empty.json()["error"]["message"]


def test_triton_down_or_model_not_ready_is_503(
    api: TestClient, deployed: dict[str, endpoints.EndpointInfo], gateway_settings: Settings, triton: TritonClient
) -> None:
    body = {"instances": [a_good_instance(deployed["charges"])]}
    (dead_port,) = free_ports(1)
    with (
        TritonClient(f"127.0.0.1:{dead_port}", timeout_s=2) as down,
        TestClient(create_app(gateway_settings, triton=down)) as without_triton,
    ):
        response = without_triton.post("/v1/endpoints/charges:predict", json=body)
        assert response.status_code == 503 and "unreachable" in response.json()["error"]["message"]
        health = without_triton.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "down"
        assert health.json()["checks"]["triton"]["ok"] is False

    triton.unload_model(CHARGES)
    not_ready = api.post("/v1/endpoints/charges:predict", json=body)
    assert not_ready.status_code == 503 and "not loaded" in not_ready.json()["error"]["message"]
    assert api.get("/v1/endpoints/charges").json()["deployed_models"][0]["state"] == "failed"

    endpoints.reload_deployed_models(triton)
    assert api.post("/v1/endpoints/charges:predict", json=body).status_code == 200


def test_every_request_is_logged_in_batches(api: TestClient, deployed: dict[str, endpoints.EndpointInfo]) -> None:
    request_log = api.app.state.request_log
    body = {"instances": [a_good_instance(deployed["churn-xgboost"])] * 3}
    with session_scope() as session:
        before = count_requests(session, endpoint="churn-xgboost")
    batches_before = request_log.batches_written
    for _ in range(40):
        assert api.post("/v1/endpoints/churn-xgboost:predict", json=body).status_code == 200
    assert api.post("/v1/endpoints/churn-xgboost:predict", json={"instances": []}).status_code == 400

    wait_for(lambda: request_log.pending == 0, 10, "the request log to flush")
    with session_scope() as session:
        assert count_requests(session, endpoint="churn-xgboost") - before == 41
        summary_rows = session.execute(
            text(
                "SELECT status_code, model_name, model_version, instances, latency_ms, error "
                "FROM endpoint_requests WHERE endpoint = 'churn-xgboost' ORDER BY id DESC LIMIT 2"
            )
        ).all()
    # 41 requests within a few flush intervals: a handful of INSERTs, not one per request.
    assert request_log.batches_written - batches_before <= 10
    failed, served = summary_rows
    assert (failed.status_code, failed.instances) == (400, 0) and "empty" in failed.error
    assert (served.status_code, served.model_name, served.model_version, served.instances) == (200, CHURN, 1, 3)
    assert served.latency_ms > 0 and served.error is None


def test_a_uvicorn_gateway_serves_predictions(
    uvicorn_gateway: str, deployed: dict[str, endpoints.EndpointInfo]
) -> None:
    body = {"instances": [a_good_instance(deployed["churn-xgboost"])]}
    with httpx.Client(base_url=uvicorn_gateway, timeout=10) as client:
        assert client.get("/healthz").json()["status"] == "ok"
        assert client.get("/docs").status_code == 200
        first = client.post("/v1/endpoints/churn-xgboost:predict", json=body)
        assert first.status_code == 200 and first.json()["deployed_model"]["version"] == XGBOOST_VERSION
        latencies = []
        for _ in range(LATENCY_REQUESTS):
            started = time.perf_counter()
            response = client.post("/v1/endpoints/churn-xgboost:predict", json=body)
            latencies.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
    p50 = statistics.median(latencies)
    p95 = statistics.quantiles(latencies, n=20)[-1]
    # Reported, not asserted tightly: timings belong to bench/ (shared, noisy machines).
    print(f"\ngateway (uvicorn, 1 instance, XGBoost): p50 {p50:.2f} ms, p95 {p95:.2f} ms over {LATENCY_REQUESTS}")
    assert p50 < 1000


def test_kill_9_of_tritonserver_restarts_it_and_the_endpoint_serves_again(
    uvicorn_gateway: str, supervised: Supervised, deployed: dict[str, endpoints.EndpointInfo]
) -> None:
    body = {"instances": [a_good_instance(deployed["churn"])]}
    with httpx.Client(base_url=uvicorn_gateway, timeout=10) as client:
        assert client.post("/v1/endpoints/churn:predict", json=body).status_code == 200
        starts, reloads = supervised.stats.starts, supervised.stats.reloads
        first_pid = supervised.server.pid
        assert first_pid is not None

        os.kill(first_pid, signal.SIGKILL)
        statuses = []

        def serving_again() -> bool:
            status = client.post("/v1/endpoints/churn:predict", json=body).status_code
            statuses.append(status)
            return status == 200 and supervised.stats.reloads > reloads

        wait_for(serving_again, 60, "the endpoint to serve again")

        assert supervised.stats.starts == starts + 1 and supervised.stats.last_exit_code == -signal.SIGKILL
        assert supervised.server.pid != first_pid
        # While Triton was down the gateway answered 503 and stayed up.
        assert set(statuses) <= {200, 503} and 503 in statuses
        churn = client.get("/v1/endpoints/churn").json()
        assert [m["state"] for m in churn["deployed_models"]] == ["ready", "ready"]
        versions = Counter(
            client.post("/v1/endpoints/churn:predict", json=body).json()["deployed_model"]["version"] for _ in range(50)
        )
        assert set(versions) == {XGBOOST_VERSION, TORCH_VERSION}
        assert client.get("/healthz").status_code == 200
