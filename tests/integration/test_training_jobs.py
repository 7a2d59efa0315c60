"""``jobs/train.py`` and ``jobs/tune.py`` run by the real worker as their own processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mlflow import MlflowClient
from sqlalchemy.orm import Session

from backend.config import Settings, get_settings
from backend.db import session_scope
from backend.jobs import JobStatus, read_job_log
from backend.jobs.worker import Worker
from backend.training import get_training_run, launch_training_job
from tests.integration import test_training_runs as training_tests
from tests.job_modules.harness import current, drive, finished, use_fast_settings

# The training tests' fixtures: a copied MLflow store and the sampled churn dataset.
example_csv_path = training_tests.example_csv_path
mlflow_template = training_tests.mlflow_template
churn_sample = training_tests.churn_sample
churn = training_tests.churn

JOB_TIMEOUT_S = 120.0


@pytest.fixture
def worker(churn: Session, monkeypatch: pytest.MonkeyPatch) -> Iterator[Worker]:
    settings: Settings = use_fast_settings(monkeypatch, SEXTANT_WORKER_CONCURRENCY="2")
    running = Worker(settings=settings)
    running.start()
    yield running
    running.shutdown()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_train_and_tune_jobs_succeed_with_run_and_model_in_their_result(churn: Session, worker: Worker) -> None:
    train = launch_training_job(
        churn, spec={"dataset": "churn", "target": "churned", "hyperparameters": {"n_estimators": 20}}
    )
    tune = launch_training_job(
        churn,
        spec={
            "dataset": "churn",
            "target": "plan",
            "framework": "torch",
            "hyperparameters": {"max_epochs": 3},
            "tuning": {"n_trials": 2},
        },
        tune=True,
    )
    churn.commit()
    drive(worker, finished(train.id, tune.id), timeout=JOB_TIMEOUT_S)

    client = MlflowClient(tracking_uri=get_settings().resolved_mlflow_tracking_uri)
    for job, model_name, kind in ((train, "churn-churned", "train"), (tune, "churn-plan", "tune")):
        done = current(job.id)
        assert done.status == JobStatus.SUCCEEDED, done.error
        assert done.progress == 1.0 and done.progress_message.startswith(f"done: {model_name} version 1")
        result = done.result or {}
        assert (result["model_name"], result["model_version"], result["kind"]) == (model_name, 1, kind)
        assert result["test_metrics"] and result["mlflow_run_url"].endswith(result["mlflow_run_id"])
        run = client.get_run(result["mlflow_run_id"])
        assert run.data.tags["sextant.job_id"] == str(job.id)
        with session_scope() as session:
            assert get_training_run(session, mlflow_run_id=result["mlflow_run_id"]).job_id == job.id
            log = read_job_log(session, job_id=job.id).text
        assert "Downloading artifacts" not in log
    assert current(tune.id).result["trials_completed"] == 2
