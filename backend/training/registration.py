"""Registering a trained model as a new version in the MLflow Model Registry."""

from __future__ import annotations

from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

from backend.training.plan import TrainingPlan


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: int


def format_metric(value: float) -> str:
    return f"{value:.6g}"


def version_description(plan: TrainingPlan, test_metrics: dict[str, float], *, kind: str) -> str:
    how = "tuned with Optuna" if kind == "tune" else "trained"
    framework = "XGBoost" if plan.spec.framework == "xgboost" else "PyTorch MLP"
    scores = ", ".join(f"{name} {format_metric(value)}" for name, value in test_metrics.items())
    return (
        f"{framework} {plan.task} model for {plan.target!r}, {how} on dataset {plan.dataset_ref}. "
        f"Test metrics: {scores}."
    )


def register_model_version(
    client: MlflowClient,
    *,
    plan: TrainingPlan,
    model_uri: str,
    model_id: str | None,
    run_id: str,
    test_metrics: dict[str, float],
    kind: str,
    job_id: int | None = None,
) -> RegisteredVersion:
    """A new version of ``plan.model_name`` with the test metrics as tags and in its description."""
    try:
        client.create_registered_model(
            plan.model_name, description=f"{plan.task} models of {plan.target!r} (created by Sextant)"
        )
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    tags = {f"test_{name}": format_metric(value) for name, value in test_metrics.items()}
    tags.update(
        {
            "sextant.dataset": plan.dataset_ref,
            "sextant.framework": plan.spec.framework,
            "sextant.task": plan.task,
            "sextant.kind": kind,
        }
    )
    if job_id is not None:
        tags["sextant.job_id"] = str(job_id)
    version = client.create_model_version(
        name=plan.model_name,
        source=model_uri,
        run_id=run_id,
        tags=tags,
        description=version_description(plan, test_metrics, kind=kind),
        model_id=model_id,
    )
    return RegisteredVersion(name=version.name, version=int(version.version))
