"""tracking: what MLflow tracking costs a training job, and what batching saves per metric point.

1. A tracked training job — ``backend.training.run_training`` on a dataset version: load, split,
   preprocess, train with per-round curves, evaluate, log the model with signature, register it,
   record it — vs plain ``xgboost.train`` with the same hyper-parameters on the same prepared
   matrices (the floor: training alone). The ratio is the share of the job's time spent training.
   The job tracks to the workspace's SQLite store, as jobs of `make run` do. Both run 3 times in
   turn in one process (no memory is compared here); the medians are compared.
2. 1,000 metric points through Sextant's path (``backend.tracking.BatchLogger``: ``log_batch``
   calls of up to 1,000 entities) vs one ``mlflow.log_metric`` call each, both against a real
   ``mlflow server`` started as infra/Procfile starts it (SQLite store in a temp dir), where
   per-call cost shows.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    BenchError,
    Result,
    Size,
    free_port,
    mlflow_server,
    new_mlflow_store,
    pick,
    run_measured,
    running,
    sextant_env,
    stage,
)
from bench.data import TARGET, feature_frame, write_csv

METRIC_POINTS = 1000


def spec(n_estimators: int) -> dict[str, Any]:
    return {
        "dataset": "bench",
        "target": TARGET,
        "framework": "xgboost",
        "hyperparameters": {"n_estimators": n_estimators, "learning_rate": 0.1, "max_depth": 6},
        "model_name": "bench-model",
        "seed": 42,
    }


def ingest_dataset(csv: str) -> None:
    from backend.datasets import create_dataset_version
    from backend.db import migrate, session_scope

    migrate()
    with session_scope() as session:
        create_dataset_version(session, name="bench", source_path=Path(csv))


# run_training's progress messages → the phase that starts with each.
PHASES = (
    ("validating", "validate_s"),
    ("loading", "load_and_split_s"),
    ("iteration", "train_and_evaluate_s"),
    ("logging the model", "log_model_s"),
    ("registering", "register_and_record_s"),
    ("done", ""),
)


def phase_seconds(marks: list[tuple[float, str]], end: float) -> dict[str, float]:
    """Seconds between the first message of each phase and the next phase's first message."""
    starts: list[tuple[float, str]] = []
    for moment, message in marks:
        for prefix, phase in PHASES:
            if message.startswith(prefix) and phase not in [name for _, name in starts]:
                starts.append((moment, phase))
    starts.append((end, ""))
    return {phase: round(later - moment, 3) for (moment, phase), (later, _) in itertools.pairwise(starts) if phase}


def sextant_training(n_estimators: int, marks: list[tuple[float, str]]) -> dict[str, Any]:
    from backend.training import run_training

    start = time.perf_counter()
    result = run_training(
        spec(n_estimators), progress=lambda _fraction, message: marks.append((time.perf_counter(), message))
    )
    end = time.perf_counter()
    return {"seconds": end - start, "iterations": result.iterations, "phases": phase_seconds(marks, end)}


def xgboost_params(plan: Any) -> dict[str, Any]:
    """The booster parameters ``backend.training.xgboost_trainer`` derives from the plan (binary task)."""
    hyper = plan.hyperparameters
    return {
        "eta": hyper["learning_rate"],
        "max_depth": hyper["max_depth"],
        "subsample": hyper["subsample"],
        "colsample_bytree": hyper["colsample_bytree"],
        "min_child_weight": hyper["min_child_weight"],
        "lambda": hyper["reg_lambda"],
        "alpha": hyper["reg_alpha"],
        "tree_method": "hist",
        "seed": plan.spec.seed,
        "objective": "binary:logistic",
        "eval_metric": "logloss",
    }


def plain_xgboost(plan: Any, data: Any) -> dict[str, Any]:
    import xgboost

    start = time.perf_counter()
    train = xgboost.DMatrix(data.x_train, label=data.y_train)
    validation = xgboost.DMatrix(data.x_validation, label=data.y_validation)
    booster = xgboost.train(
        xgboost_params(plan),
        train,
        num_boost_round=plan.hyperparameters["n_estimators"],
        evals=[(train, "train"), (validation, "validation")],
        early_stopping_rounds=plan.hyperparameters["early_stopping_rounds"],
        verbose_eval=False,
    )
    return {"seconds": time.perf_counter() - start, "iterations": booster.num_boosted_rounds()}


def training_comparison(csv: str, n_estimators: int, repeat: int) -> dict[str, Any]:
    """Child process: the tracked job and plain xgboost.train, alternating, ``repeat`` times each.

    One process for both (memory is not compared here): alternating runs share the machine's
    passing load alike, which separate processes one after the other would not.
    """
    from backend.db import session_scope
    from backend.training import parse_training_spec, validate_training_spec
    from backend.training.data import prepare_data

    ingest_dataset(csv)
    with session_scope() as session:
        plan = validate_training_spec(session, parse_training_spec(spec(n_estimators)))
    data = prepare_data(plan)
    runs: dict[str, list[dict[str, Any]]] = {"sextant": [], "plain": []}
    for _ in range(repeat):
        runs["sextant"].append(sextant_training(n_estimators, []))
        runs["plain"].append(plain_xgboost(plan, data))
    return runs


def batch_logger_points(tracking_uri: str, points: int) -> dict[str, Any]:
    from mlflow import MlflowClient

    from backend.tracking import BatchLogger

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = client.create_experiment("bench-batch")
    run_id = client.create_run(experiment_id).info.run_id
    start = time.perf_counter()
    batch = BatchLogger(client, run_id)
    for step in range(points):
        batch.log_metric("loss", 1 / (step + 1), step=step)
    batch.flush()
    seconds = time.perf_counter() - start
    stored = len(client.get_metric_history(run_id, "loss"))
    return {"seconds": seconds, "calls": batch.calls, "stored": stored}


def log_metric_points(tracking_uri: str, points: int) -> dict[str, Any]:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    experiment_id = mlflow.create_experiment("bench-per-point")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        start = time.perf_counter()
        for step in range(points):
            mlflow.log_metric("loss", 1 / (step + 1), step=step)
        seconds = time.perf_counter() - start
    stored = len(mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss"))
    return {"seconds": seconds, "calls": points, "stored": stored}


def logging_points(tracking_uri: str, points: int) -> dict[str, Any]:
    """Both ways, one after the other, in one client process (each makes its own experiment and run)."""
    return {
        "sextant": batch_logger_points(tracking_uri, points),
        "baseline": log_metric_points(tracking_uri, points),
    }


def run(size: Size) -> list[Result]:
    rows = pick(size, full=100_000, smoke=1_000)
    n_estimators = pick(size, full=200, smoke=10)
    points = pick(size, full=METRIC_POINTS, smoke=50)
    repeat = pick(size, full=3, smoke=1)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="sextant-bench-tracking-") as folder:
        root = Path(folder)
        csv = write_csv(feature_frame(rows), root / "train.csv")
        kwargs = {"csv": str(csv), "n_estimators": n_estimators}
        new_mlflow_store(root / "home" / "mlflow" / "mlflow.db")
        port = free_port()
        uri = f"http://127.0.0.1:{port}"
        server = mlflow_server(
            backend_store_uri=new_mlflow_store(root / "server" / "mlflow.db"),
            artifacts_dir=root / "server" / "artifacts",
            port=port,
            log_path=root / "mlflow.log",
            start=False,
        )
        # A smoke run times nothing that matters: the server boots meanwhile. A full run keeps the
        # training timings clear of the boot's CPU load.
        if size == "smoke":
            server.start()
        with running(server):
            with stage(f"tracked training job vs xgboost.train, {repeat}× each"):
                training = run_measured(
                    "bench.tracking:training_comparison", {**kwargs, "repeat": repeat},
                    env=sextant_env(root / "home"), timeout_s=400,
                ).output  # fmt: skip
            if not server.started:
                server.start()
            with stage(f"{points} metric points through mlflow server"):
                startup = server.wait_http(f"{uri}/health", timeout_s=120)
                logged = run_measured("bench.tracking:logging_points", {"tracking_uri": uri, "points": points}).output
        sextant = statistics.median(run["seconds"] for run in training["sextant"])
        plain = statistics.median(run["seconds"] for run in training["plain"])
        results.append(
            Result(
                "tracking.training_job", "s", sextant, "plain xgboost.train", plain, "lower",
                {
                    "rows": rows, "features": 20, "runs": repeat,
                    "iterations": training["sextant"][0]["iterations"],
                    "baseline_iterations": training["plain"][0]["iterations"],
                    "overhead_s": round(sextant - plain, 3),
                    "all_s": {side: [round(run["seconds"], 3) for run in training[side]] for side in training},
                    "sextant_phases": training["sextant"][-1]["phases"],
                },
            )
        )  # fmt: skip
        batched, per_point = logged["sextant"], logged["baseline"]
        for side in (batched, per_point):
            if side["stored"] != points:
                raise BenchError(f"the server stored {side['stored']} of {points} points")
        results.append(
            Result(
                "tracking.log_1000_points" if points == METRIC_POINTS else f"tracking.log_{points}_points",
                "s", batched["seconds"], "mlflow.log_metric per point", per_point["seconds"], "lower",
                {
                    "points": points, "sextant_calls": batched["calls"], "baseline_calls": per_point["calls"],
                    "ms_per_call_baseline": round(1000 * per_point["seconds"] / points, 3),
                    "mlflow_server_startup_s": round(startup, 2),
                },
            )
        )  # fmt: skip
    return results
