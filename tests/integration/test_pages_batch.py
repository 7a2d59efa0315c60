"""The Batch prediction page with AppTest: launch form, refused input, job list and output, schedules.

A real workspace (database, MLflow registry with a trained model); no Triton: launched jobs stay queued,
and a finished job is recorded through the queue as the worker would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import streamlit as st
from sqlalchemy import delete
from streamlit.testing.v1 import AppTest

from backend import batch, datasets, jobs, schedules
from backend.db import dispose_engines, migrate, session_scope
from backend.jobs.queue import claim_jobs, finish_job
from backend.models import Job
from tests.conftest import REPO_ROOT
from tests.integration.test_batch_jobs import CHURNED, prepare_workspace, use_environment

HOME = str(REPO_ROOT / "app" / "Home.py")


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("pages-batch-home")
    prepare_workspace(home, specs=[CHURNED])
    return home


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


@pytest.fixture
def workspace(trained_home: Path, sextant_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The trained workspace, emptied of jobs and schedules left by an earlier test."""
    use_environment(monkeypatch, {"SEXTANT_HOME": str(trained_home)})
    with session_scope() as session:
        for item in schedules.list_schedules(session):
            schedules.delete_schedule(session, name=item.name)
        session.execute(delete(Job))
    yield trained_home
    dispose_engines()


def open_page() -> AppTest:
    at = AppTest.from_file(HOME, default_timeout=30).run()
    at.switch_page("../pages/batch.py").run()
    assert not at.exception, at.exception
    return at


def batch_jobs() -> list[batch.BatchJobInfo]:
    with session_scope() as session:
        return batch.list_batch_jobs(session).items


def test_without_a_registered_model_the_page_points_to_training() -> None:
    migrate()
    at = open_page()
    assert at.title[0].value == "Batch prediction"
    assert "No registered model yet" in at.info[0].value
    assert "No batch jobs yet." in [caption.value for caption in at.caption]


@pytest.mark.usefixtures("workspace")
def test_launch_queues_a_pinned_job_shown_in_the_list() -> None:
    at = open_page()
    assert at.selectbox(key="batch.model").value == "churn-churned@champion"
    at.selectbox(key="batch.input.dataset").select("churn").run()
    assert at.text_input(key="batch.output_dataset.churn-predictions").value == "churn-predictions"
    at.radio(key="batch.format").set_value("csv").run()
    at.button(key="batch.launch").click().run()
    assert not at.exception, at.exception
    assert "queued (batch_predict)" in at.success[0].value
    [job] = batch_jobs()
    assert job.status == "queued" and job.job.params["model_version"] == 1
    assert job.job.params["input"] == "dataset:churn:1" and job.job.params["output_format"] == "csv"
    table = next(frame.value for frame in at.dataframe if "job" in frame.value.columns)
    assert list(table["job"]) == [job.id] and table["status"].iloc[0] == "queued"
    at.button(key=f"batch.cancel.{job.id}").click().run()
    assert batch_jobs()[0].status == "cancelled"


@pytest.mark.usefixtures("workspace")
def test_bad_input_is_refused_with_the_reason(tmp_path: Path) -> None:
    at = open_page()
    at.radio(key="batch.source").set_value("File on the server").run()
    at.text_input(key="batch.input_path").input(str(tmp_path / "missing.csv")).run()
    at.button(key="batch.launch").click().run()
    assert not at.exception
    assert at.error[0].value == f"Not launched: input file {tmp_path / 'missing.csv'} does not exist"
    at.radio(key="batch.source").set_value("Dataset").run()
    at.text_input(key="batch.output_path").input("/no/such/folder/out.csv").run()
    at.button(key="batch.launch").click().run()
    assert at.error[0].value == "Not launched: output folder /no/such/folder does not exist"
    assert batch_jobs() == []


@pytest.mark.usefixtures("workspace")
def test_a_finished_job_shows_rows_per_second_a_preview_and_a_download(tmp_path: Path) -> None:
    with session_scope() as session:
        queued = batch.submit_batch_prediction(session, model="churn-churned/1", input="dataset:churn")
        claim_jobs(session, worker_id="page-test", limit=1)
    output = tmp_path / "predictions.parquet"
    pl.DataFrame(
        {"customer_id": [f"C{i:03d}" for i in range(30)], "prediction": [i % 2 for i in range(30)]}
    ).write_parquet(output)
    with session_scope() as session:
        version = datasets.create_dataset_version(session, name="churn-predictions", source_path=output)
        result = {"rows": 30, "rows_per_second": 123456.0, "output_dataset": version.name, "output_version": 1}
        finish_job(session, job_id=queued.id, status=jobs.JobStatus.SUCCEEDED, result=result)
    at = open_page()
    table = next(frame.value for frame in at.dataframe if "job" in frame.value.columns)
    assert table["rows/s"].iloc[0] == "123,456" and table["output"].iloc[0] == "dataset:churn-predictions:1"
    assert "30 rows scored at 123,456 rows/s → dataset churn-predictions:1" in at.success[0].value
    preview = next(frame.value for frame in at.dataframe if "customer_id" in frame.value.columns)
    assert len(preview) == 20 and list(preview.columns) == ["customer_id", "prediction"]
    [download] = at.get("download_button")
    assert download.proto.label == "Download PARQUET"
    with session_scope() as session:
        assert batch.export_batch_output(session, job_id=queued.id, file_format="csv").startswith(b"customer_id,")


@pytest.mark.usefixtures("workspace")
def test_schedules_are_created_paused_resumed_and_deleted_from_the_page() -> None:
    at = open_page()
    at.text_input(key="batch.schedule.name").input("nightly-churn").run()
    at.text_input(key="batch.schedule.cron").input("0 3 * * *").run()
    at.selectbox(key="batch.schedule.input.dataset").select("churn").run()
    at.button(key="batch.schedule.create").click().run()
    assert not at.exception, at.exception
    assert at.success[0].value.startswith("Schedule nightly-churn created; next run")
    table = next(frame.value for frame in at.dataframe if "schedule" in frame.value.columns)
    assert table.iloc[0][["cron", "state", "input"]].tolist() == ["0 3 * * *", "active", "dataset:churn"]
    assert "No runs yet." in [caption.value for caption in at.caption]

    at.button(key="batch.schedule.pause").click().run()
    with session_scope() as session:
        assert schedules.get_schedule(session, name="nightly-churn").paused
    at.button(key="batch.schedule.resume").click().run()
    with session_scope() as session:
        assert not schedules.get_schedule(session, name="nightly-churn").paused
    at.button(key="batch.schedule.delete").click().run()
    assert "Schedule nightly-churn deleted (its jobs stay)." in at.success[0].value
    assert "No schedules yet." in [caption.value for caption in at.caption]

    at.text_input(key="batch.schedule.name").input("broken").run()
    at.text_input(key="batch.schedule.cron").input("every night").run()
    at.button(key="batch.schedule.create").click().run()
    assert at.error[0].value.startswith("Not created: cron expression 'every night' has 2 fields; expected 5")
