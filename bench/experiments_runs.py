"""How the Experiments page's queries scale: one page of runs from an experiment with N runs.

Seeds N runs (params + metrics) into an MLflow SQLite store, then times Sextant's paged,
server-sorted query (what the page does) against the baseline of loading every run
(`search_runs` with no limit, what a naive table does), and also reports MLflow's own
metric-sorted `search_runs` page. `bench.portal` runs it over the store it seeds; alone:

    python -m bench.experiments_runs [--runs 10000]

Seeding: through ``MlflowClient`` a run costs three calls (create, log_batch, terminate), each its
own transaction: 10,000 runs took ≈ 2 minutes here. ``seed_runs`` writes the same rows with
MLflow's own ORM classes in one transaction (≈ 1 s); ``check_seeding`` compares a run seeded each
way field by field, so the shortcut stays honest when MLflow's schema changes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import LifecycleStage, Metric, Param, RunStatus, SourceType
from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME
from sqlalchemy import create_engine, insert

from bench.common import Result, median_seconds, new_mlflow_store

BASE_TIME_MS = 1_767_225_600_000
DURATION_MS = 42_000


def run_name(index: int) -> str:
    return f"run-{index:05d}"


def run_params(index: int) -> dict[str, str]:
    return {"max_depth": str(3 + index % 6), "learning_rate": f"{0.01 + index % 10 / 100:.2f}"}


def run_metrics(index: int) -> dict[str, float]:
    return {"validation_auc": 0.5 + (index % 997) / 2000, "validation_loss": 0.7 - (index % 991) / 3000}


def start_time(index: int) -> int:
    return BASE_TIME_MS + index * 60_000


def seed_runs_with_client(client: MlflowClient, experiment_id: str, indexes: range) -> list[str]:
    """The public-API way: three tracking calls per run."""
    run_ids = []
    for index in indexes:
        run = client.create_run(experiment_id, start_time=start_time(index), run_name=run_name(index))
        client.log_batch(
            run.info.run_id,
            params=[Param(key, value) for key, value in run_params(index).items()],
            metrics=[Metric(key, value, start_time(index), 0) for key, value in run_metrics(index).items()],
        )
        client.set_terminated(
            run.info.run_id, RunStatus.to_string(RunStatus.FINISHED), end_time=start_time(index) + DURATION_MS
        )
        run_ids.append(run.info.run_id)
    return run_ids


def seed_runs(tracking_uri: str, experiment_id: str, indexes: range) -> list[str]:
    """The same rows as ``seed_runs_with_client`` (runs, tags, params, metrics, latest metrics) in one transaction."""
    client = MlflowClient(tracking_uri=tracking_uri)
    # Creates or upgrades the schema before we write to it.
    artifact_root = client.get_experiment(experiment_id).artifact_location.rstrip("/")
    runs, tags, params, metrics = [], [], [], []
    run_ids = []
    for index in indexes:
        run_id = uuid.uuid4().hex
        run_ids.append(run_id)
        started = start_time(index)
        runs.append(
            {
                "run_uuid": run_id,
                "name": run_name(index),
                "artifact_uri": f"{artifact_root}/{run_id}/artifacts",
                "experiment_id": int(experiment_id),
                "source_type": SourceType.to_string(SourceType.UNKNOWN),
                "source_name": "",
                "entry_point_name": "",
                "user_id": "unknown",
                "status": RunStatus.to_string(RunStatus.FINISHED),
                "start_time": started,
                "end_time": started + DURATION_MS,
                "deleted_time": None,
                "source_version": "",
                "lifecycle_stage": LifecycleStage.ACTIVE,
            }
        )
        tags.append({"run_uuid": run_id, "key": MLFLOW_RUN_NAME, "value": run_name(index)})
        params.extend({"run_uuid": run_id, "key": k, "value": v} for k, v in run_params(index).items())
        metrics.extend(
            {"run_uuid": run_id, "key": k, "value": v, "timestamp": started, "step": 0, "is_nan": False}
            for k, v in run_metrics(index).items()
        )
    engine = create_engine(tracking_uri)
    try:
        with engine.begin() as connection:
            connection.execute(insert(SqlRun.__table__), runs)
            connection.execute(insert(SqlTag.__table__), tags)
            connection.execute(insert(SqlParam.__table__), params)
            connection.execute(insert(SqlMetric.__table__), metrics)
            connection.execute(insert(SqlLatestMetric.__table__), metrics)
    finally:
        engine.dispose()
    return run_ids


def _comparable(client: MlflowClient, run_id: str) -> dict[str, Any]:
    run = client.get_run(run_id)
    info = run.info
    return {
        "info": {
            key: getattr(info, key)
            for key in ("run_name", "status", "start_time", "end_time", "lifecycle_stage", "user_id", "experiment_id")
        },
        "artifact_uri": info.artifact_uri.replace(run_id, "<id>"),
        "params": run.data.params,
        "metrics": run.data.metrics,
        "tags": run.data.tags,
        "history": {key: [(m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key)]
                    for key in run.data.metrics},
    }  # fmt: skip


def check_seeding(folder: Path) -> None:
    """Seed one run each way into a scratch store and require both to read back the same."""
    uri = new_mlflow_store(folder / "seeding-check.db")
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("check", artifact_location=str(folder / "check-artifacts"))
    fast = seed_runs(uri, experiment_id, range(7, 8))[0]
    slow = seed_runs_with_client(client, experiment_id, range(7, 8))[0]
    if _comparable(client, fast) != _comparable(client, slow):
        raise RuntimeError(
            f"fast seeding differs from MlflowClient's:\n{_comparable(client, fast)}\n{_comparable(client, slow)}"
        )


def query_result(client: MlflowClient, experiment_id: str, *, runs: int, seed_seconds: float) -> Result:
    from backend import experiments

    def first_page() -> experiments.RunsPage:
        return experiments.search_runs_page(
            client, experiment_id=experiment_id, sort_by="metrics.validation_auc", page_size=50
        )

    page = first_page()
    if page.total != runs:
        raise RuntimeError(f"the experiment holds {page.total} runs, expected {runs}")
    sextant = median_seconds(first_page, repeat=5)
    second = median_seconds(
        lambda: experiments.search_runs_page(
            client, experiment_id=experiment_id, sort_by="metrics.validation_auc", page_size=50,
            page_token=page.next_page_token,
        ),
        repeat=5,
    )  # fmt: skip
    baseline = median_seconds(lambda: client.search_runs([experiment_id], max_results=50_000), repeat=2)
    mlflow_sorted_page = median_seconds(
        lambda: client.search_runs([experiment_id], max_results=50, order_by=["metrics.`validation_auc` DESC"]),
        repeat=2,
    )
    return Result(
        "experiments.page_query", "s", sextant, "load every run (search_runs)", baseline, "lower",
        {
            "runs": runs, "sextant_next_page_s": round(second, 4),
            "mlflow_search_sorted_page_s": round(mlflow_sorted_page, 4), "seed_seconds": round(seed_seconds, 2),
        },
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        client = MlflowClient(tracking_uri=uri)
        experiment_id = client.create_experiment("bench", artifact_location=str(Path(folder) / "artifacts"))
        check_seeding(Path(folder))
        start = time.perf_counter()
        seed_runs(uri, experiment_id, range(args.runs))
        result = query_result(client, experiment_id, runs=args.runs, seed_seconds=time.perf_counter() - start)
    print(json.dumps(result.as_dict()))


if __name__ == "__main__":
    main()
