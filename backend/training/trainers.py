"""The two trainers: XGBoost (booster with early stopping) and a PyTorch tabular MLP (patience).

Both train on the preprocessed matrices, report ``(step, train_loss, validation_loss)`` after every
boosting round / epoch to a callback that may stop them (cancel, pruning), and return a
``TabularPredictor`` holding the best iteration's model. Losses are log loss (classification) or
RMSE on the target's scale (regression), so curves of both frameworks compare. Each framework is
imported only when used: an XGBoost job never loads torch.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.training.data import PreparedData
from backend.training.plan import TrainingPlan
from backend.training.tabular_model import (
    BOOSTER_FILE,
    FORMAT_VERSION,
    METADATA_FILE,
    MODEL_ARTIFACT_KEY,
    PREPROCESSOR_FILE,
    TORCHSCRIPT_FILE,
    TabularPredictor,
    output_columns,
)

# (step, train loss, validation loss) → True to stop training now.
IterationCallback = Callable[[int, float, float], bool]


@dataclass
class FitResult:
    predictor: TabularPredictor
    # 0-based boosting round / epoch with the lowest validation loss (the model kept).
    best_iteration: int
    iterations: int
    best_validation_loss: float
    # The callback asked to stop (cancel or pruning), as opposed to early stopping or the last round.
    interrupted: bool


def model_metadata(plan: TrainingPlan, data: PreparedData) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "framework": plan.spec.framework,
        "task": plan.task,
        "target": plan.target,
        "classes": data.classes,
        "features": [
            {"name": f.name, "kind": f.kind, "dtype": f.dtype, "mlflow_type": f.mlflow_type} for f in plan.features
        ],
        "preprocessed_columns": data.preprocessor.output_names,
        "outputs": output_columns(plan.task, data.classes),
        "dataset": plan.dataset,
        "dataset_version": plan.dataset_version,
    }


def fit_model(
    plan: TrainingPlan,
    data: PreparedData,
    hyperparameters: dict[str, Any],
    *,
    on_iteration: IterationCallback | None = None,
) -> FitResult:
    callback = on_iteration or (lambda _step, _train, _validation: False)
    metadata = model_metadata(plan, data)
    if plan.spec.framework == "xgboost":
        from backend.training.xgboost_trainer import fit_xgboost

        return fit_xgboost(plan, data, metadata, hyperparameters, callback)
    from backend.training.torch_trainer import fit_torch

    return fit_torch(plan, data, metadata, hyperparameters, callback)


def save_model_artifacts(predictor: TabularPredictor, folder: Path) -> dict[str, str]:
    """Write the model's files to ``folder``; returns them keyed as ``TabularPredictor.load`` expects."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"metadata": folder / METADATA_FILE, "preprocessor": folder / PREPROCESSOR_FILE}
    paths["metadata"].write_text(json.dumps(predictor.metadata, indent=2))
    paths["preprocessor"].write_text(json.dumps(predictor.preprocessor.to_dict(), indent=2))
    if predictor.booster is not None:
        paths[MODEL_ARTIFACT_KEY] = folder / BOOSTER_FILE
        predictor.booster.save_model(str(paths[MODEL_ARTIFACT_KEY]))
    else:
        import torch

        paths[MODEL_ARTIFACT_KEY] = folder / TORCHSCRIPT_FILE
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream, but it is the format Triton's python backend loads.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(predictor.module, str(paths[MODEL_ARTIFACT_KEY]))
    return {key: str(path) for key, path in paths.items()}
