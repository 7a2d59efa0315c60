"""A real worker process fires a real schedule: the batch job runs on Triton and its output appears as a dataset."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from backend import batch, datasets, schedules
from backend.db import dispose_engines, session_scope
from backend.lineage import list_executions
from backend.models import utcnow
from tests.conftest import REPO_ROOT
from tests.integration.test_batch_jobs import CHURNED, prepare_workspace, triton_for, use_environment


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("schedules-home")
    prepare_workspace(home, specs=[CHURNED])
    with triton_for(home, home.parent) as env:
        yield env | {"SEXTANT_WORKER_POLL_SECONDS": "0.2"}


@pytest.fixture(autouse=True)
def in_workspace(environment: dict[str, str], sextant_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    use_environment(monkeypatch, environment)
    yield
    dispose_engines()


@pytest.fixture
def worker(environment: dict[str, str], tmp_path: Path) -> Iterator[Path]:
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "backend.jobs.worker", "--concurrency", "1"],
            cwd=REPO_ROOT,
            env=os.environ | environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield log
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_worker_fires_a_missed_nightly_run_once(worker: Path) -> None:
    now = utcnow()
    due = now - timedelta(minutes=5)
    # Created two days ago, due daily five minutes ago: yesterday's and today's runs were missed.
    with session_scope() as session:
        created = batch.create_batch_schedule(
            session,
            name="nightly-churn",
            cron=f"{due.minute} {due.hour} * * *",
            model="churn-churned@champion",
            input="dataset:churn",
            now=now - timedelta(days=2),
        )
        batch.create_batch_schedule(
            session, name="paused", cron="* * * * *", model="churn-churned/1", input="dataset:churn",
            output_dataset="never-scored", now=now - timedelta(days=1),
        )  # fmt: skip
        schedules.pause_schedule(session, name="paused")
    assert created.next_run_at is not None and created.next_run_at < now

    deadline = time.monotonic() + 90
    while True:
        with session_scope() as session:
            runs = schedules.list_schedule_runs(session, name="nightly-churn")
        if runs and runs[0].job_status in ("succeeded", "failed", "cancelled"):
            break
        assert time.monotonic() < deadline, f"no finished run; worker log:\n{worker.read_text()}"
        time.sleep(0.3)

    [run] = runs
    assert run.job_status == "succeeded", worker.read_text()
    assert (run.outcome, run.catch_up, run.missed_runs) == ("submitted", True, 2)
    assert run.scheduled_for == due.replace(second=0, microsecond=0)
    with session_scope() as session:
        info = batch.get_batch_job(session, job_id=run.job_id)
        schedule = schedules.get_schedule(session, name="nightly-churn")
        output = datasets.get_dataset_version(session, name="churn-predictions")
        [execution] = list_executions(session, job_id=run.job_id)
        assert schedules.list_schedule_runs(session, name="paused") == []
        assert datasets.list_datasets(session, search="never-scored").total == 0
    assert info.schedule_name == "nightly-churn" and info.output_ref == "dataset:churn-predictions:1"
    assert (info.job.result or {})["model_version"] == 1 and output.rows == 400
    assert [artifact.uri for artifact in execution.inputs] == ["models:/churn-churned/1", "dataset:churn:1"]
    assert execution.properties["schedule"] == "nightly-churn"
    assert schedule.next_run_at is not None and schedule.next_run_at > now + timedelta(hours=23)
    assert schedule.last_run_at is not None
    assert "schedule nightly-churn: submitted job" in worker.read_text()
