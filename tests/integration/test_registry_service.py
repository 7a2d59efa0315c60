"""The registry service over a real MLflow store (a copy of the trained test models per test):
models, versions by number / alias / latest, signature and parameters, comparison, model cards, aliases."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from backend import registry
from backend.config import reset_settings
from backend.errors import InvalidInputError, NotFoundError
from tests.integration.test_endpoints_service import CHARGES, CHURN, trained_store


@pytest.fixture(autouse=True)
def store(
    sextant_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    copy = tmp_path / "mlflow.db"
    shutil.copy(trained_store(tmp_path_factory), copy)
    monkeypatch.setenv("SEXTANT_MLFLOW_TRACKING_URI", f"sqlite:///{copy}")
    reset_settings()


def test_models_and_versions() -> None:
    models = {model.name: model for model in registry.list_models()}
    assert set(models) == {CHURN, CHARGES}
    assert (models[CHURN].version_count, models[CHURN].latest_version, models[CHURN].aliases) == (3, 3, {})

    versions = registry.list_model_versions(CHURN)
    assert [v.version for v in versions] == [3, 2, 1]
    assert [v.framework for v in versions] == ["xgboost", "torch", "xgboost"]
    first = versions[-1]
    assert (first.task, first.dataset, first.ref) == ("binary", "churn:1", f"{CHURN}/1")
    assert set(first.metrics) == {"roc_auc", "log_loss", "accuracy", "f1"} and first.run_id
    assert first.mlflow_url.endswith(f"/#/models/{CHURN}/versions/1")
    assert registry.get_model_version(CHURN).version == 3
    assert registry.resolve_model_ref(f"{CHURN}/2").framework == "torch"

    with pytest.raises(NotFoundError, match="no registered model"):
        registry.list_model_versions("nope")
    with pytest.raises(NotFoundError, match="has no version 9"):
        registry.get_model_version(CHURN, version=9)
    with pytest.raises(NotFoundError, match="has no alias 'champion'"):
        registry.get_model_version(CHURN, alias="champion")
    with pytest.raises(InvalidInputError, match="not both"):
        registry.get_model_version(CHURN, version=1, alias="champion")


def test_version_detail_has_signature_params_and_run_metrics() -> None:
    detail = registry.get_model_version_detail(CHURN, version=2)
    inputs = {column.name: column.type for column in detail.inputs}
    assert inputs["plan"] == "string" and inputs["tenure_months"] == "long" and inputs["monthly_charges"] == "double"
    assert [column.name for column in detail.outputs] == ["prediction", "probability_0", "probability_1"]
    assert detail.params["framework"] == "torch" and detail.params["max_epochs"] == "4"
    assert "test_roc_auc" in detail.run_metrics and "validation_log_loss" in detail.run_metrics
    assert detail.as_dict()["inputs"][0] == {"name": "plan", "type": "string", "required": True}


def test_compare_two_versions() -> None:
    comparison = registry.compare_model_versions(CHURN, version_a=1, version_b=3)
    params = {row.name: (row.a, row.b) for row in comparison.params}
    assert params["n_estimators"] == ("20", "5") and "seed" not in params
    assert comparison.signature == []
    metrics = {row.metric: row for row in comparison.metrics}
    assert metrics["test_roc_auc"].better in ("a", "b", None)
    assert metrics["test_roc_auc"].difference == pytest.approx(metrics["test_roc_auc"].b - metrics["test_roc_auc"].a)

    everything = registry.compare_model_versions(CHURN, version_a=1, version_b=2, only_differences=False)
    assert {"seed", "framework"} <= {row.name for row in everything.params}
    regression = registry.compare_model_versions(CHARGES, version_a=1, version_b=1)
    assert all(row.difference == 0 for row in regression.metrics)


def test_model_card_edit_and_clear() -> None:
    card = registry.get_model_card(CHURN, version=1)
    assert (card.dataset, card.framework, card.intended_use) == ("churn:1", "xgboost", "")
    assert "XGBoost binary model" in card.description and card.inputs and card.metrics

    updated = registry.update_model_card(
        CHURN, version=1, intended_use="Retention campaigns", limitations="300 rows", model_description="Churners"
    )
    assert (updated.intended_use, updated.limitations, updated.model_description) == (
        "Retention campaigns",
        "300 rows",
        "Churners",
    )
    assert "XGBoost binary model" in updated.description
    cleared = registry.update_model_card(CHURN, version=1, intended_use="", description="Replaced")
    assert (cleared.intended_use, cleared.limitations, cleared.description) == ("", "300 rows", "Replaced")
    assert registry.get_model(CHURN).description == "Churners"
    with pytest.raises(InvalidInputError, match="at most"):
        registry.update_model_card(CHURN, version=1, limitations="x" * 5001)


def test_aliases_set_move_and_delete(session: Session) -> None:
    change = registry.set_model_alias(session, name=CHURN, alias="champion", version=1)
    assert (change.version, change.previous_version, change.redeployed_endpoints) == (1, None, [])
    moved = registry.set_model_alias(session, name=CHURN, alias="champion", version=2)
    assert (moved.version, moved.previous_version) == (2, 1)
    registry.set_model_alias(session, name=CHURN, alias="challenger", version=3)
    assert registry.get_model(CHURN).aliases == {"challenger": 3, "champion": 2}
    assert [(v.version, v.aliases) for v in registry.list_model_versions(CHURN)] == [
        (3, ("challenger",)),
        (2, ("champion",)),
        (1, ()),
    ]
    assert registry.get_model_version(CHURN, alias="champion").aliases == ("champion",)
    assert registry.resolve_model_ref(f"{CHURN}@challenger").version == 3

    with pytest.raises(InvalidInputError, match="reserved"):
        registry.set_model_alias(session, name=CHURN, alias="latest", version=1)
    with pytest.raises(NotFoundError):
        registry.set_model_alias(session, name=CHURN, alias="champion", version=7)
    deleted = registry.delete_model_alias(session, name=CHURN, alias="challenger")
    assert (deleted.version, deleted.previous_version) == (None, 3)
    with pytest.raises(NotFoundError):
        registry.delete_model_alias(session, name=CHURN, alias="challenger")
