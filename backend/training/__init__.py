"""Training and tuning: specs and their validation, the XGBoost and PyTorch trainers, Optuna, registration.

Pages import this package for the launch form, so only the light modules load eagerly; the training
entry points (and with them torch, xgboost and MLflow's model code) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from backend.training.launch import TRAIN_JOB_KIND, TUNE_JOB_KIND, launch_training_job, plan_training_job
from backend.training.plan import (
    MIN_EVALUATION_ROWS,
    MIN_TRAIN_ROWS,
    FeatureColumn,
    TrainingPlan,
    infer_task,
    minimum_rows,
    validate_training_spec,
)
from backend.training.runs import TrainingRunInfo, get_training_run, list_training_runs, record_training_run
from backend.training.spec import (
    FRAMEWORKS,
    TASKS,
    SearchRange,
    TorchHyperparameters,
    TrainingSpec,
    TuningSettings,
    XGBoostHyperparameters,
    default_hyperparameters,
    default_model_name,
    default_search_space,
    parse_training_spec,
    validate_hyperparameters,
    validate_search_space,
    validate_tuning_settings,
)

_LAZY = {
    "TrainingCancelled": "backend.training.service",
    "TrainingResult": "backend.training.service",
    "run_training": "backend.training.service",
    "TuningResult": "backend.training.tuning",
    "run_tuning": "backend.training.tuning",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = [
    "FRAMEWORKS",
    "MIN_EVALUATION_ROWS",
    "MIN_TRAIN_ROWS",
    "TASKS",
    "TRAIN_JOB_KIND",
    "TUNE_JOB_KIND",
    "FeatureColumn",
    "SearchRange",
    "TorchHyperparameters",
    "TrainingCancelled",
    "TrainingPlan",
    "TrainingResult",
    "TrainingRunInfo",
    "TrainingSpec",
    "TuningResult",
    "TuningSettings",
    "XGBoostHyperparameters",
    "default_hyperparameters",
    "default_model_name",
    "default_search_space",
    "get_training_run",
    "infer_task",
    "launch_training_job",
    "list_training_runs",
    "minimum_rows",
    "parse_training_spec",
    "plan_training_job",
    "record_training_run",
    "run_training",
    "run_tuning",
    "validate_hyperparameters",
    "validate_search_space",
    "validate_training_spec",
    "validate_tuning_settings",
]
