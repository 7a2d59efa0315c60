"""XGBoost trainer: a booster on the preprocessed matrix, early stopping on the validation split."""

from __future__ import annotations

from typing import Any

import numpy as np
import xgboost

from backend.training.data import PreparedData
from backend.training.plan import TrainingPlan
from backend.training.tabular_model import TabularPredictor
from backend.training.trainers import FitResult, IterationCallback


class _RoundCallback(xgboost.callback.TrainingCallback):
    def __init__(self, metric: str, on_iteration: IterationCallback):
        super().__init__()
        self.metric = metric
        self.on_iteration = on_iteration
        self.interrupted = False

    def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, Any]) -> bool:
        train = float(evals_log["train"][self.metric][-1])
        validation = float(evals_log["validation"][self.metric][-1])
        if self.on_iteration(epoch, train, validation):
            self.interrupted = True
        return self.interrupted


def fit_xgboost(
    plan: TrainingPlan,
    data: PreparedData,
    metadata: dict[str, Any],
    hyperparameters: dict[str, Any],
    on_iteration: IterationCallback,
) -> FitResult:
    params: dict[str, Any] = {
        "eta": hyperparameters["learning_rate"],
        "max_depth": hyperparameters["max_depth"],
        "subsample": hyperparameters["subsample"],
        "colsample_bytree": hyperparameters["colsample_bytree"],
        "min_child_weight": hyperparameters["min_child_weight"],
        "lambda": hyperparameters["reg_lambda"],
        "alpha": hyperparameters["reg_alpha"],
        "tree_method": "hist",
        "seed": plan.spec.seed,
    }
    if plan.task == "binary":
        params.update(objective="binary:logistic", eval_metric="logloss")
    elif plan.task == "multiclass":
        params.update(objective="multi:softprob", eval_metric="mlogloss", num_class=len(data.classes or []))
    else:
        params.update(objective="reg:squarederror", eval_metric="rmse")
    metric = params["eval_metric"]
    train = xgboost.DMatrix(data.x_train, label=data.y_train)
    validation = xgboost.DMatrix(data.x_validation, label=data.y_validation)
    evals_log: dict[str, Any] = {}
    rounds = _RoundCallback(metric, on_iteration)
    booster = xgboost.train(
        params,
        train,
        num_boost_round=hyperparameters["n_estimators"],
        evals=[(train, "train"), (validation, "validation")],
        early_stopping_rounds=hyperparameters["early_stopping_rounds"],
        evals_result=evals_log,
        verbose_eval=False,
        callbacks=[rounds],
    )
    curve = evals_log["validation"][metric]
    best = int(np.argmin(curve))
    # Keep only the trees up to the best round: the saved booster then predicts exactly as evaluated.
    booster = booster[: best + 1]
    predictor = TabularPredictor(metadata, data.preprocessor, booster=booster)
    return FitResult(
        predictor=predictor,
        best_iteration=best,
        iterations=len(curve),
        best_validation_loss=float(curve[best]),
        interrupted=rounds.interrupted,
    )
