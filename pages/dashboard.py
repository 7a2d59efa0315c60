"""Dashboard: the workspace at a glance, each item linking to its page."""

from __future__ import annotations

import streamlit as st

from app.formatting import format_bytes, format_time
from backend.dashboard import get_workspace_overview
from backend.db import session_scope

st.title("Dashboard")
with session_scope() as session:
    overview = get_workspace_overview(session)

metrics = st.columns(4)
metrics[0].metric("Datasets", overview.dataset_count)
metrics[1].metric("Dataset versions", overview.version_count)
metrics[2].metric("Rows (latest versions)", f"{overview.total_rows:,}")
metrics[3].metric("Uploaded data", format_bytes(overview.stored_source_bytes))

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
