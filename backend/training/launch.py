"""Submitting training and tuning jobs: everything is checked first, so bad input never becomes a job."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from backend.config import Settings
from backend.jobs import JobInfo, submit_job
from backend.training.plan import TrainingPlan, validate_training_spec
from backend.training.spec import TrainingSpec, TuningSettings, parse_training_spec

TRAIN_JOB_KIND = "train"
TUNE_JOB_KIND = "tune"


def plan_training_job(
    session: Session, *, spec: TrainingSpec | dict[str, Any], tune: bool = False, settings: Settings | None = None
) -> TrainingPlan:
    """The plan a job would follow (resolved features, task, split), or the reason it would be refused."""
    return validate_training_spec(session, _job_spec(spec, tune), settings=settings)


def _job_spec(spec: TrainingSpec | dict[str, Any], tune: bool) -> TrainingSpec:
    parsed = parse_training_spec(spec)
    if tune:
        return parsed if parsed.tuning is not None else parsed.model_copy(update={"tuning": TuningSettings()})
    return parsed.model_copy(update={"tuning": None})


def launch_training_job(
    session: Session, *, spec: TrainingSpec | dict[str, Any], tune: bool = False, settings: Settings | None = None
) -> JobInfo:
    """Validate ``spec`` and queue a ``train`` (or ``tune``) job for it, pinned to the validated dataset version."""
    plan = plan_training_job(session, spec=spec, tune=tune, settings=settings)
    pinned = plan.spec.model_copy(update={"dataset_version": plan.dataset_version})
    return submit_job(session, kind=TUNE_JOB_KIND if tune else TRAIN_JOB_KIND, params=pinned.model_dump(mode="json"))
