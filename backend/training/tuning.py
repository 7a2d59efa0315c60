"""``run_tuning``: an Optuna study over the spec's search space, each trial a nested MLflow run.

The parent run holds the dataset input, the tuning settings, the best trial's hyper-parameters
(under their own names, so it compares with plain training runs), the best model's validation and
test metrics, the model itself and ``optuna/study.json`` (every trial, parameter importances) for
the Experiments page. Trials report their validation loss after every boosting round / epoch, so
the pruner stops poor trials early. The study lives in memory: one job, one process.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import mlflow
import optuna
from mlflow import MlflowClient
from optuna.trial import TrialState

from backend.config import Settings, get_settings
from backend.errors import SextantError
from backend.tracking import DEFAULT_FLUSH_INTERVAL_S, BatchLogger, get_or_create_experiment, tracking_client
from backend.training.data import PreparedData, prepare_data
from backend.training.metrics import LOSS_METRIC, evaluate
from backend.training.model_logging import log_dataset_input, run_params, run_tags
from backend.training.plan import TrainingPlan
from backend.training.service import (
    TRAIN_LOSS,
    VALIDATION_LOSS,
    ProgressCallback,
    StopCallback,
    TrainingCancelled,
    TrainingResult,
    finish_run,
    max_iterations,
    mlflow_run,
    never_stop,
    no_progress,
    resolve_plan,
    result_fields,
    split_metrics,
)
from backend.training.spec import SearchRange, TrainingSpec, TuningSettings, parse_training_spec
from backend.training.trainers import FitResult, fit_model

PRUNER_STARTUP_TRIALS = 3
PRUNER_WARMUP_STEPS = 5
STUDY_ARTIFACT = "optuna/study.json"


@dataclass(frozen=True)
class TuningResult(TrainingResult):
    best_value: float = math.nan
    best_trial_number: int = -1
    trials_completed: int = 0
    trials_pruned: int = 0
    trials_failed: int = 0


def build_pruner(tuning: TuningSettings) -> optuna.pruners.BasePruner:
    if not tuning.pruning:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_STEPS)


def suggest(trial: optuna.Trial, name: str, search: SearchRange) -> Any:
    if search.type == "categorical":
        return trial.suggest_categorical(name, search.choices or [])
    if search.type == "int":
        return trial.suggest_int(name, int(search.low or 0), int(search.high or 0), log=search.log)
    return trial.suggest_float(name, float(search.low or 0.0), float(search.high or 0.0), log=search.log)


@dataclass
class _Best:
    value: float = math.inf
    number: int = -1
    fit: FitResult | None = None


class _Objective:
    """One trial: sample, train in a nested run with pruning, keep the best model seen so far."""

    def __init__(
        self,
        *,
        plan: TrainingPlan,
        data: PreparedData,
        space: dict[str, SearchRange],
        client: MlflowClient,
        experiment_id: str,
        tags: dict[str, str],
        n_trials: int,
        progress: ProgressCallback,
        should_stop: StopCallback,
        flush_interval_s: float,
    ):
        self.plan = plan
        self.data = data
        self.space = space
        self.client = client
        self.experiment_id = experiment_id
        self.tags = tags
        self.n_trials = n_trials
        self.progress = progress
        self.should_stop = should_stop
        self.flush_interval_s = flush_interval_s
        self.best = _Best()
        self.cancelled = False
        self.run_ids: dict[int, str] = {}

    def __call__(self, trial: optuna.Trial) -> float:
        sampled = {name: suggest(trial, name, search) for name, search in self.space.items()}
        hyperparameters = {**self.plan.hyperparameters, **sampled}
        total = max_iterations(self.plan, hyperparameters)
        pruned = False
        loss_name = LOSS_METRIC[self.plan.task]
        tags = {**self.tags, "sextant.trial_number": str(trial.number)}
        with mlflow_run(
            experiment_id=self.experiment_id, nested=True, run_name=f"trial-{trial.number}", tags=tags
        ) as run:
            self.run_ids[trial.number] = run.info.run_id
            batch = BatchLogger(self.client, run.info.run_id, flush_interval_s=self.flush_interval_s)
            batch.log_params(hyperparameters)

            def on_iteration(step: int, train_loss: float, validation_loss: float) -> bool:
                nonlocal pruned
                batch.log_metrics({TRAIN_LOSS: train_loss, VALIDATION_LOSS: validation_loss}, step=step)
                done = trial.number + min(1.0, (step + 1) / total)
                self.progress(
                    0.05 + 0.85 * min(1.0, done / self.n_trials),
                    f"trial {trial.number + 1}/{self.n_trials}, iteration {step + 1}/{total}: "
                    f"validation {loss_name} {validation_loss:.4f}",
                )
                if self.should_stop():
                    self.cancelled = True
                    return True
                if math.isfinite(validation_loss):
                    trial.report(validation_loss, step)
                    pruned = trial.should_prune()
                return pruned

            fit = fit_model(self.plan, self.data, hyperparameters, on_iteration=on_iteration)
            if self.cancelled:
                batch.flush()
                raise TrainingCancelled(f"cancelled during trial {trial.number + 1}")
            summary = {"best_iteration": fit.best_iteration, "iterations": fit.iterations}
            state = "pruned" if pruned else "complete"
            if not pruned and math.isfinite(fit.best_validation_loss):
                scores = fit.predictor.predict_matrix(self.data.x_validation)
                metrics = evaluate(self.plan.task, self.data.y_validation, scores)
                summary.update({f"validation_{name}": value for name, value in metrics.items()})
            elif not pruned:
                state = "diverged"
            if state == "complete":
                summary["best_validation_loss"] = fit.best_validation_loss
            batch.log_metrics(summary)
            batch.set_tags({"sextant.trial_state": state})
            batch.flush()
        if pruned:
            raise optuna.TrialPruned(f"pruned after {fit.iterations} iterations")
        if state == "diverged":
            # NaN marks the trial failed in Optuna without stopping the study.
            return math.nan
        if fit.best_validation_loss < self.best.value:
            self.best = _Best(fit.best_validation_loss, trial.number, fit)
        return fit.best_validation_loss


def _study_summary(study: optuna.Study, run_ids: dict[int, str], loss_name: str) -> dict[str, Any]:
    trials = [
        {
            "number": trial.number,
            "state": trial.state.name.lower(),
            "value": trial.value,
            "params": trial.params,
            "last_step": trial.last_step,
            "duration_seconds": trial.duration.total_seconds() if trial.duration else None,
            "mlflow_run_id": run_ids.get(trial.number),
        }
        for trial in study.trials
    ]
    importances: dict[str, float] = {}
    completed = [trial for trial in study.trials if trial.state == TrialState.COMPLETE]
    if len(completed) >= 2:
        try:
            importances = {name: float(value) for name, value in optuna.importance.get_param_importances(study).items()}
        except (ValueError, RuntimeError):
            # Importances are undefined when no parameter varied across completed trials.
            importances = {}
    return {
        "direction": "minimize",
        "objective": f"validation_{loss_name}",
        "trials": trials,
        "importances": importances,
    }


def run_tuning(
    spec: TrainingSpec | dict[str, Any],
    *,
    job_id: int | None = None,
    progress: ProgressCallback | None = None,
    should_stop: StopCallback | None = None,
    settings: Settings | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
) -> TuningResult:
    """Tune ``spec``'s hyper-parameters (``spec.tuning``, default settings when absent), register the best model."""
    settings = settings or get_settings()
    spec = parse_training_spec(spec)
    if spec.tuning is None:
        spec = spec.model_copy(update={"tuning": TuningSettings()})
    tuning = spec.tuning or TuningSettings()
    progress = progress or no_progress
    should_stop = should_stop or never_stop
    progress(0.0, "validating the request")
    plan = resolve_plan(spec, settings=settings)
    space = plan.search_space or {}
    progress(0.02, f"loading {plan.dataset_ref}")
    data = prepare_data(plan)
    if should_stop():
        raise TrainingCancelled("cancelled before tuning started")
    client = tracking_client(settings)
    experiment_id = get_or_create_experiment(plan.experiment, client=client, settings=settings)
    tags = run_tags(plan, kind="tune", job_id=job_id)
    run_name = f"tune-{spec.framework}-job-{job_id}" if job_id is not None else None
    loss_name = LOSS_METRIC[plan.task]
    with mlflow_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as parent:
        parent_id = parent.info.run_id
        batch = BatchLogger(client, parent_id, flush_interval_s=flush_interval_s)
        fixed = {name: value for name, value in plan.hyperparameters.items() if name not in space}
        batch.log_params(
            {
                **run_params(plan, fixed),
                "n_trials": tuning.n_trials,
                "timeout_seconds": tuning.timeout_seconds,
                "pruning": tuning.pruning,
                "search_space": json.dumps(
                    {name: search.model_dump(exclude_none=True) for name, search in space.items()}
                ),
            }
        )
        batch.flush()
        log_dataset_input(plan, data)
        study = optuna.create_study(
            study_name=f"sextant-job-{job_id}" if job_id is not None else f"sextant-run-{parent_id}",
            direction="minimize",
            sampler=optuna.samplers.TPESampler(seed=spec.seed),
            pruner=pruner or build_pruner(tuning),
        )
        objective = _Objective(
            plan=plan,
            data=data,
            space=space,
            client=client,
            experiment_id=experiment_id,
            tags={**tags, "sextant.parent_run_id": parent_id},
            n_trials=tuning.n_trials,
            progress=progress,
            should_stop=should_stop,
            flush_interval_s=flush_interval_s,
        )

        def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            best = f", best validation {loss_name} {objective.best.value:.4f}" if objective.best.fit else ""
            progress(
                0.05 + 0.85 * min(1.0, (trial.number + 1) / tuning.n_trials),
                f"trial {trial.number + 1}/{tuning.n_trials} {trial.state.name.lower()}{best}",
            )
            if should_stop():
                objective.cancelled = True
                study.stop()

        started = time.monotonic()
        study.optimize(objective, n_trials=tuning.n_trials, timeout=tuning.timeout_seconds, callbacks=[after_trial])
        if objective.cancelled:
            raise TrainingCancelled(f"cancelled after {len(study.trials)} trials")
        states = [trial.state for trial in study.trials]
        counts = {state: states.count(state) for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        best = objective.best
        if best.fit is None:
            raise SextantError(
                f"no trial finished: {counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} diverged "
                f"out of {len(study.trials)}; widen the search space or lower the learning rate"
            )
        progress(0.9, f"best trial {best.number + 1}: validation {loss_name} {best.value:.4f}")
        metrics = split_metrics(plan, data, best.fit)
        best_params = dict(study.trials[best.number].params)
        batch.log_params(best_params)
        batch.log_metrics(
            {
                **metrics,
                "best_validation_loss": best.value,
                "best_trial_number": best.number,
                "best_iteration": best.fit.best_iteration,
                "iterations": best.fit.iterations,
                "trials_completed": counts[TrialState.COMPLETE],
                "trials_pruned": counts[TrialState.PRUNED],
                "trials_failed": counts[TrialState.FAIL],
                "tuning_seconds": time.monotonic() - started,
            }
        )
        batch.set_tags({"sextant.best_trial_run_id": objective.run_ids.get(best.number, "")})
        batch.flush()
        mlflow.log_dict(_study_summary(study, objective.run_ids, loss_name), STUDY_ARTIFACT)
        model_uri, registered, record_id = finish_run(
            client,
            plan=plan,
            data=data,
            fit=best.fit,
            metrics=metrics,
            run_id=parent_id,
            experiment_id=experiment_id,
            kind="tune",
            job_id=job_id,
            settings=settings,
            progress=progress,
        )
    return TuningResult(
        **result_fields(
            kind="tune",
            plan=plan,
            run_id=parent_id,
            experiment_id=experiment_id,
            model_uri=model_uri,
            registered=registered,
            metrics=metrics,
            fit=best.fit,
            record_id=record_id,
            settings=settings,
            progress=progress,
        ),
        best_params=best_params,
        best_value=best.value,
        best_trial_number=best.number,
        trials_completed=counts[TrialState.COMPLETE],
        trials_pruned=counts[TrialState.PRUNED],
        trials_failed=counts[TrialState.FAIL],
    )
