"""What a training run writes to MLflow besides curves: params, tags, the dataset input, the model."""

from __future__ import annotations

import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import mlflow.data
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, Schema

from backend.training.data import PreparedData
from backend.training.plan import TrainingPlan
from backend.training.tabular_model import PREDICTION_COLUMN, PROBABILITY_PREFIX, TabularPredictor
from backend.training.trainers import save_model_artifacts

MODEL_NAME_IN_RUN = "model"
TRAINING_DIR = Path(__file__).resolve().parent
PYFUNC_ENTRY = TRAINING_DIR / "pyfunc_entry.py"
TABULAR_MODEL_CODE = TRAINING_DIR / "tabular_model.py"
# MLflow's dataset digest column holds 36 characters; the full hash goes into the input's tags.
MAX_DIGEST_CHARS = 32
MAX_FEATURES_PARAM_CHARS = 500


def run_tags(plan: TrainingPlan, *, kind: str, job_id: int | None) -> dict[str, str]:
    tags = {
        "sextant.kind": kind,
        "sextant.dataset": plan.dataset,
        "sextant.dataset_version": str(plan.dataset_version),
        "sextant.dataset_hash": plan.content_hash,
        "sextant.target": plan.target,
        "sextant.framework": plan.spec.framework,
        "sextant.task": plan.task,
    }
    if job_id is not None:
        tags["sextant.job_id"] = str(job_id)
    return tags


def run_params(plan: TrainingPlan, hyperparameters: dict[str, Any]) -> dict[str, Any]:
    features = ",".join(plan.feature_names)
    if len(features) > MAX_FEATURES_PARAM_CHARS:
        features = features[: MAX_FEATURES_PARAM_CHARS - 1] + "…"
    train, validation, test = plan.split_rows
    return {
        "dataset": plan.dataset_ref,
        "target": plan.target,
        "framework": plan.spec.framework,
        "task": plan.task,
        "features": features,
        "num_features": len(plan.features),
        "seed": plan.spec.seed,
        "validation_fraction": plan.spec.validation_fraction,
        "test_fraction": plan.spec.test_fraction,
        "train_rows": train,
        "validation_rows": validation,
        "test_rows": test,
        **hyperparameters,
    }


def log_dataset_input(plan: TrainingPlan, data: PreparedData) -> None:
    """Record the dataset version as the active run's input: name:version, the Parquet file, its hash."""
    with warnings.catch_warnings():
        # MLflow registers its local-file source twice and warns that a path is ambiguous between them.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        dataset = mlflow.data.from_polars(
            data.frame,
            source=str(plan.data_path),
            targets=plan.target,
            name=plan.dataset_ref,
            digest=plan.content_hash[:MAX_DIGEST_CHARS],
        )
    mlflow.log_input(
        dataset,
        context="training",
        tags={
            "sextant.dataset": plan.dataset,
            "sextant.dataset_version": str(plan.dataset_version),
            "sextant.content_hash": plan.content_hash,
        },
    )


def _label_type(classes: list[Any]) -> str:
    if all(isinstance(label, bool) for label in classes):
        return "boolean"
    if all(isinstance(label, int) for label in classes):
        return "long"
    if all(isinstance(label, (int, float)) for label in classes):
        return "double"
    return "string"


def model_signature(plan: TrainingPlan, classes: list[Any] | None) -> ModelSignature:
    inputs = Schema([ColSpec(feature.mlflow_type, feature.name) for feature in plan.features])
    if plan.task == "regression":
        outputs = Schema([ColSpec("double", PREDICTION_COLUMN)])
    else:
        labels = classes or []
        outputs = Schema(
            [ColSpec(_label_type(labels), PREDICTION_COLUMN)]
            + [ColSpec("double", f"{PROBABILITY_PREFIX}{label}") for label in labels]
        )
    return ModelSignature(inputs=inputs, outputs=outputs)


def _requirements(framework: str) -> list[str]:
    # Given explicitly: MLflow would otherwise infer them by importing the model in a subprocess.
    library = "xgboost" if framework == "xgboost" else "torch"
    return [
        f"mlflow=={mlflow.__version__}",
        f"pandas=={pd.__version__}",
        f"numpy=={np.__version__}",
        f"{library}=={version(library)}",
    ]


def log_tabular_model(plan: TrainingPlan, predictor: TabularPredictor, data: PreparedData) -> ModelInfo:
    """Log the pyfunc (preprocessing + model, raw columns in) to the active run."""
    with tempfile.TemporaryDirectory(prefix="sextant-model-") as folder:
        artifacts = save_model_artifacts(predictor, Path(folder))
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=str(PYFUNC_ENTRY),
            code_paths=[str(TABULAR_MODEL_CODE)],
            artifacts=artifacts,
            signature=model_signature(plan, data.classes),
            input_example=data.input_example,
            pip_requirements=_requirements(plan.spec.framework),
            tags={"sextant.dataset": plan.dataset_ref, "sextant.framework": plan.spec.framework},
        )
