"""How the Experiments page's queries scale: one page of runs from an experiment with N runs.

Seeds N runs (params + metrics) into a fresh SQLite MLflow store, then times Sextant's paged,
server-sorted query (what the page does) against the baseline of loading every run
(`search_runs` with no limit, what a naive table does), and also reports MLflow's own
metric-sorted `search_runs` page. Prints one JSON line.

    python bench/experiments_runs.py [--runs 10000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus

from backend import experiments


def seed(client: MlflowClient, experiment_id: str, runs: int) -> None:
    for index in range(runs):
        run = client.create_run(experiment_id, run_name=f"run-{index:05d}")
        client.log_batch(
            run.info.run_id,
            params=[Param("max_depth", str(3 + index % 6)), Param("learning_rate", f"{0.01 + index % 10 / 100:.2f}")],
            metrics=[Metric("validation_auc", 0.5 + (index % 997) / 2000, 0, 0), Metric("validation_loss", 0.7, 0, 0)],
        )
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FINISHED))


def timed(function: Callable[[], object], repeat: int = 5) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        client = MlflowClient(tracking_uri=f"sqlite:///{Path(folder) / 'mlflow.db'}")
        experiment_id = client.create_experiment("bench", artifact_location=str(Path(folder) / "artifacts"))
        start = time.perf_counter()
        seed(client, experiment_id, args.runs)
        seed_seconds = time.perf_counter() - start

        def first_page() -> experiments.RunsPage:
            return experiments.search_runs_page(
                client, experiment_id=experiment_id, sort_by="metrics.validation_auc", page_size=50
            )

        page = first_page()
        sextant = timed(first_page)
        second = timed(
            lambda: experiments.search_runs_page(
                client, experiment_id=experiment_id, sort_by="metrics.validation_auc", page_size=50,
                page_token=page.next_page_token,
            )
        )  # fmt: skip
        baseline = timed(lambda: client.search_runs([experiment_id], max_results=50_000), repeat=2)
        mlflow_sorted_page = timed(
            lambda: client.search_runs([experiment_id], max_results=50, order_by=["metrics.`validation_auc` DESC"]),
            repeat=2,
        )
    print(
        json.dumps(
            {
                "name": "experiments_page_query",
                "unit": "seconds",
                "runs": args.runs,
                "seed_seconds": round(seed_seconds, 1),
                "sextant": round(sextant, 4),
                "sextant_next_page": round(second, 4),
                "baseline_name": "load every run",
                "baseline": round(baseline, 4),
                "ratio": round(baseline / sextant, 1),
                "mlflow_search_sorted_page": round(mlflow_sorted_page, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
