"""Sextant's own record of training runs: which dataset version each run used, what it registered."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.errors import InvalidInputError, NotFoundError
from backend.lineage import dataset_version_ref, model_version_ref, record_execution
from backend.models import Dataset, DatasetVersion, TrainingRun


@dataclass(frozen=True)
class TrainingRunInfo:
    id: int
    job_id: int | None
    kind: str
    mlflow_run_id: str
    mlflow_experiment_id: str
    experiment: str
    dataset: str
    dataset_version: int
    dataset_version_id: int
    target: str
    framework: str
    task: str
    registered_model_name: str | None
    registered_model_version: int | None
    metrics: dict[str, Any]
    created_at: datetime


def _to_info(row: TrainingRun, version: DatasetVersion, dataset: Dataset) -> TrainingRunInfo:
    return TrainingRunInfo(
        id=row.id,
        job_id=row.job_id,
        kind=row.kind,
        mlflow_run_id=row.mlflow_run_id,
        mlflow_experiment_id=row.mlflow_experiment_id,
        experiment=row.experiment,
        dataset=dataset.name,
        dataset_version=version.version,
        dataset_version_id=version.id,
        target=row.target,
        framework=row.framework,
        task=row.task,
        registered_model_name=row.registered_model_name,
        registered_model_version=row.registered_model_version,
        metrics=dict(row.metrics_json or {}),
        created_at=row.created_at,
    )


def record_training_run(
    session: Session,
    *,
    job_id: int | None,
    kind: str,
    mlflow_run_id: str,
    mlflow_experiment_id: str,
    experiment: str,
    dataset_version_id: int,
    target: str,
    framework: str,
    task: str,
    registered_model_name: str | None,
    registered_model_version: int | None,
    metrics: dict[str, float],
) -> TrainingRunInfo:
    row = TrainingRun(
        job_id=job_id,
        kind=kind,
        mlflow_run_id=mlflow_run_id,
        mlflow_experiment_id=mlflow_experiment_id,
        experiment=experiment,
        dataset_version_id=dataset_version_id,
        target=target,
        framework=framework,
        task=task,
        registered_model_name=registered_model_name,
        registered_model_version=registered_model_version,
        metrics_json=metrics,
    )
    session.add(row)
    session.flush()
    version = session.get(DatasetVersion, dataset_version_id)
    if version is None:
        raise NotFoundError(f"dataset version id {dataset_version_id} does not exist")
    # Lineage is written where the run is recorded: dataset version → run → model version.
    outputs = [model_version_ref(registered_model_name, registered_model_version)] if registered_model_name else []
    record_execution(
        session,
        type=kind,
        name=f"{kind} run {mlflow_run_id}",
        inputs=[dataset_version_ref(version.dataset.name, version.version)],
        outputs=outputs,
        job_id=job_id,
        properties={"mlflow_run_id": mlflow_run_id, "experiment": experiment, "framework": framework, "task": task},
    )
    return _to_info(row, version, version.dataset)


def _query():
    return (
        select(TrainingRun, DatasetVersion, Dataset)
        .join(DatasetVersion, TrainingRun.dataset_version_id == DatasetVersion.id)
        .join(Dataset, DatasetVersion.dataset_id == Dataset.id)
    )


def get_training_run(session: Session, *, mlflow_run_id: str) -> TrainingRunInfo:
    found = session.execute(_query().where(TrainingRun.mlflow_run_id == mlflow_run_id)).first()
    if found is None:
        raise NotFoundError(f"no training run with MLflow run id {mlflow_run_id!r}")
    return _to_info(*found)


def list_training_runs(
    session: Session,
    *,
    dataset: str | None = None,
    job_id: int | None = None,
    model_name: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> list[TrainingRunInfo]:
    """Newest first."""
    if offset < 0 or limit < 1:
        raise InvalidInputError("offset must be ≥ 0 and limit ≥ 1")
    query = _query()
    if dataset is not None:
        query = query.where(Dataset.name == dataset)
    if job_id is not None:
        query = query.where(TrainingRun.job_id == job_id)
    if model_name is not None:
        query = query.where(TrainingRun.registered_model_name == model_name)
    rows = session.execute(query.order_by(TrainingRun.id.desc()).offset(offset).limit(limit)).all()
    return [_to_info(*row) for row in rows]
