"""Dashboard: the workspace at a glance, each item linking to its page."""

from __future__ import annotations

import streamlit as st

from app.formatting import format_bytes, format_duration, format_time
from backend.dashboard import get_workspace_overview
from backend.db import session_scope

st.title("Dashboard")
with session_scope() as session:
    overview = get_workspace_overview(session)

metrics = st.columns(6)
metrics[0].metric("Datasets", overview.dataset_count)
metrics[1].metric("Dataset versions", overview.version_count)
metrics[2].metric("Rows (latest versions)", f"{overview.total_rows:,}")
metrics[3].metric("Uploaded data", format_bytes(overview.stored_source_bytes))
metrics[4].metric("Jobs running", overview.job_counts.get("running", 0))
metrics[5].metric("Jobs queued", overview.job_counts.get("queued", 0))

st.subheader("Endpoints")
if not overview.endpoints:
    st.caption("No endpoints yet. Deploy a model from the Model registry.")
for endpoint in overview.endpoints:
    row = st.columns([2, 3, 1, 2], vertical_alignment="center")
    row[0].page_link("../pages/online.py", label=endpoint.name, icon=":material/bolt:")
    row[1].write(endpoint.serving)
    row[2].write(endpoint.state)
    latency = f" · p50 {endpoint.p50_ms:.1f} ms" if endpoint.p50_ms is not None else ""
    row[3].write(f"{endpoint.requests_last_hour} requests/h · {endpoint.errors_last_hour} errors{latency}")

st.subheader("Recent dataset versions")
if not overview.recent_versions:
    st.info("No datasets yet. Upload a CSV or load the example data on the Datasets page.")
    st.page_link("../pages/datasets.py", label="Go to Datasets", icon=":material/dataset:")
for item in overview.recent_versions:
    row = st.columns([3, 1, 2, 2], vertical_alignment="center")
    row[0].page_link(
        "../pages/datasets.py",
        label=f"{item.name}  ·  v{item.version}",
        icon=":material/table:",
        query_params={"dataset": item.name},
    )
    row[1].write(f"{item.columns} columns")
    row[2].write(f"{item.rows:,} rows")
    row[3].write(format_time(item.created_at))

st.subheader("Recent jobs")
if not overview.recent_jobs:
    st.caption("No jobs yet. Launch training on the Training page.")
for job in overview.recent_jobs:
    row = st.columns([3, 1, 2, 2], vertical_alignment="center")
    batch_job = job.kind == "batch_predict"
    about = (
        f"{job.params.get('model', '')} on {job.params.get('input', '')}"
        if batch_job
        else f"{job.params.get('dataset', '')} → {job.params.get('target', '')}"
    )
    row[0].page_link(
        "../pages/batch.py" if batch_job else "../pages/training.py",
        label=f"Job #{job.id} · {job.kind} · {about}",
        icon=":material/table_view:" if batch_job else ":material/model_training:",
    )
    row[1].write(job.status)
    row[2].write(format_duration(job.duration_seconds))
    row[3].write(format_time(job.created_at))
