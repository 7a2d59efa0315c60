"""The model the serving benchmarks share: XGBoost on 20 features, trained and registered by Sextant.

Trained through ``backend.training.run_training`` (the path of a Training job) so the served model
is exactly what an analyst gets: preprocessing inside, signature, registry version. Early stopping
is set to the number of rounds and the learning rate is low, so the model keeps all its trees.
``shared_model`` trains it once per `make bench` process: online and batch use the same workspace
(each leaves it as it found it: online deletes its endpoint).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Size, new_mlflow_store, pick, run_measured, sextant_env, stage
from bench.data import TARGET, feature_frame, write_csv

MODEL_NAME = "bench-xgb"
DATASET = "bench-train"


def train_registered_model(csv: str, n_estimators: int) -> dict[str, Any]:
    """Child process entry (SEXTANT_HOME set by the parent): ingest, train, register."""
    from backend.datasets import create_dataset_version
    from backend.db import migrate, session_scope
    from backend.training import run_training

    migrate()
    with session_scope() as session:
        create_dataset_version(session, name=DATASET, source_path=Path(csv))
    start = time.perf_counter()
    result = run_training(
        {
            "dataset": DATASET,
            "target": TARGET,
            "framework": "xgboost",
            "hyperparameters": {
                "n_estimators": n_estimators,
                "learning_rate": 0.05,
                "max_depth": 6,
                "early_stopping_rounds": n_estimators,
            },
            "model_name": MODEL_NAME,
            "seed": 42,
        }
    )
    return {
        "model": result.model_name,
        "version": result.model_version,
        "model_uri": result.model_uri,
        "trees": result.best_iteration + 1,
        "train_seconds": time.perf_counter() - start,
        "test_roc_auc": result.metrics.get("test_roc_auc"),
    }


@dataclass(frozen=True)
class SharedModel:
    home: Path
    trained: dict[str, Any]

    @property
    def name(self) -> str:
        return self.trained["model"]

    @property
    def version(self) -> int:
        return self.trained["version"]


_HOMES: dict[Size, Path] = {}
_SHARED: dict[Size, SharedModel] = {}


def model_home(size: Size) -> Path:
    """The shared workspace, migrated: servers may start on it before the model is trained."""
    if size not in _HOMES:
        from bench.common import sextant_home

        folder = Path(tempfile.mkdtemp(prefix="sextant-bench-model-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        home = folder / "home"
        new_mlflow_store(home / "mlflow" / "mlflow.db")
        with sextant_home(home):
            from backend.db import migrate

            migrate()
        _HOMES[size] = home
    return _HOMES[size]


def shared_model(size: Size) -> SharedModel:
    """The workspace holding the registered model (trained on first use in this process)."""
    if size not in _SHARED:
        rows = pick(size, full=50_000, smoke=2_000)
        n_estimators = pick(size, full=200, smoke=20)
        home = model_home(size)
        csv = write_csv(feature_frame(rows, seed=1), home.parent / "train.csv")
        with stage(f"train and register the model ({rows:,} rows, {n_estimators} trees)"):
            trained = run_measured(
                "bench.model:train_registered_model",
                {"csv": str(csv), "n_estimators": n_estimators},
                env=sextant_env(home),
                timeout_s=300,
            ).output
        csv.unlink()
        _SHARED[size] = SharedModel(home, trained)
    return _SHARED[size]


def load_predictor(model: str, version: int) -> Any:
    """The registered version's pyfunc and its ``TabularPredictor`` (preprocessor + booster)."""
    import mlflow.pyfunc

    pyfunc = mlflow.pyfunc.load_model(f"models:/{model}/{version}")
    return pyfunc, pyfunc.unwrap_python_model().predictor
