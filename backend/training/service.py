"""``run_training``: validate, load and split, train, evaluate, log to MLflow, register, record.

The body of a ``train`` job (``jobs/train.py`` only adapts the job context). It opens its own short
database sessions instead of taking one: a training holds no transaction open for minutes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import RunStatus
from mlflow.tracking.fluent import ActiveRun

from backend.config import Settings, get_settings
from backend.db import session_scope
from backend.errors import SextantError
from backend.tracking import (
    DEFAULT_FLUSH_INTERVAL_S,
    BatchLogger,
    get_or_create_experiment,
    run_url,
    tracking_client,
)
from backend.training.data import PreparedData, prepare_data
from backend.training.metrics import LOSS_METRIC, evaluate
from backend.training.model_logging import log_dataset_input, log_tabular_model, run_params, run_tags
from backend.training.plan import TrainingPlan, validate_training_spec
from backend.training.registration import RegisteredVersion, register_model_version
from backend.training.runs import record_training_run
from backend.training.spec import TrainingSpec, parse_training_spec
from backend.training.trainers import FitResult, IterationCallback, fit_model

ProgressCallback = Callable[[float, str], None]
StopCallback = Callable[[], bool]
TRAIN_LOSS = "train_loss"
VALIDATION_LOSS = "validation_loss"


class TrainingCancelled(SextantError):
    """The job was asked to stop; the MLflow run ends KILLED and nothing is registered."""


@dataclass(frozen=True)
class TrainingResult:
    kind: str
    mlflow_run_id: str
    mlflow_experiment_id: str
    experiment: str
    mlflow_run_url: str
    model_uri: str
    model_name: str | None
    model_version: int | None
    dataset: str
    dataset_version: int
    target: str
    framework: str
    task: str
    # "validation_<metric>" and "test_<metric>" for the task's metrics.
    metrics: dict[str, float]
    best_iteration: int
    iterations: int
    training_run_id: int
    best_params: dict[str, Any] = field(default_factory=dict)

    def as_job_result(self) -> dict[str, Any]:
        """The job's stored result (JSON): every field, plus the metrics split by part without prefixes."""
        result = asdict(self)
        for part in ("validation", "test"):
            result[f"{part}_metrics"] = {
                name.removeprefix(f"{part}_"): value
                for name, value in self.metrics.items()
                if name.startswith(f"{part}_")
            }
        return result


def no_progress(_fraction: float, _message: str = "") -> None:
    return None


def never_stop() -> bool:
    return False


def resolve_plan(spec: TrainingSpec, *, settings: Settings) -> TrainingPlan:
    with session_scope(settings.resolved_database_url) as session:
        return validate_training_spec(session, spec, settings=settings)


def max_iterations(plan: TrainingPlan, hyperparameters: dict[str, Any]) -> int:
    key = "n_estimators" if plan.spec.framework == "xgboost" else "max_epochs"
    return int(hyperparameters[key])


@contextmanager
def mlflow_run(**kwargs: Any) -> Iterator[ActiveRun]:
    """``mlflow.start_run`` whose run ends KILLED on cancel or termination and FAILED on errors."""
    run = mlflow.start_run(**kwargs)
    try:
        yield run
    except TrainingCancelled:
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        raise
    except Exception:
        mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
        raise
    except BaseException:
        # SIGTERM from the worker (cancel, shutdown) or Ctrl-C.
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        raise
    mlflow.end_run(RunStatus.to_string(RunStatus.FINISHED))


def iteration_logger(
    batch: BatchLogger,
    *,
    total: int,
    loss_name: str,
    progress: ProgressCallback,
    should_stop: StopCallback,
    start: float = 0.05,
    span: float = 0.85,
    label: str = "",
) -> IterationCallback:
    """Curves into the batch, progress out, and a stop when cancel is requested."""

    def on_iteration(step: int, train_loss: float, validation_loss: float) -> bool:
        batch.log_metrics({TRAIN_LOSS: train_loss, VALIDATION_LOSS: validation_loss}, step=step)
        progress(
            start + span * min(1.0, (step + 1) / total),
            f"{label}iteration {step + 1}/{total}: validation {loss_name} {validation_loss:.4f}",
        )
        return should_stop()

    return on_iteration


def split_metrics(plan: TrainingPlan, data: PreparedData, fit: FitResult) -> dict[str, float]:
    if not math.isfinite(fit.best_validation_loss):
        raise SextantError("training diverged (the validation loss is not a number); lower the learning rate")
    metrics: dict[str, float] = {}
    for split, x, y in (("validation", data.x_validation, data.y_validation), ("test", data.x_test, data.y_test)):
        scores = fit.predictor.predict_matrix(x)
        metrics.update({f"{split}_{name}": value for name, value in evaluate(plan.task, y, scores).items()})
    return metrics


def held_out_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {name.removeprefix("test_"): value for name, value in metrics.items() if name.startswith("test_")}


def result_fields(
    *,
    kind: str,
    plan: TrainingPlan,
    run_id: str,
    experiment_id: str,
    model_uri: str,
    registered: RegisteredVersion | None,
    metrics: dict[str, float],
    fit: FitResult,
    record_id: int,
    settings: Settings,
    progress: ProgressCallback,
) -> dict[str, Any]:
    """The fields a training and a tuning result share; reports the job done."""
    progress(1.0, f"done: {registered.name} version {registered.version}" if registered else "done")
    return {
        "kind": kind,
        "mlflow_run_id": run_id,
        "mlflow_experiment_id": experiment_id,
        "experiment": plan.experiment,
        "mlflow_run_url": run_url(experiment_id, run_id, settings=settings),
        "model_uri": model_uri,
        "model_name": registered.name if registered else None,
        "model_version": registered.version if registered else None,
        "dataset": plan.dataset,
        "dataset_version": plan.dataset_version,
        "target": plan.target,
        "framework": plan.spec.framework,
        "task": plan.task,
        "metrics": metrics,
        "best_iteration": fit.best_iteration,
        "iterations": fit.iterations,
        "training_run_id": record_id,
    }


def finish_run(
    client: MlflowClient,
    *,
    plan: TrainingPlan,
    data: PreparedData,
    fit: FitResult,
    metrics: dict[str, float],
    run_id: str,
    experiment_id: str,
    kind: str,
    job_id: int | None,
    settings: Settings,
    progress: ProgressCallback,
) -> tuple[str, RegisteredVersion | None, int]:
    """Log the model to the active run, register it, record the run; (model URI, version, record id)."""
    progress(0.92, "logging the model")
    model_info = log_tabular_model(plan, fit.predictor, data)
    registered = None
    if plan.spec.register_model:
        progress(0.97, f"registering {plan.model_name}")
        registered = register_model_version(
            client,
            plan=plan,
            model_uri=model_info.model_uri,
            model_id=model_info.model_id,
            run_id=run_id,
            test_metrics=held_out_metrics(metrics),
            kind=kind,
            job_id=job_id,
        )
    with session_scope(settings.resolved_database_url) as session:
        record = record_training_run(
            session,
            job_id=job_id,
            kind=kind,
            mlflow_run_id=run_id,
            mlflow_experiment_id=experiment_id,
            experiment=plan.experiment,
            dataset_version_id=plan.dataset_version_id,
            target=plan.target,
            framework=plan.spec.framework,
            task=plan.task,
            registered_model_name=registered.name if registered else None,
            registered_model_version=registered.version if registered else None,
            metrics=held_out_metrics(metrics),
        )
    return model_info.model_uri, registered, record.id


def run_training(
    spec: TrainingSpec | dict[str, Any],
    *,
    job_id: int | None = None,
    progress: ProgressCallback | None = None,
    should_stop: StopCallback | None = None,
    settings: Settings | None = None,
    flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
) -> TrainingResult:
    """Train one model as ``spec`` says and register it; raises ``TrainingCancelled`` when stopped."""
    settings = settings or get_settings()
    spec = parse_training_spec(spec)
    progress = progress or no_progress
    should_stop = should_stop or never_stop
    progress(0.0, "validating the request")
    plan = resolve_plan(spec, settings=settings)
    progress(0.02, f"loading {plan.dataset_ref}")
    data = prepare_data(plan)
    if should_stop():
        raise TrainingCancelled("cancelled before training started")
    client = tracking_client(settings)
    experiment_id = get_or_create_experiment(plan.experiment, client=client, settings=settings)
    hyperparameters = plan.hyperparameters
    run_name = f"train-{spec.framework}-job-{job_id}" if job_id is not None else None
    with mlflow_run(
        experiment_id=experiment_id, run_name=run_name, tags=run_tags(plan, kind="train", job_id=job_id)
    ) as run:
        run_id = run.info.run_id
        batch = BatchLogger(client, run_id, flush_interval_s=flush_interval_s)
        batch.log_params(run_params(plan, hyperparameters))
        log_dataset_input(plan, data)
        on_iteration = iteration_logger(
            batch,
            total=max_iterations(plan, hyperparameters),
            loss_name=LOSS_METRIC[plan.task],
            progress=progress,
            should_stop=should_stop,
        )
        fit = fit_model(plan, data, hyperparameters, on_iteration=on_iteration)
        if fit.interrupted:
            batch.flush()
            raise TrainingCancelled(f"cancelled after {fit.iterations} iterations")
        metrics = split_metrics(plan, data, fit)
        batch.log_metrics({**metrics, "best_iteration": fit.best_iteration, "iterations": fit.iterations})
        batch.flush()
        model_uri, registered, record_id = finish_run(
            client,
            plan=plan,
            data=data,
            fit=fit,
            metrics=metrics,
            run_id=run_id,
            experiment_id=experiment_id,
            kind="train",
            job_id=job_id,
            settings=settings,
            progress=progress,
        )
    return TrainingResult(
        **result_fields(
            kind="train",
            plan=plan,
            run_id=run_id,
            experiment_id=experiment_id,
            model_uri=model_uri,
            registered=registered,
            metrics=metrics,
            fit=fit,
            record_id=record_id,
            settings=settings,
            progress=progress,
        )
    )
