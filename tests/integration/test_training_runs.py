"""Real training on the example data (sampled small) against a real MLflow store under SEXTANT_HOME."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest
import xgboost
from mlflow import MlflowClient
from sqlalchemy.orm import Session

from backend.config import get_settings
from backend.datasets import create_dataset_version
from backend.lineage import get_lineage
from backend.training import (
    TrainingCancelled,
    TrainingSpec,
    get_training_run,
    list_training_runs,
    run_training,
    validate_training_spec,
)
from backend.training import service as training_service
from backend.training.data import PreparedData
from backend.training.metrics import evaluate
from backend.training.tabular_model import TabularPredictor

SAMPLE_ROWS = 400
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with its schema created once; each test copies it (≈ 1 s saved per test)."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    mlflow.set_tracking_uri(None)
    return path


@pytest.fixture(scope="session")
def churn_sample(tmp_path_factory: pytest.TempPathFactory, example_csv_path: Path) -> Path:
    path = tmp_path_factory.mktemp("churn") / "churn-small.parquet"
    pl.read_csv(example_csv_path, try_parse_dates=True).sample(SAMPLE_ROWS, seed=7).write_parquet(path)
    return path


@pytest.fixture(scope="session")
def example_csv_path() -> Path:
    return Path(__file__).resolve().parents[2] / "examples" / "churn.csv"


@pytest.fixture
def churn(session: Session, churn_sample: Path, mlflow_template: Path) -> Iterator[Session]:
    """The ``churn`` dataset (version 1) and an empty MLflow store in this test's SEXTANT_HOME."""
    settings = get_settings()
    settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(mlflow_template, settings.mlflow_dir / "mlflow.db")
    create_dataset_version(session, name="churn", source_path=churn_sample)
    yield session
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The in-process predictor and data of the last run, exactly as they were logged."""
    seen: dict[str, Any] = {}
    original = training_service.log_tabular_model

    def spy(plan: Any, predictor: TabularPredictor, data: PreparedData) -> Any:
        seen.update(plan=plan, predictor=predictor, data=data)
        return original(plan, predictor, data)

    monkeypatch.setattr(training_service, "log_tabular_model", spy)
    return seen


@pytest.fixture
def batch_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """run id → number of entities in each log_batch call Sextant made for it."""
    calls: dict[str, list[int]] = {}
    original = MlflowClient.log_batch

    def spy(self: MlflowClient, run_id: str, metrics: Any = (), params: Any = (), tags: Any = (), **kwargs: Any) -> Any:
        # MLflow's log_model copies the run's latest metrics onto the logged model in one call of its own.
        if not any(getattr(metric, "model_id", None) for metric in metrics):
            calls.setdefault(run_id, []).append(len(metrics) + len(params) + len(tags))
        return original(self, run_id, metrics=metrics, params=params, tags=tags, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", spy)
    return calls


def _client() -> MlflowClient:
    uri = get_settings().resolved_mlflow_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_xgboost_binary_is_tracked_registered_and_recorded(
    churn: Session, captured: dict[str, Any], batch_calls: dict[str, list[int]]
) -> None:
    progress: list[tuple[float, str]] = []
    spec = TrainingSpec(
        dataset="churn", target="churned", hyperparameters={"n_estimators": 60, "early_stopping_rounds": 10}
    )
    result = run_training(spec, job_id=None, progress=lambda f, m="": progress.append((f, m)))

    assert (result.task, result.framework, result.dataset, result.dataset_version) == ("binary", "xgboost", "churn", 1)
    assert (result.model_name, result.model_version) == ("churn-churned", 1)
    metric_names = {"roc_auc", "log_loss", "accuracy", "f1"}
    assert set(result.metrics) == {f"{part}_{name}" for part in ("validation", "test") for name in metric_names}
    assert result.metrics["test_roc_auc"] > 0.65
    fractions = [fraction for fraction, _ in progress]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert any("validation log_loss" in message for _, message in progress)

    client = _client()
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert result.mlflow_run_url.endswith(f"/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}")
    assert client.get_experiment(run.info.experiment_id).name == "churn-churned"
    assert run.data.params["dataset"] == "churn:1" and run.data.params["max_depth"] == "6"
    assert run.data.params["features"].split(",") == captured["plan"].feature_names
    assert "customer_id" not in run.data.params["features"] and "event_time" not in run.data.params["features"]
    assert run.data.tags["sextant.dataset_version"] == "1" and run.data.tags["sextant.kind"] == "train"
    assert run.data.metrics["test_roc_auc"] == pytest.approx(result.metrics["test_roc_auc"])

    # Per-round curves, all sent in one batch together with the params and final metrics.
    history = client.get_metric_history(result.mlflow_run_id, "validation_loss")
    assert [point.step for point in history] == list(range(result.iterations))
    assert len(client.get_metric_history(result.mlflow_run_id, "train_loss")) == result.iterations
    assert result.best_iteration == int(np.argmin([point.value for point in history]))
    assert len(batch_calls[result.mlflow_run_id]) == 1

    # The dataset version is the run's input: name:version, its Parquet file and content hash.
    plan = validate_training_spec(churn, spec)
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "churn:1"
    assert dataset_input.dataset.digest == plan.content_hash[:32]
    assert str(plan.data_path) in dataset_input.dataset.source
    input_tags = {tag.key: tag.value for tag in dataset_input.tags}
    assert input_tags["sextant.content_hash"] == plan.content_hash and input_tags["mlflow.data.context"] == "training"

    # The registered version carries the test metrics.
    version = client.get_model_version("churn-churned", "1")
    assert version.run_id == result.mlflow_run_id
    assert float(version.tags["test_roc_auc"]) == pytest.approx(result.metrics["test_roc_auc"], rel=1e-5)
    assert set(metric_names) <= {key.removeprefix("test_") for key in version.tags}
    assert "Test metrics: roc_auc" in version.description and "churn:1" in version.description

    # Sextant's own record of the run.
    record = get_training_run(churn, mlflow_run_id=result.mlflow_run_id)
    assert (record.dataset, record.dataset_version, record.dataset_version_id) == ("churn", 1, plan.dataset_version_id)
    assert (record.registered_model_name, record.registered_model_version, record.kind) == ("churn-churned", 1, "train")
    assert record.metrics["roc_auc"] == pytest.approx(result.metrics["test_roc_auc"])
    assert [r.id for r in list_training_runs(churn, dataset="churn")] == [result.training_run_id]
    # Lineage: the registered version traces back to the dataset version through the run.
    upstream = get_lineage(churn, uri="models:/churn-churned/1", direction="upstream")
    assert upstream.artifact("dataset:churn:1") is not None
    assert [e.properties["mlflow_run_id"] for e in upstream.executions] == [result.mlflow_run_id]

    job_result = result.as_job_result()
    assert job_result["test_metrics"]["roc_auc"] == result.metrics["test_roc_auc"]
    assert job_result["model_name"] == "churn-churned" and job_result["mlflow_run_url"] == result.mlflow_run_url


def _assert_serves_raw_columns(model_uri: str, captured: dict[str, Any]) -> pd.DataFrame:
    data: PreparedData = captured["data"]
    model = mlflow.pyfunc.load_model(model_uri)
    assert model.metadata.get_input_schema().input_names() == captured["plan"].feature_names
    served = model.predict(data.raw_test)
    pd.testing.assert_frame_equal(served, captured["predictor"].predict(data.raw_test), rtol=1e-5)
    return served


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("framework", "target", "task", "hyperparameters"),
    [
        ("xgboost", "monthly_charges", "regression", {"n_estimators": 40}),
        ("xgboost", "plan", "multiclass", {"n_estimators": 30}),
        ("torch", "churned", "binary", {"max_epochs": 8, "learning_rate": 0.01}),
        ("torch", "monthly_charges", "regression", {"max_epochs": 8, "learning_rate": 0.01}),
        ("torch", "plan", "multiclass", {"max_epochs": 8, "learning_rate": 0.01}),
    ],
)
def test_pyfunc_on_raw_columns_matches_the_in_process_model(
    churn: Session, captured: dict[str, Any], framework: str, target: str, task: str, hyperparameters: dict
) -> None:
    spec = TrainingSpec(dataset="churn", target=target, framework=framework, hyperparameters=hyperparameters)
    result = run_training(spec)
    assert result.task == task
    served = _assert_serves_raw_columns(f"models:/{result.model_name}/{result.model_version}", captured)
    data: PreparedData = captured["data"]

    if task == "regression":
        assert list(served.columns) == ["prediction"] and served["prediction"].dtype == np.float64
        assert set(result.metrics) == {f"{p}_{m}" for p in ("validation", "test") for m in ("rmse", "mae", "r2")}
        scores = served["prediction"].to_numpy()
    else:
        classes = data.classes or []
        assert classes == (["basic", "premium", "standard"] if target == "plan" else [0, 1])
        assert list(served.columns) == ["prediction"] + [f"probability_{label}" for label in classes]
        scores = served.iloc[:, 1:].to_numpy()
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
        assert served["prediction"].tolist() == [classes[i] for i in scores.argmax(axis=1)]
    # Metrics recomputed from the served predictions equal the logged test metrics.
    recomputed = evaluate(task, data.y_test, scores)
    for name, value in recomputed.items():
        assert result.metrics[f"test_{name}"] == pytest.approx(value, rel=1e-4, abs=1e-6)

    # The raw model file sits inside the logged model, loadable without the pyfunc wrapper.
    folder = Path(mlflow.artifacts.download_artifacts(result.model_uri)) / "artifacts"
    if framework == "xgboost":
        booster = xgboost.Booster()
        booster.load_model(folder / "xgboost_booster.json")
        raw = booster.predict(xgboost.DMatrix(data.x_test))
    else:
        import torch

        module = torch.jit.load(str(folder / "model.torchscript.pt"))
        with torch.no_grad():
            raw = module(torch.from_numpy(data.x_test)).numpy()
    np.testing.assert_allclose(raw, scores, rtol=1e-5, atol=1e-7)
    assert (folder / "preprocessor.json").is_file() and (folder / "sextant_model.json").is_file()
    reloaded = TabularPredictor.load_dir(folder)
    pd.testing.assert_frame_equal(reloaded.predict(data.raw_test), served, rtol=1e-5)


@SQLITE_ONLY
def test_long_curves_go_out_in_batches_of_1000(churn: Session, batch_calls: dict[str, list[int]]) -> None:
    spec = TrainingSpec(
        dataset="churn",
        target="churned",
        register_model=False,
        hyperparameters={"n_estimators": 600, "early_stopping_rounds": 1000, "learning_rate": 0.01, "max_depth": 2},
    )
    result = run_training(spec)
    assert result.iterations == 600 and result.model_version is None
    client = _client()
    assert len(client.get_metric_history(result.mlflow_run_id, "train_loss")) == 600
    assert len(client.get_metric_history(result.mlflow_run_id, "validation_loss")) == 600
    # 1200 curve points + params + final metrics: two calls, each within MLflow's 1000-entity limit.
    assert batch_calls[result.mlflow_run_id][0] == 1000
    assert len(batch_calls[result.mlflow_run_id]) == 2


@SQLITE_ONLY
def test_cancel_stops_training_and_registers_nothing(churn: Session) -> None:
    checks = iter(range(100))
    spec = TrainingSpec(dataset="churn", target="churned", framework="torch", hyperparameters={"max_epochs": 50})
    with pytest.raises(TrainingCancelled, match="cancelled after 3 iterations"):
        run_training(spec, should_stop=lambda: next(checks) >= 3)
    client = _client()
    (run,) = client.search_runs([client.get_experiment_by_name("churn-churned").experiment_id])
    assert run.info.status == "KILLED"
    assert len(client.get_metric_history(run.info.run_id, "validation_loss")) == 3
    assert client.search_registered_models() == []
    assert list_training_runs(churn) == []


LOAD_WITHOUT_SEXTANT = """
import sys
sys.modules["backend"] = None  # importing Sextant's own code now fails
import mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
print(model.predict(pd.read_json(sys.argv[3], orient="split")).to_json(orient="split"))
"""


@SQLITE_ONLY
def test_logged_model_loads_and_predicts_without_sextant_code(
    churn: Session, captured: dict[str, Any], tmp_path: Path
) -> None:
    result = run_training(TrainingSpec(dataset="churn", target="plan", hyperparameters={"n_estimators": 10}))
    data: PreparedData = captured["data"]
    rows = data.raw_test.head(5)
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_WITHOUT_SEXTANT,
            get_settings().resolved_mlflow_tracking_uri,
            f"models:/{result.model_name}/{result.model_version}",
            rows.to_json(orient="split", date_format="iso"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    served = pd.read_json(io.StringIO(completed.stdout.strip().splitlines()[-1]), orient="split")
    expected = captured["predictor"].predict(rows)
    assert served["prediction"].tolist() == expected["prediction"].tolist()
    np.testing.assert_allclose(served.iloc[:, 1:].to_numpy(), expected.iloc[:, 1:].to_numpy(), rtol=1e-5)
