"""The Dashboard's overview service on both databases, and its page with AppTest."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from sqlalchemy.orm import Session
from streamlit.testing.v1 import AppTest

from backend import datasets, jobs
from backend.dashboard import get_workspace_overview
from backend.db import session_scope
from backend.serving.endpoints import create_endpoint
from backend.serving.request_log import RequestRecord, write_request_records
from tests.conftest import REPO_ROOT


def test_overview_counts_datasets_jobs_and_endpoint_traffic(session: Session, example_csv: Path) -> None:
    datasets.create_dataset_version(session, name="churn", source_path=example_csv)
    jobs.submit_job(session, kind="train", params={"dataset": "churn", "target": "churned"})
    create_endpoint(session, name="churn")
    write_request_records(
        session,
        records=[RequestRecord(endpoint="churn", status_code=200, latency_ms=float(ms)) for ms in (2, 4, 6)]
        + [RequestRecord(endpoint="churn", status_code=400, latency_ms=1.0, error="missing feature")],
    )
    session.commit()
    overview = get_workspace_overview(session)
    assert (overview.dataset_count, overview.version_count) == (1, 1)
    assert overview.total_rows == 11_023
    assert overview.job_counts == {"queued": 1}
    assert [job.kind for job in overview.recent_jobs] == ["train"]
    [endpoint] = overview.endpoints
    assert (endpoint.name, endpoint.serving, endpoint.state) == ("churn", "nothing", "empty")
    assert (endpoint.requests_last_hour, endpoint.errors_last_hour, endpoint.p50_ms) == (4, 1, 4.0)


def test_dashboard_page_shows_the_endpoint(database_url: str) -> None:
    st.cache_resource.clear()
    with session_scope() as session:
        create_endpoint(session, name="churn")
    at = AppTest.from_file(str(REPO_ROOT / "app" / "Home.py"), default_timeout=30).run()
    assert not at.exception
    assert "nothing" in [m.value for m in at.markdown]
    assert {metric.label: metric.value for metric in at.metric}["Jobs queued"] == "0"
