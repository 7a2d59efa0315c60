"""Optuna tuning for real: nested trial runs, pruning, the best model registered and recorded."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow import MlflowClient
from sqlalchemy.orm import Session

from backend.config import get_settings
from backend.training import (
    SearchRange,
    TrainingCancelled,
    TrainingSpec,
    TuningSettings,
    get_training_run,
    run_tuning,
)
from backend.training.tuning import build_pruner
from tests.integration import test_training_runs as training_tests

# The training tests' fixtures: a copied MLflow store and the sampled churn dataset.
example_csv_path = training_tests.example_csv_path
mlflow_template = training_tests.mlflow_template
churn_sample = training_tests.churn_sample
churn = training_tests.churn

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


class PruneSecondTrial(optuna.pruners.BasePruner):
    """Deterministic pruning for the test: trial 1 stops once it has reported step 3."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number == 1 and (trial.last_step or 0) >= 3


def _client() -> MlflowClient:
    uri = get_settings().resolved_mlflow_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _trials(client: MlflowClient, parent: mlflow.entities.Run) -> list[mlflow.entities.Run]:
    runs = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    return sorted(runs, key=lambda run: int(run.data.tags["sextant.trial_number"]))


def test_three_trial_study_with_nested_runs_pruning_and_a_registered_best_model(churn: Session) -> None:
    space = {
        "max_depth": SearchRange(type="int", low=2, high=5),
        "learning_rate": SearchRange(type="float", low=0.05, high=0.3, log=True),
        "n_estimators": SearchRange(type="int", low=20, high=40),
    }
    spec = TrainingSpec(
        dataset="churn",
        target="churned",
        model_name="churn-tuned",
        hyperparameters={"early_stopping_rounds": 50},
        tuning=TuningSettings(n_trials=3, search_space=space),
    )
    progress: list[float] = []
    result = run_tuning(spec, job_id=None, progress=lambda f, m="": progress.append(f), pruner=PruneSecondTrial())

    assert (result.kind, result.trials_completed, result.trials_pruned, result.trials_failed) == ("tune", 2, 1, 0)
    assert result.best_trial_number in (0, 2)
    assert set(result.best_params) == set(space)
    assert (result.model_name, result.model_version) == ("churn-tuned", 1)
    assert progress[-1] == 1.0 and progress == sorted(progress)

    client = _client()
    parent = client.get_run(result.mlflow_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["sextant.kind"] == "tune"
    # The parent holds the best hyper-parameters under their own names, next to the fixed ones.
    for name, value in result.best_params.items():
        assert parent.data.params[name] == str(value)
    assert parent.data.params["early_stopping_rounds"] == "50" and parent.data.params["n_trials"] == "3"
    assert parent.data.metrics["best_validation_loss"] == pytest.approx(result.best_value)
    assert parent.data.metrics["trials_pruned"] == 1
    assert {"test_roc_auc", "test_log_loss", "validation_log_loss"} <= set(parent.data.metrics)
    assert [d.dataset.name for d in parent.inputs.dataset_inputs] == ["churn:1"]

    trials = _trials(client, parent)
    assert [t.data.tags["sextant.trial_state"] for t in trials] == ["complete", "pruned", "complete"]
    assert all(t.info.status == "FINISHED" for t in trials)
    assert {name: trials[result.best_trial_number].data.params[name] for name in space} == {
        name: str(value) for name, value in result.best_params.items()
    }
    # The pruner saw every intermediate value: trial 1 stopped right after step 3.
    assert [p.step for p in client.get_metric_history(trials[1].info.run_id, "validation_loss")] == [0, 1, 2, 3]
    completed_losses = [
        t.data.metrics["best_validation_loss"] for t in trials if "best_validation_loss" in t.data.metrics
    ]
    assert len(completed_losses) == 2 and min(completed_losses) == pytest.approx(result.best_value)
    assert parent.data.tags["sextant.best_trial_run_id"] == trials[result.best_trial_number].info.run_id

    study_file = Path(mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path="optuna/study.json"))
    study = json.loads(study_file.read_text())
    assert [trial["state"] for trial in study["trials"]] == ["complete", "pruned", "complete"]
    assert study["objective"] == "validation_log_loss" and study["direction"] == "minimize"
    assert set(study["importances"]) == set(space)

    version = client.get_model_version("churn-tuned", "1")
    assert version.run_id == parent.info.run_id and version.tags["sextant.kind"] == "tune"
    assert float(version.tags["test_roc_auc"]) == pytest.approx(result.metrics["test_roc_auc"], rel=1e-5)
    assert "tuned with Optuna" in version.description

    record = get_training_run(churn, mlflow_run_id=parent.info.run_id)
    assert (record.kind, record.registered_model_version, record.dataset) == ("tune", 1, "churn")

    loaded = mlflow.pyfunc.load_model("models:/churn-tuned/1")
    assert list(loaded.predict(loaded.input_example).columns) == ["prediction", "probability_0", "probability_1"]


@SQLITE_ONLY
def test_torch_tuning_with_the_default_search_space(churn: Session) -> None:
    spec = TrainingSpec(
        dataset="churn",
        target="monthly_charges",
        framework="torch",
        hyperparameters={"max_epochs": 4},
        tuning=TuningSettings(n_trials=3),
    )
    result = run_tuning(spec)
    assert result.task == "regression" and result.trials_completed == 3
    assert set(result.best_params) == {
        "hidden_size",
        "num_layers",
        "learning_rate",
        "dropout",
        "weight_decay",
        "batch_size",
    }
    assert result.model_name == "churn-monthly_charges" and result.model_version == 1
    assert {"test_rmse", "test_mae", "test_r2"} <= set(result.metrics)
    client = _client()
    assert len(_trials(client, client.get_run(result.mlflow_run_id))) == 3


@SQLITE_ONLY
def test_cancel_during_a_trial_ends_the_study_and_registers_nothing(churn: Session) -> None:
    checks = iter(range(1000))
    spec = TrainingSpec(
        dataset="churn",
        target="churned",
        hyperparameters={"n_estimators": 30},
        tuning=TuningSettings(n_trials=5, search_space={"max_depth": SearchRange(type="int", low=2, high=4)}),
    )
    with pytest.raises(TrainingCancelled, match="cancelled during trial 2"):
        run_tuning(spec, should_stop=lambda: next(checks) >= 40)
    client = _client()
    runs = client.search_runs([client.get_experiment_by_name("churn-churned").experiment_id])
    statuses = sorted((run.data.tags.get("sextant.trial_number", "parent"), run.info.status) for run in runs)
    assert statuses == [("0", "FINISHED"), ("1", "KILLED"), ("parent", "KILLED")]
    assert client.search_registered_models() == []


def test_default_pruner_is_a_median_pruner() -> None:
    assert isinstance(build_pruner(TuningSettings()), optuna.pruners.MedianPruner)
    assert isinstance(build_pruner(TuningSettings(pruning=False)), optuna.pruners.NopPruner)
