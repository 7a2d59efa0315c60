"""``sextant batch-predict`` and ``sextant schedules`` against a real registry, Triton and worker process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner, Result

from backend.cli import app
from backend.db import dispose_engines
from tests.conftest import REPO_ROOT
from tests.integration.test_batch_jobs import CHURNED, prepare_workspace, triton_for, use_environment

runner = CliRunner()


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("cli-batch-home")
    prepare_workspace(home, specs=[CHURNED])
    with triton_for(home, home.parent) as env:
        yield env | {"SEXTANT_WORKER_POLL_SECONDS": "0.2"}


@pytest.fixture(autouse=True)
def in_workspace(environment: dict[str, str], sextant_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    use_environment(monkeypatch, environment)
    yield
    dispose_engines()


@pytest.fixture
def worker(environment: dict[str, str], tmp_path: Path) -> Iterator[None]:
    with (tmp_path / "worker.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "backend.jobs.worker"],
            cwd=REPO_ROOT,
            env=os.environ | environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sextant(*args: str) -> Result:
    return runner.invoke(app, list(args))


def json_of(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.usefixtures("worker")
def test_batch_predict_waits_printing_progress(tmp_path: Path) -> None:
    output = tmp_path / "scores-{job_id}.csv"
    result = sextant(
        "batch-predict", "--model", "churn-churned@champion", "--input", "dataset:churn", "--output", str(output),
        "--wait",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "queued job 1 (batch_predict): churn-churned@champion (v1) on dataset:churn:1; waiting…" in result.stderr
    assert "job 1: 400 of 400 rows ·" in result.stderr
    assert "job 1: succeeded — 400 rows in" in result.stdout
    assert "output dataset: churn-predictions:1" in result.stdout
    written = tmp_path / "scores-1.csv"
    assert f"output file: {written} (csv)" in result.stdout
    frame = pl.read_csv(written)
    assert frame.columns == ["customer_id", "prediction", "probability_0", "probability_1"] and frame.height == 400

    as_json = json_of(
        sextant(
            "batch-predict",
            "--model",
            "churn-churned/1",
            "--input",
            "dataset:churn:1",
            "--output",
            str(tmp_path / "all.parquet"),
            "--all-columns",
            "--dataset",
            "churn-scored",
            "--wait",
            "--json",
        )
    )
    assert as_json["status"] == "succeeded" and as_json["output_version"] == 1 and as_json["rows_done"] == 400
    assert as_json["result"]["output_format"] == "parquet" and as_json["output_dataset"] == "churn-scored"
    assert pl.read_parquet(tmp_path / "all.parquet").width == 14 + 3


def test_batch_predict_without_wait_queues_and_refuses_bad_input(tmp_path: Path) -> None:
    queued = json_of(
        sextant(
            "batch-predict",
            "--model",
            "churn-churned@champion",
            "--input",
            "dataset:churn",
            "--output",
            str(tmp_path / "x.parquet"),
            "--id-column",
            "customer_id",
            "--json",
        )
    )
    assert queued["status"] == "queued" and queued["model_version"] == 1 and queued["id_columns"] == ["customer_id"]
    text = sextant(
        "batch-predict", "--model", "churn-churned/1", "--input", "dataset:churn", "--output", str(tmp_path / "y.csv")
    )
    assert text.exit_code == 0 and "follow it with `sextant jobs logs" in text.stdout

    alias = sextant(
        "batch-predict",
        "--model",
        "churn-churned@gold",
        "--input",
        "dataset:churn",
        "--output",
        str(tmp_path / "z.csv"),
        "--json",
    )
    assert alias.exit_code == 1
    assert json.loads(alias.stdout) == {
        "error": "model 'churn-churned' has no alias 'gold'; its aliases: @champion (v1)"
    }
    missing = sextant(
        "batch-predict",
        "--model",
        "churn-churned/1",
        "--input",
        str(tmp_path / "nope.csv"),
        "--output",
        str(tmp_path / "z.csv"),
    )
    assert missing.exit_code == 1 and f"error: input file {tmp_path / 'nope.csv'} does not exist" in missing.stderr
    folder = sextant(
        "batch-predict", "--model", "churn-churned/1", "--input", "dataset:churn", "--output", "/no/such/dir/z.csv"
    )
    assert folder.exit_code == 1 and "error: output folder /no/such/dir does not exist" in folder.stderr


def test_schedules_create_list_show_pause_resume_delete() -> None:
    created = json_of(
        sextant(
            "schedules",
            "create",
            "nightly",
            "--cron",
            "0 2 * * *",
            "--model",
            "churn-churned@champion",
            "--input",
            "dataset:churn",
            "--timezone",
            "Europe/Paris",
            "--catch-up",
            "skip",
            "--json",
        )
    )
    assert created["cron"] == "0 2 * * *" and created["catch_up"] == "skip" and created["next_run_at"]
    assert created["spec"] == {
        "model": "churn-churned@champion",
        "input": "dataset:churn",
        "output_dataset": "churn-predictions",
        "output_format": "parquet",
        "columns": "ids",
    }
    listed = sextant("schedules", "list")
    assert listed.exit_code == 0
    assert "nightly" in listed.stdout and "Europe/Paris" in listed.stdout and "active" in listed.stdout
    shown = json_of(sextant("schedules", "show", "nightly", "--json"))
    assert len(shown["upcoming"]) == 5 and shown["runs"] == []
    assert "history: none yet" in sextant("schedules", "show", "nightly").stdout

    paused = json_of(sextant("schedules", "pause", "nightly", "--json"))
    assert paused["paused"] and paused["next_run_at"] is None
    assert "next runs: - (paused)" in sextant("schedules", "show", "nightly").stdout
    resumed = sextant("schedules", "resume", "nightly")
    assert resumed.exit_code == 0 and "schedule nightly: active; next run" in resumed.stdout
    assert sextant("schedules", "delete", "nightly").stdout.strip() == "deleted schedule nightly"
    assert json_of(sextant("schedules", "list", "--json")) == {"schedules": []}

    bad_cron = sextant(
        "schedules", "create", "x", "--cron", "0 2 * *", "--model", "churn-churned/1", "--input", "dataset:churn"
    )
    assert bad_cron.exit_code == 1 and "has 4 fields; expected 5" in bad_cron.stderr
    bad_model = sextant(
        "schedules", "create", "x", "--cron", "@daily", "--model", "other@champion", "--input", "dataset:churn"
    )
    assert bad_model.exit_code == 1 and "no registered model named 'other'" in bad_model.stderr
    unknown = sextant("schedules", "pause", "ghost")
    assert unknown.exit_code == 1 and "schedule 'ghost' does not exist" in unknown.stderr
