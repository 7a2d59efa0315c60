"""Metrics per task, computed from a model's scores (class probabilities or predicted values)."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

CLASSIFICATION_METRICS = ("roc_auc", "log_loss", "accuracy", "f1")
REGRESSION_METRICS = ("rmse", "mae", "r2")
# The loss curves, early stopping and tuning all minimise this per task.
LOSS_METRIC = {"binary": "log_loss", "multiclass": "log_loss", "regression": "rmse"}
# Which direction is better, for ranking runs and choosing a champion.
HIGHER_IS_BETTER = {
    "roc_auc": True,
    "accuracy": True,
    "f1": True,
    "r2": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
}


def loss(task: str, y_true: np.ndarray, scores: np.ndarray) -> float:
    """The task's loss; infinite when the model produced non-finite scores (a diverged network)."""
    if not np.all(np.isfinite(scores)):
        return math.inf
    if task == "regression":
        return math.sqrt(mean_squared_error(y_true, scores))
    return float(log_loss(y_true, _normalised(scores), labels=list(range(scores.shape[1]))))


def _normalised(probabilities: np.ndarray) -> np.ndarray:
    clipped = np.clip(probabilities, 1e-15, 1.0)
    return clipped / clipped.sum(axis=1, keepdims=True)


def evaluate(task: str, y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Metrics of one split. ROC AUC is left out when the split lacks a class (it is undefined then)."""
    if task == "regression":
        return {
            "rmse": math.sqrt(mean_squared_error(y_true, scores)),
            "mae": float(mean_absolute_error(y_true, scores)),
            "r2": float(r2_score(y_true, scores)),
        }
    probabilities = _normalised(scores)
    labels = list(range(probabilities.shape[1]))
    predicted = probabilities.argmax(axis=1)
    metrics: dict[str, float] = {}
    if len(np.unique(y_true)) == len(labels):
        if task == "binary":
            metrics["roc_auc"] = float(roc_auc_score(y_true, probabilities[:, 1]))
        else:
            metrics["roc_auc"] = float(roc_auc_score(y_true, probabilities, multi_class="ovr", labels=labels))
    metrics["log_loss"] = float(log_loss(y_true, probabilities, labels=labels))
    metrics["accuracy"] = float(accuracy_score(y_true, predicted))
    average = "binary" if task == "binary" else "macro"
    metrics["f1"] = float(f1_score(y_true, predicted, labels=labels, average=average, zero_division=0))
    return metrics
