"""MLflow helpers: batching within MLflow's limits, experiments in the workspace, UI links."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from backend.config import Settings
from backend.tracking import (
    BatchLogger,
    configure_tracking,
    get_or_create_experiment,
    model_version_url,
    run_url,
    tracking_client,
)


class RecordingClient:
    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []

    def log_batch(self, run_id: str, *, metrics: list, params: list, tags: list, synchronous: bool) -> None:
        self.batches.append({"run_id": run_id, "metrics": list(metrics), "params": list(params), "tags": list(tags)})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_curves_go_out_in_batches_of_at_most_1000() -> None:
    client = RecordingClient()
    batch = BatchLogger(client, "run-1", flush_interval_s=3600, clock=Clock())  # type: ignore[arg-type]
    batch.log_params({f"p{i}": i for i in range(30)})
    for step in range(1200):
        batch.log_metrics({"train_loss": 1.0 / (step + 1), "validation_loss": 2.0 / (step + 1)}, step=step)
    batch.flush()
    sizes = [len(b["metrics"]) + len(b["params"]) + len(b["tags"]) for b in client.batches]
    assert batch.calls == len(client.batches) == 3
    assert all(size <= 1000 for size in sizes)
    assert sum(len(b["metrics"]) for b in client.batches) == 2400
    assert [m.step for m in client.batches[0]["metrics"][:2]] == [0, 0]
    assert batch.pending == 0


def test_params_and_tags_respect_the_100_per_call_limit() -> None:
    client = RecordingClient()
    batch = BatchLogger(client, "run-1", flush_interval_s=3600, clock=Clock())  # type: ignore[arg-type]
    batch.log_params({f"p{i}": "x" * 7000 for i in range(250)})
    batch.flush()
    assert [len(b["params"]) for b in client.batches] == [100, 100, 50]
    # MLflow refuses param values over 6000 characters.
    assert all(len(p.value) <= 6000 for b in client.batches for p in b["params"])


def test_long_trainings_flush_on_an_interval() -> None:
    client = RecordingClient()
    clock = Clock()
    batch = BatchLogger(client, "run-1", flush_interval_s=10, clock=clock)  # type: ignore[arg-type]
    for step in range(5):
        clock.now = step * 4.0
        batch.log_metric("validation_loss", 0.5, step=step)
    # Sent at t=12 (steps 0-3); step 4 at t=16 waits for the next interval or flush().
    assert [len(b["metrics"]) for b in client.batches] == [4]
    batch.flush()
    assert [len(b["metrics"]) for b in client.batches] == [4, 1]


def test_ui_links(settings: Settings) -> None:
    assert run_url("3", "abc", settings=settings) == "http://127.0.0.1:5000/#/experiments/3/runs/abc"
    assert (
        model_version_url("churn model", 2, settings=settings)
        == "http://127.0.0.1:5000/#/models/churn%20model/versions/2"
    )


def test_experiments_live_in_the_workspace_and_are_reused(settings: Settings) -> None:
    uri = configure_tracking(settings)
    assert uri == f"sqlite:///{settings.mlflow_dir / 'mlflow.db'}"
    client = tracking_client(settings)
    experiment_id = get_or_create_experiment("churn / churned", client=client, settings=settings)
    assert get_or_create_experiment("churn / churned", client=client, settings=settings) == experiment_id
    location = client.get_experiment(experiment_id).artifact_location
    assert location == (settings.mlflow_artifacts_dir / "churn-churned").as_uri()
    assert Path(settings.mlflow_artifacts_dir).is_dir()

    client.delete_experiment(experiment_id)
    assert get_or_create_experiment("churn / churned", client=client, settings=settings) == experiment_id
    assert client.get_experiment(experiment_id).lifecycle_stage == "active"


@pytest.mark.parametrize("uri", ["http://mlflow.internal:5000", "https://mlflow.example.com"])
def test_a_remote_server_chooses_its_own_artifact_root(
    uri: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: dict[str, Any] = {}

    class RemoteClient:
        def get_experiment_by_name(self, name: str) -> None:
            return None

        def create_experiment(self, name: str, artifact_location: str | None = None) -> str:
            created.update(name=name, artifact_location=artifact_location)
            return "7"

    remote = settings.model_copy(update={"mlflow_tracking_uri": uri})
    assert get_or_create_experiment("x", client=RemoteClient(), settings=remote) == "7"  # type: ignore[arg-type]
    assert created == {"name": "x", "artifact_location": None}
