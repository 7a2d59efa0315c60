"""`sextant train`: launch a training or tuning job from the shell, optionally waiting for it."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from backend import datasets, jobs
from backend.db import migrate, session_scope
from backend.errors import InvalidInputError, SextantError

WAIT_POLL_SECONDS = 1.0


def train_command(
    dataset: Annotated[str, typer.Option("--dataset", help="NAME or NAME:VERSION (default: latest version)")],
    target: Annotated[str, typer.Option("--target", help="column to predict")],
    framework: Annotated[str, typer.Option("--framework", help="xgboost or torch")] = "xgboost",
    task: Annotated[str, typer.Option("--task", help="auto, binary, multiclass or regression")] = "auto",
    trials: Annotated[int | None, typer.Option("--trials", help="tune with Optuna over N trials")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="tuning time limit in seconds")] = None,
    model_name: Annotated[str | None, typer.Option("--model-name", help="registered model name")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    wait: Annotated[bool, typer.Option("--wait", help="wait for the job to finish")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Train (or, with --trials, tune) a model on a dataset version; prints the job id."""
    from backend.training import launch_training_job

    try:
        name, version = datasets.parse_dataset_ref(dataset)
        tune = trials is not None
        if tune and trials < 1:
            raise InvalidInputError("--trials must be at least 1")
        spec = {
            "dataset": name,
            "dataset_version": version,
            "target": target,
            "framework": framework,
            "task": task,
            "model_name": model_name,
            "seed": seed,
            "tuning": {"n_trials": trials, "timeout_seconds": timeout} if tune else None,
        }
        migrate()
        with session_scope() as session:
            job = launch_training_job(session, spec=spec, tune=tune)
    except SextantError as error:
        if as_json:
            typer.echo(json.dumps({"error": str(error)}))
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from None
    if not wait:
        payload = {"job_id": job.id, "kind": job.kind, "status": job.status}
        typer.echo(json.dumps(payload) if as_json else f"queued job {job.id} ({job.kind}); follow it with "
                   f"`sextant jobs logs {job.id} --follow`")  # fmt: skip
        return
    if not as_json:
        typer.echo(f"queued job {job.id} ({job.kind}); waiting for it to finish…", err=True)
    finished = wait_for_job(job.id)
    result = finished.result or {}
    payload = {
        "job_id": finished.id,
        "kind": finished.kind,
        "status": finished.status,
        "error": finished.error,
        "mlflow_run_id": result.get("mlflow_run_id"),
        "mlflow_run_url": result.get("mlflow_run_url"),
        "model_name": result.get("model_name"),
        "model_version": result.get("model_version"),
        "test_metrics": result.get("test_metrics"),
    }
    if as_json:
        typer.echo(json.dumps(payload))
    else:
        lines = [f"job {finished.id}: {finished.status}"]
        if finished.error:
            lines.append(f"error: {finished.error}")
        if payload["mlflow_run_id"]:
            lines.append(f"MLflow run: {payload['mlflow_run_id']}  {payload['mlflow_run_url']}")
        if payload["model_name"]:
            lines.append(f"registered model: {payload['model_name']} version {payload['model_version']}")
        for metric, value in (payload["test_metrics"] or {}).items():
            lines.append(f"  test {metric}: {value:.4f}")
        typer.echo("\n".join(lines))
    if finished.status != jobs.JobStatus.SUCCEEDED:
        raise typer.Exit(code=1)


def wait_for_job(job_id: int) -> jobs.JobInfo:
    while True:
        with session_scope() as session:
            job = jobs.get_job(session, job_id=job_id)
        if job.is_finished:
            return job
        time.sleep(WAIT_POLL_SECONDS)
