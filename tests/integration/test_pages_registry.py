"""The Model registry page with AppTest over a real MLflow store, a real DB and a real tritonserver:
models and versions, aliases set / moved / removed, comparison, the model card, deploy to a new and
to an existing endpoint with a traffic share, the disabled Batch predict button."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from mlflow import MlflowClient
from streamlit.testing.v1 import AppTest

from backend import registry
from backend.config import reset_settings
from backend.db import migrate, session_scope
from backend.serving import endpoints
from backend.serving.server import TritonServer
from backend.tracking import tracking_client
from tests.conftest import REPO_ROOT
from tests.integration.test_endpoints_service import CHURN, ServingStack, trained_store

HOME = str(REPO_ROOT / "app" / "Home.py")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> ServingStack:
    return ServingStack.create(tmp_path_factory.mktemp("pages-registry"), trained_store(tmp_path_factory))


@pytest.fixture(scope="module")
def triton(stack: ServingStack) -> Iterator[TritonServer]:
    server = stack.server(stack.home.parent)
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def workspace(
    sextant_home: Path,
    stack: ServingStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    """The module's Triton workspace, with this test's own DB and own copy of the MLflow store."""
    store = tmp_path / "mlflow.db"
    shutil.copy(trained_store(tmp_path_factory), store)
    stack.apply(monkeypatch)
    monkeypatch.setenv("SEXTANT_MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.setenv("SEXTANT_DATABASE_URL", f"sqlite:///{tmp_path / 'sextant.db'}")
    reset_settings()
    migrate()
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


def table(at: AppTest, column: str) -> pd.DataFrame:
    """The first table with ``column`` (tables that are not widgets carry no key in AppTest)."""
    return next(frame.value for frame in at.dataframe if column in frame.value.columns)


def open_page() -> AppTest:
    at = AppTest.from_file(HOME, default_timeout=60).run()
    at.switch_page("../pages/registry.py").run()
    assert not at.exception, at.exception
    return at


def test_without_models_the_page_points_to_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{empty}").search_experiments()
    monkeypatch.setenv("SEXTANT_MLFLOW_TRACKING_URI", f"sqlite:///{empty}")
    reset_settings()
    at = open_page()
    assert "No registered models yet" in at.info[0].value


def test_models_versions_and_metrics() -> None:
    at = open_page()
    models = table(at, "latest")
    assert set(models["model"]) == {CHURN, "churn-monthly_charges"}
    at.selectbox(key="registry.model").set_value(CHURN).run()
    versions = table(at, "registered")
    assert list(versions["version"]) == [3, 2, 1]
    assert list(versions["framework"]) == ["xgboost", "torch", "xgboost"]
    assert {"test roc_auc", "test log_loss", "test accuracy", "test f1"} <= set(versions.columns)
    assert versions["dataset"].iloc[0] == "churn:1"


def test_batch_predict_button_opens_the_batch_page_with_the_model() -> None:
    at = open_page()
    at.selectbox(key="registry.model").set_value(CHURN).run()
    at.selectbox(key=f"registry.deploy_target.{CHURN}").set_value(f"{CHURN} version 2").run()
    at.button(key="registry.batch_predict").click().run()
    assert not at.exception
    assert at.title[0].value == "Batch prediction"
    assert at.selectbox(key="batch.model").value == f"{CHURN}/2"


def test_set_move_and_remove_an_alias() -> None:
    at = open_page()
    at.selectbox(key="registry.model").set_value(CHURN).run()
    at.selectbox(key="registry.alias_name").set_value("champion").run()
    at.selectbox(key=f"registry.alias_version.{CHURN}").set_value(1).run()
    at.button(key="registry.alias_set").click().run()
    assert not at.exception
    assert f"{CHURN}@champion → version 1" in at.success[0].value
    at.selectbox(key=f"registry.alias_version.{CHURN}").set_value(2).run()
    at.button(key="registry.alias_set").click().run()
    assert registry.get_model(CHURN).aliases == {"champion": 2}
    assert "champion → v2" in table(at, "latest").set_index("model").loc[CHURN, "aliases"]
    at.button(key="registry.alias_delete.champion").click().run()
    assert registry.get_model(CHURN).aliases == {}
    at.selectbox(key="registry.alias_name").set_value("other…").run()
    at.text_input(key="registry.alias_custom").set_value("v7").run()
    at.button(key="registry.alias_set").click().run()
    assert "reserved" in at.error[0].value


def test_compare_two_versions() -> None:
    at = open_page()
    at.selectbox(key="registry.model").set_value(CHURN).run()
    at.selectbox(key=f"registry.compare_a.{CHURN}").set_value(1).run()
    at.selectbox(key=f"registry.compare_b.{CHURN}").set_value(2).run()
    metrics = table(at, "B − A")
    assert {"v1", "v2", "B − A", "better"} <= set(metrics.columns)
    assert "test_roc_auc" in set(metrics["metric"])
    # XGBoost vs PyTorch: the framework and hyper-parameters differ, the signature does not.
    assert any("Same inputs and outputs" in caption.value for caption in at.caption)


def test_edit_the_model_card() -> None:
    at = open_page()
    at.selectbox(key="registry.model").set_value(CHURN).run()
    at.selectbox(key=f"registry.card_version.{CHURN}").set_value(2).run()
    # A form sends its widgets' values with the submit: set them, then submit in one run.
    at.text_area(key=f"registry.card_intended_use.{CHURN}.2").set_value("Retention calls, monthly")
    at.text_area(key=f"registry.card_limitations.{CHURN}.2").set_value("Trained on 300 rows")
    at.button(key=f"registry.card_save.{CHURN}.2").click().run()
    assert not at.exception
    assert "Saved the model card" in at.success[0].value
    card = registry.get_model_card(CHURN, version=2)
    assert (card.intended_use, card.limitations) == ("Retention calls, monthly", "Trained on 300 rows")
    assert at.text_area(key=f"registry.card_intended_use.{CHURN}.2").value == "Retention calls, monthly"
    assert card.dataset == "churn:1" and any(column.name == "tenure_months" for column in card.inputs)


@pytest.mark.usefixtures("triton")
def test_deploy_to_a_new_endpoint_then_a_canary_on_it() -> None:
    tracking_client().set_registered_model_alias(CHURN, "champion", "1")
    at = open_page()
    at.selectbox(key="registry.model").set_value(CHURN).run()
    targets = at.selectbox(key=f"registry.deploy_target.{CHURN}").options
    assert targets[0] == f"{CHURN}@champion (now v1, follows the alias)"
    at.selectbox(key=f"registry.deploy_target.{CHURN}").set_value(targets[0]).run()
    assert at.text_input(key=f"registry.deploy_new_name.{CHURN}").value == "churn-churned"
    at.text_input(key=f"registry.deploy_new_name.{CHURN}").set_value("churn").run()
    assert at.slider(key="registry.deploy_traffic").disabled
    at.button(key="registry.deploy").click().run()
    assert not at.exception, at.exception
    assert "Deployed to endpoint churn" in at.success[0].value
    assert list(table(at, "traffic %")["state"]) == ["ready"]

    at.selectbox(key=f"registry.deploy_target.{CHURN}").set_value(f"{CHURN} version 2").run()
    at.selectbox(key="registry.deploy_endpoint").set_value("churn").run()
    at.slider(key="registry.deploy_traffic").set_value(20).run()
    at.button(key="registry.deploy").click().run()
    assert not at.exception, at.exception
    with session_scope() as session:
        info = endpoints.get_endpoint(session, name="churn")
    assert [(d.ref, d.traffic_percent, d.state) for d in info.deployments] == [
        (f"{CHURN}@champion", 80, "ready"),
        (f"{CHURN}/2", 20, "ready"),
    ]
    deployed = table(at, "traffic %")
    assert list(deployed["traffic %"]) == [80, 20]
    with session_scope() as session:
        endpoints.delete_endpoint(session, name="churn")
