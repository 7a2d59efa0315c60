"""The Training page with AppTest: launch form, refused input, job list, cancel (real DB, real job queue)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from backend import datasets, jobs
from backend.db import migrate, session_scope
from tests.conftest import REPO_ROOT

HOME = str(REPO_ROOT / "app" / "Home.py")


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    migrate()
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


def open_page() -> AppTest:
    at = AppTest.from_file(HOME, default_timeout=30).run()
    at.switch_page("../pages/training.py").run()
    assert not at.exception, at.exception
    return at


def all_jobs() -> list[jobs.JobInfo]:
    with session_scope() as session:
        return jobs.list_jobs(session).items


@pytest.fixture
def churn(example_csv: Path) -> None:
    with session_scope() as session:
        datasets.create_dataset_version(session, name="churn", source_path=example_csv)


def test_without_datasets_the_page_points_to_datasets() -> None:
    at = open_page()
    assert "Upload a dataset first" in at.info[0].value


@pytest.mark.usefixtures("churn")
def test_launch_queues_a_pinned_training_job_and_cancel_works() -> None:
    at = open_page()
    assert at.selectbox(key="training.target.churn").value == "churned"
    assert at.text_input(key="training.model_name.churn.churned").value == "churn-churned"
    at.radio(key="training.framework").set_value("torch").run()
    at.button(key="training.launch").click().run()
    assert not at.exception
    assert "Job #1 queued (train)" in at.success[0].value
    [job] = all_jobs()
    assert (job.kind, job.status) == ("train", "queued")
    assert job.params["framework"] == "torch" and job.params["dataset_version"] == 1
    assert job.params["hyperparameters"]["hidden_size"] == 64
    table = next(frame.value for frame in at.dataframe if "job" in frame.value.columns)
    assert list(table["job"]) == [1] and table["status"].iloc[0] == "queued"
    at.button(key="training.cancel.1").click().run()
    assert all_jobs()[0].status == "cancelled"


@pytest.mark.usefixtures("churn")
def test_tuning_launch_carries_trials_and_search_space() -> None:
    at = open_page()
    at.toggle(key="training.tune").set_value(True).run()
    at.number_input(key="training.trials").set_value(4).run()
    at.button(key="training.launch").click().run()
    assert not at.exception
    [job] = all_jobs()
    assert job.kind == "tune"
    assert job.params["tuning"]["n_trials"] == 4
    assert "max_depth" in job.params["tuning"]["search_space"]


@pytest.mark.usefixtures("churn")
@pytest.mark.parametrize(
    ("target", "task", "message"),
    [
        ("plan", "regression", "regression needs a numeric target"),
        ("churned", "multiclass", "needs at least 3 classes"),
    ],
)
def test_refused_input_creates_no_job(target: str, task: str, message: str) -> None:
    at = open_page()
    at.selectbox(key="training.target.churn").select(target).run()
    at.selectbox(key="training.task").select(task).run()
    at.button(key="training.launch").click().run()
    assert not at.exception
    assert at.error and at.error[0].value.startswith("Not launched:")
    assert message in at.error[0].value
    assert all_jobs() == []
