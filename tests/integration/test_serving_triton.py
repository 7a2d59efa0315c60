"""The real tritonserver serving models trained by backend.training: parity with the MLflow pyfunc.

One server for the module. The models are trained once on 400 rows of the churn example, registered
in a SQLite MLflow store, written into the Triton repository and loaded; predictions on the raw
columns of every row of the example (with missing values and an unseen category) must equal the pyfunc's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest
import tritonclient.grpc as grpcclient

from backend.config import Settings, get_settings, reset_settings
from backend.datasets import create_dataset_version
from backend.db import dispose_engines, migrate, session_scope
from backend.errors import InvalidInputError
from backend.serving.client import TritonClient
from backend.serving.errors import ModelLoadError, ModelNotReadyError
from backend.serving.repository import (
    ServingOptions,
    WrittenVersion,
    export_model_version,
    load_config_json,
    write_model_version,
)
from backend.serving.server import TritonServer, TritonServerOptions
from backend.tracking import tracking_client
from backend.training import TrainingSpec, run_training
from tests.conftest import free_ports

EXAMPLE_CSV = Path(__file__).resolve().parents[2] / "examples" / "churn.csv"
TRAIN_ROWS = 400
MAX_BATCH_SIZE = 4096
TOLERANCE = 1e-5
SPECS = [
    # churn-churned version 1 (XGBoost) and version 2 (PyTorch): served side by side.
    TrainingSpec(dataset="churn", target="churned", hyperparameters={"n_estimators": 30}),
    TrainingSpec(dataset="churn", target="churned", framework="torch", hyperparameters={"max_epochs": 8}),
    TrainingSpec(dataset="churn", target="plan", hyperparameters={"n_estimators": 20}),
    TrainingSpec(dataset="churn", target="monthly_charges", framework="torch", hyperparameters={"max_epochs": 8}),
]
SERVED = {"churn-churned": [1, 2], "churn-plan": [1], "churn-monthly_charges": [1]}


def parity_frame() -> pd.DataFrame:
    """Every row of the example, raw, with missing values and a category never seen in training."""
    frame = pd.read_csv(EXAMPLE_CSV)
    frame.loc[0, "monthly_charges"] = np.nan
    frame.loc[3, "data_usage_gb"] = np.nan
    frame.loc[1, "region"] = None
    frame.loc[2, "region"] = "atlantis"
    frame.loc[4, "plan"] = None
    return frame


@dataclass
class Trained:
    settings: Settings
    frame: pd.DataFrame
    # (registry name, version) → the MLflow pyfunc's predictions on ``frame``.
    expected: dict[tuple[str, int], pd.DataFrame]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    home = tmp_path_factory.mktemp("serving-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEXTANT_HOME", str(home))
        patch.delenv("SEXTANT_DATABASE_URL", raising=False)
        reset_settings()
        settings = get_settings()
        settings.ensure_dirs()
        migrate(settings.resolved_database_url)
        sample = home / "churn-small.parquet"
        pl.read_csv(EXAMPLE_CSV, try_parse_dates=True).sample(TRAIN_ROWS, seed=7).write_parquet(sample)
        with session_scope(settings.resolved_database_url) as session:
            create_dataset_version(session, name="churn", source_path=sample)
        for spec in SPECS:
            run_training(spec, settings=settings)
        tracking_client(settings)
        frame = parity_frame()
        expected = {}
        for name, versions in SERVED.items():
            for version in versions:
                pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
                columns = pyfunc.metadata.get_input_schema().input_names()
                expected[(name, version)] = pyfunc.predict(frame[columns])
        dispose_engines()
    reset_settings()
    yield Trained(settings=settings, frame=frame, expected=expected)
    # Later modules must not find MLflow pointed at this module's store.
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    folder = tmp_path_factory.mktemp("triton")
    http, grpc, metrics = free_ports(3)
    options = TritonServerOptions(
        model_repository=folder / "models",
        backend_directory=folder / "backends",
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
    )
    server = TritonServer(options, log_path=folder / "triton.log")
    server.start()
    yield server
    server.stop()
    assert not server.is_running()


@pytest.fixture(scope="module")
def client(triton: TritonServer) -> Iterator[TritonClient]:
    with TritonClient(triton.grpc_url) as triton_client:
        yield triton_client


@pytest.fixture(scope="module")
def served(trained: Trained, triton: TritonServer, client: TritonClient) -> dict[tuple[str, int], WrittenVersion]:
    """Every trained version written into the repository and loaded (churn-churned 1 and 2 side by side)."""
    repository = triton.options.model_repository
    # "auto": PyTorch versions get GPU instances where a GPU is present (KIND_CPU here).
    options = ServingOptions(max_batch_size=MAX_BATCH_SIZE, instance_kind="auto")
    written = {}
    for name, versions in SERVED.items():
        for version in versions:
            written[(name, version)] = export_model_version(
                registry_name=name, version=version, repository=repository, settings=trained.settings, options=options
            )
        config = load_config_json(repository=repository, triton_name=name, versions=versions, options=options)
        client.load_model(name, config=config, versions=versions)
    return written


def _columns(written: WrittenVersion, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {tensor.name: frame[tensor.name].to_numpy() for tensor in written.spec.inputs}


def _assert_parity(written: WrittenVersion, got: dict[str, np.ndarray], expected: pd.DataFrame) -> None:
    if written.spec.task == "regression":
        assert set(got) == {"prediction"} and got["prediction"].dtype == np.float64
        assert np.abs(got["prediction"] - expected["prediction"].to_numpy()).max() <= TOLERANCE
        return
    classes = written.spec.classes
    probabilities = expected[[f"probability_{label}" for label in classes]].to_numpy()
    assert got["probabilities"].shape == (len(expected), len(classes))
    assert np.abs(got["probabilities"] - probabilities).max() <= TOLERANCE
    assert (got["prediction"] == expected["prediction"].to_numpy()).all()


@pytest.mark.parametrize(
    ("name", "version"),
    [("churn-churned", 1), ("churn-churned", 2), ("churn-plan", 1), ("churn-monthly_charges", 1)],
    ids=["xgboost-binary", "torch-binary", "xgboost-multiclass-text-labels", "torch-regression"],
)
def test_predictions_equal_the_pyfunc(
    served: dict[tuple[str, int], WrittenVersion], client: TritonClient, trained: Trained, name: str, version: int
) -> None:
    written = served[(name, version)]
    assert client.is_model_ready(name, version)

    got = client.infer(name, version, _columns(written, trained.frame))

    _assert_parity(written, got, trained.expected[(name, version)])


def test_two_versions_side_by_side(
    served: dict[tuple[str, int], WrittenVersion], client: TritonClient, trained: Trained
) -> None:
    assert [client.model_state("churn-churned", version).state for version in (1, 2)] == ["READY", "READY"]
    assert served[("churn-churned", 1)].spec.framework == "xgboost"
    assert served[("churn-churned", 2)].spec.framework == "torch"
    rows = trained.frame.head(50)
    columns = _columns(served[("churn-churned", 1)], rows)
    first = client.infer("churn-churned", 1, columns)["probabilities"]
    second = client.infer("churn-churned", 2, columns)["probabilities"]
    assert np.abs(first - second).max() > 1e-3
    # Without a version Triton answers with the newest one served.
    latest = client.infer("churn-churned", None, columns)["probabilities"]
    assert np.array_equal(latest, second)


def test_a_large_input_goes_in_chunks_in_order(
    served: dict[tuple[str, int], WrittenVersion], client: TritonClient, trained: Trained, triton: TritonServer
) -> None:
    written = served[("churn-churned", 1)]
    rows = 50_000
    repeats = math.ceil(rows / len(trained.frame))
    frame = pd.concat([trained.frame] * repeats, ignore_index=True).head(rows)
    expected = pd.concat([trained.expected[("churn-churned", 1)]] * repeats, ignore_index=True).head(rows)
    stats = grpcclient.InferenceServerClient(triton.grpc_url)

    def requests_done() -> int:
        statistics = stats.get_inference_statistics("churn-churned", "1", as_json=True)
        return int(statistics["model_stats"][0]["inference_stats"]["success"].get("count", 0))

    before = requests_done()
    got = client.infer("churn-churned", 1, _columns(written, frame), max_in_flight=3)

    assert len(got["prediction"]) == rows
    assert requests_done() - before == math.ceil(rows / MAX_BATCH_SIZE)
    _assert_parity(written, got, expected)
    stats.close()


def test_a_model_that_fails_to_load_reports_tritons_message(
    served: dict[tuple[str, int], WrittenVersion], client: TritonClient, trained: Trained, tmp_path: Path
) -> None:
    tracking_client(trained.settings)
    source = Path(mlflow.artifacts.download_artifacts("models:/churn-plan/1", dst_path=str(tmp_path)))
    (source / "artifacts" / "xgboost_booster.json").write_text('{"learner": "truncated')
    repository = served[("churn-plan", 1)].model_dir.parent
    write_model_version(repository=repository, registry_name="churn-broken", version=1, model_dir=source)

    with pytest.raises(ModelLoadError) as failure:
        client.load_model("churn-broken")

    state = client.model_state("churn-broken", 1)
    assert state.state == "UNAVAILABLE" and not state.ready
    assert "XGBoostError" in state.reason or "xgboost" in state.reason.lower()
    assert state.reason in str(failure.value)
    assert not client.is_model_ready("churn-broken", 1)


def test_bad_requests_say_what_is_wrong(served: dict[tuple[str, int], WrittenVersion], client: TritonClient) -> None:
    written = served[("churn-plan", 1)]
    columns = _columns(written, parity_frame().head(3))
    with pytest.raises(ModelNotReadyError):
        client.infer("no-such-model", 1, columns)
    with pytest.raises(ModelNotReadyError):
        client.infer("churn-plan", 7, columns)
    with pytest.raises(InvalidInputError, match="missing input column 'region'"):
        client.infer("churn-plan", 1, {name: values for name, values in columns.items() if name != "region"})
    with pytest.raises(InvalidInputError, match="no input 'colour'"):
        client.infer("churn-plan", 1, {**columns, "colour": np.array(["red"] * 3)})
    empty = client.infer("churn-plan", 1, {name: values[:0] for name, values in columns.items()})
    assert empty["probabilities"].shape == (0, 3) and empty["prediction"].shape == (0,)


def test_unload_and_reload(served: dict[tuple[str, int], WrittenVersion], client: TritonClient) -> None:
    written = served[("churn-monthly_charges", 1)]
    config = json.loads(
        load_config_json(repository=written.model_dir.parent, triton_name=written.triton_name, versions=[1])
    )

    client.unload_model("churn-monthly_charges")
    assert not client.is_model_ready("churn-monthly_charges", 1)
    assert client.model_state("churn-monthly_charges", 1).state == "UNAVAILABLE"

    client.load_model("churn-monthly_charges", config=config, versions=[1])
    assert client.is_model_ready("churn-monthly_charges", 1)
