"""The Online prediction page with AppTest over a real DB, a real tritonserver and a real uvicorn gateway:
live deployments and traffic, the form generated from the signature, pasted JSON (with the gateway's
400 naming the field), the curl command, the traffic editor and undeploy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from backend.config import get_settings, reset_settings
from backend.db import migrate, session_scope
from backend.serving import endpoints
from backend.serving.client import TritonClient
from backend.serving.server import TritonServer
from tests.conftest import REPO_ROOT, free_ports
from tests.integration.test_endpoints_service import (
    CHURN,
    TORCH_VERSION,
    XGBOOST_VERSION,
    ServingStack,
    serve_gateway,
    trained_store,
)

HOME = str(REPO_ROOT / "app" / "Home.py")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingStack]:
    stack = ServingStack.create(tmp_path_factory.mktemp("pages-online"), trained_store(tmp_path_factory),
                                own_database=True)  # fmt: skip
    (port,) = free_ports(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEXTANT_GATEWAY_PORT", str(port))
        stack.apply(patch)
        migrate()
        yield stack


@pytest.fixture(autouse=True)
def stack_env(sextant_home: Path, stack: ServingStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    stack.apply(monkeypatch)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


@pytest.fixture(scope="module")
def triton(stack: ServingStack) -> Iterator[TritonServer]:
    server = stack.server(stack.home.parent)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(triton: TritonServer, stack: ServingStack) -> Iterator[str]:
    with session_scope() as session, TritonClient(stack.grpc_url) as client:
        endpoints.create_endpoint(session, name="churn")
        endpoints.deploy_model(session, endpoint="churn", model=CHURN, version=XGBOOST_VERSION, triton=client)
        endpoints.deploy_model(
            session, endpoint="churn", model=CHURN, version=TORCH_VERSION, traffic_percent=20, triton=client
        )
    with serve_gateway(get_settings()) as url:
        yield url


def open_page() -> AppTest:
    at = AppTest.from_file(HOME, default_timeout=60).run()
    at.switch_page("../pages/online.py").run()
    assert not at.exception, at.exception
    return at


def table(at: AppTest, column: str) -> pd.DataFrame:
    return next(frame.value for frame in at.dataframe if column in frame.value.columns)


def test_without_endpoints_the_page_points_to_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEXTANT_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    reset_settings()
    migrate()
    at = open_page()
    assert "No endpoints yet" in at.info[0].value


def test_status_form_prediction_and_curl(gateway: str) -> None:
    at = open_page()
    assert at.selectbox(key="online.endpoint").value == "churn"
    deployments = table(at, "traffic %")
    assert list(deployments["version"]) == [XGBOOST_VERSION, TORCH_VERSION]
    assert list(deployments["traffic %"]) == [80, 20] and list(deployments["state"]) == ["ready", "ready"]
    # The form is generated from the signature and prefilled with the model's input example.
    assert at.text_input(key="online.input.churn.plan").value
    assert at.number_input(key="online.input.churn.tenure_months").value is not None

    at.number_input(key="online.input.churn.tenure_months").set_value(2)
    at.text_input(key="online.input.churn.region").set_value("")
    at.button(key="online.predict.churn").click().run()

    assert not at.exception, at.exception
    assert "Predicted by churn-churned version" in at.success[0].value
    predictions = table(at, "class")
    assert len(predictions) == 1 and {"P(0)", "P(1)"} <= set(predictions.columns)
    assert abs(predictions["P(0)"].iloc[0] + predictions["P(1)"].iloc[0] - 1) < 1e-5
    curl = at.code[-1].value
    assert curl.startswith(f"curl -sS -X POST {gateway}/v1/endpoints/churn:predict")
    sent = json.loads(curl.split("-d ", 1)[1].strip("'"))
    assert sent["instances"][0]["tenure_months"] == 2 and sent["instances"][0]["region"] is None


def test_pasted_json_shows_the_gateways_400(gateway: str) -> None:
    at = open_page()
    body = json.loads(at.text_area(key="online.json.churn").value)
    del body["instances"][0]["tenure_months"]
    at.text_area(key="online.json.churn").set_value(json.dumps(body)).run()
    at.button(key="online.send_json").click().run()
    assert not at.exception, at.exception
    assert "400" in at.error[0].value and "instances[0].tenure_months" in at.error[0].value
    assert "tenure_months" not in at.code[-1].value


def test_undeploy_from_the_page(gateway: str) -> None:
    at = open_page()
    at.selectbox(key="online.undeploy_target.churn").set_value(f"{CHURN}/{XGBOOST_VERSION}").run()
    at.button(key="online.undeploy").click().run()
    assert not at.exception, at.exception
    with session_scope() as session:
        info = endpoints.get_endpoint(session, name="churn")
    assert [(d.version, d.traffic_percent) for d in info.deployments] == [(TORCH_VERSION, 100)]
    assert list(table(at, "traffic %")["version"]) == [TORCH_VERSION]


def test_an_unreachable_gateway_is_said_plainly(gateway: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (port,) = free_ports(1)
    monkeypatch.setenv("SEXTANT_GATEWAY_PORT", str(port))
    reset_settings()
    at = open_page()
    at.button(key="online.send_json").click().run()
    assert "did not answer" in at.error[0].value
