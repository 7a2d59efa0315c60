"""Datasets: upload, browse, profile, preview, compare versions, download."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import streamlit as st

from app.charts import correlation_heatmap, histogram_chart, top_values_chart
from app.formatting import format_bytes, format_dtype, format_number, format_time
from backend import datasets
from backend.config import get_settings
from backend.db import session_scope
from backend.errors import SextantError

LIST_PAGE_SIZE = 20
HEADER_CHOICES = {"Detect": None, "Yes": True, "No": False}
OPERATORS = ["contains", "==", "!=", ">", ">=", "<", "<="]


def open_dataset(name: str) -> None:
    st.query_params["dataset"] = name


def close_dataset() -> None:
    st.query_params.clear()


def show_upload_form() -> None:
    limit = format_bytes(get_settings().max_upload_bytes)
    with st.form("datasets.upload_form", clear_on_submit=True, border=True):
        st.markdown(f"**Upload a CSV or Parquet file** (up to {limit})")
        uploaded = st.file_uploader("File", type=["csv", "tsv", "txt", "parquet"], key="datasets.upload_file")
        left, right = st.columns([3, 1])
        name = left.text_input(
            "Dataset name",
            key="datasets.upload_name",
            placeholder="defaults to the file name",
            help="Letters, digits, '.', '_' or '-'. Uploading under an existing name adds a version.",
        )
        header = right.selectbox("First row is a header", list(HEADER_CHOICES), key="datasets.upload_header")
        submitted = st.form_submit_button("Upload", type="primary")
    if not submitted:
        return
    if uploaded is None:
        st.error("Choose a file to upload.")
        return
    dataset_name = name.strip() or Path(uploaded.name).stem
    try:
        with st.spinner(f"Validating and profiling {uploaded.name}…"), session_scope() as session:
            info = datasets.upload_dataset(
                session, name=dataset_name, stream=uploaded, filename=uploaded.name, has_header=HEADER_CHOICES[header]
            )
    except SextantError as error:
        st.error(f"Upload of {uploaded.name!r} failed: {error}. Nothing was stored.")
        return
    if info.created:
        st.success(f"Created {info.name}:{info.version} — {info.rows:,} rows × {info.columns} columns.")
    else:
        st.info(f"Same content as {info.name}:{info.version}; no new version was made.")
    st.button("Open dataset", key="datasets.open_uploaded", on_click=open_dataset, args=(info.name,))


def show_example_offer() -> None:
    st.info("This workspace has no datasets yet. Upload a file above, or start with the example churn data.")
    if st.button("Load example data", key="datasets.load_example", type="primary"):
        try:
            with st.spinner("Loading the example churn data…"), session_scope() as session:
                info = datasets.load_example_data(session)
        except SextantError as error:
            st.error(str(error))
            return
        open_dataset(info.name)
        st.rerun()


def show_browser() -> None:
    st.title("Datasets")
    with st.expander("Upload", expanded=False, icon=":material/upload:"):
        show_upload_form()
    search = st.text_input("Search", key="datasets.search", placeholder="name or description")
    page_number = st.session_state.get("datasets.list_page", 0)
    with session_scope() as session:
        page = datasets.list_datasets(
            session, search=search or None, offset=page_number * LIST_PAGE_SIZE, limit=LIST_PAGE_SIZE
        )
    if page.total == 0:
        if search:
            st.write(f"No dataset matches “{search}”.")
        else:
            show_example_offer()
        return
    header = st.columns([3, 1, 1, 1, 2, 1])
    for column, label in zip(header, ["Name", "Version", "Rows", "Columns", "Updated", ""], strict=True):
        column.markdown(f"**{label}**")
    for item in page.items:
        row = st.columns([3, 1, 1, 1, 2, 1], vertical_alignment="center")
        row[0].markdown(f"**{item.name}**" + (f"  \n{item.description}" if item.description else ""))
        row[1].write(f"v{item.latest_version} ({item.version_count})")
        row[2].write(f"{item.rows:,}")
        row[3].write(str(item.columns))
        row[4].write(format_time(item.updated_at))
        row[5].button("Open", key=f"datasets.open.{item.name}", on_click=open_dataset, args=(item.name,))
    pages = max(1, math.ceil(page.total / LIST_PAGE_SIZE))
    if pages > 1:
        previous, label, following = st.columns([1, 2, 1])
        if previous.button("← Previous", disabled=page_number == 0, key="datasets.list_prev"):
            st.session_state["datasets.list_page"] = page_number - 1
            st.rerun()
        label.write(f"Page {page_number + 1} of {pages} · {page.total} datasets")
        if following.button("Next →", disabled=page_number >= pages - 1, key="datasets.list_next"):
            st.session_state["datasets.list_page"] = page_number + 1
            st.rerun()


@st.cache_data(show_spinner=False, max_entries=64)
def cached_profile(name: str, version: int) -> dict:
    # Versions are immutable, so their profile can be cached for the life of the process.
    with session_scope() as session:
        return datasets.get_dataset_profile(session, name=name, version=version)


def export_callable(name: str, version: int, file_format: str):
    def produce() -> bytes:
        with session_scope() as session:
            return datasets.export_dataset(session, name=name, version=version, file_format=file_format)

    return produce


def show_profile(profile: dict) -> None:
    summary = pd.DataFrame(
        [
            {
                "column": column["name"],
                "type": format_dtype(column["dtype"]),
                "null %": column["null_pct"],
                "distinct": column["distinct"],
                "min": format_number(column.get("min")),
                "max": format_number(column.get("max")),
                "mean": format_number(column.get("mean")),
                "std": format_number(column.get("std")),
                "median": format_number((column.get("quantiles") or {}).get("p50")),
            }
            for column in profile["columns"]
        ]
    )
    st.dataframe(
        summary,
        hide_index=True,
        width="stretch",
        height=min(36 * (len(summary) + 1) + 4, 600),
        column_config={"null %": st.column_config.ProgressColumn("null %", min_value=0, max_value=100, format="%.1f")},
    )
    names = [column["name"] for column in profile["columns"]]
    # Open on the first numeric column: its histogram says more than an ID's top values.
    numeric = [c["name"] for c in profile["columns"] if c["kind"] == "numeric"]
    default = names.index(numeric[0]) if numeric else 0
    chosen = st.selectbox("Column", names, index=default, key="datasets.profile_column")
    column = next(c for c in profile["columns"] if c["name"] == chosen)
    left, right = st.columns([2, 1])
    with left:
        if column.get("histogram"):
            st.altair_chart(histogram_chart(column), width="stretch")
        if column.get("top_values"):
            st.altair_chart(top_values_chart(column), width="stretch")
    with right:
        stats = {key: column.get(key) for key in ("kind", "nulls", "distinct", "min", "max", "mean", "std")}
        stats.update((column.get("quantiles") or {}).items())
        st.dataframe(
            pd.DataFrame({"statistic": list(stats), "value": [format_number(v) for v in stats.values()]}),
            hide_index=True,
            width="stretch",
            height=36 * (len(stats) + 1) + 4,
        )
    if len(profile["correlation"]["columns"]) >= 2:
        st.altair_chart(correlation_heatmap(profile["correlation"]))


def show_preview(name: str, version: int, columns: list[str]) -> None:
    page_size = get_settings().page_size
    left, middle, right = st.columns([2, 1, 2])
    filter_column = left.selectbox("Filter column", ["(no filter)", *columns], key="datasets.filter_column")
    operator = middle.selectbox("Operator", OPERATORS, key="datasets.filter_operator")
    value = right.text_input("Value", key="datasets.filter_value")
    filters = []
    if filter_column != "(no filter)" and value != "":
        filters.append(datasets.RowFilter(column=filter_column, operator=operator, value=value))
    page_column, caption_column = st.columns([1, 3], vertical_alignment="bottom")
    page_number = page_column.number_input("Page", min_value=1, value=1, step=1, key="datasets.preview_page")
    try:
        with session_scope() as session:
            rows = datasets.read_dataset_rows(
                session,
                name=name,
                version=version,
                offset=(page_number - 1) * page_size,
                limit=page_size,
                filters=filters,
            )
    except SextantError as error:
        st.error(str(error))
        return
    if rows.total == 0:
        st.write("No rows match the filter.")
        return
    last = min(rows.offset + rows.frame.height, rows.total)
    caption_column.caption(f"Rows {rows.offset + 1:,}–{last:,} of {rows.total:,}" + (" (filtered)" if filters else ""))
    st.dataframe(rows.frame.to_pandas(), hide_index=True, width="stretch")


def show_versions(name: str, versions: list[datasets.DatasetVersionInfo]) -> None:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "version": v.version,
                    "rows": v.rows,
                    "columns": v.columns,
                    "source": v.source_filename,
                    "size": format_bytes(v.source_bytes),
                    "sha256": v.content_hash[:12],
                    "created": format_time(v.created_at),
                }
                for v in versions
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    if len(versions) < 2:
        st.caption("Upload another file under this name to compare schemas between versions.")
        return
    numbers = [v.version for v in versions]
    left, right = st.columns(2)
    older = left.selectbox("Compare version", numbers, index=1, key="datasets.diff_from")
    newer = right.selectbox("with version", numbers, index=0, key="datasets.diff_to")
    with session_scope() as session:
        diff = datasets.diff_dataset_schemas(session, name=name, from_version=older, to_version=newer)
    if diff.is_empty:
        st.success(f"v{older} and v{newer} have the same schema.")
        return
    changes = [{"change": "added", "column": c.name, "type": c.dtype} for c in diff.added]
    changes += [{"change": "removed", "column": c.name, "type": c.dtype} for c in diff.removed]
    changes += [{"change": "type changed", "column": n, "type": f"{a} → {b}"} for n, a, b in diff.changed]
    st.dataframe(pd.DataFrame(changes), hide_index=True, width="stretch")


def show_detail(name: str) -> None:
    try:
        with session_scope() as session:
            versions = datasets.list_dataset_versions(session, name=name)
    except SextantError as error:
        st.error(str(error))
        st.button("← All datasets", on_click=close_dataset, key="datasets.back_missing")
        return
    st.button("← All datasets", on_click=close_dataset, key="datasets.back")
    numbers = [v.version for v in versions]
    title, chooser = st.columns([4, 1], vertical_alignment="bottom")
    title.title(name)
    version = chooser.selectbox("Version", numbers, key=f"datasets.version.{name}")
    info = next(v for v in versions if v.version == version)
    metrics = st.columns(4)
    metrics[0].metric("Rows", f"{info.rows:,}")
    metrics[1].metric("Columns", info.columns)
    metrics[2].metric("Source size", format_bytes(info.source_bytes))
    metrics[3].metric("Created", f"{info.created_at.astimezone():%Y-%m-%d}", help=format_time(info.created_at))
    profile_tab, schema_tab, preview_tab, versions_tab, download_tab = st.tabs(
        ["Profile", "Schema", "Preview", "Versions", "Download"]
    )
    with profile_tab:
        show_profile(cached_profile(name, version))
    with schema_tab:
        schema = [{"column": c.name, "type": format_dtype(c.dtype), "polars type": c.dtype} for c in info.schema]
        st.dataframe(pd.DataFrame(schema), hide_index=True, width="stretch")
        st.caption("Read as: " + ", ".join(f"{key} {value!r}" for key, value in info.ingest.items()))
    with preview_tab:
        show_preview(name, version, [c.name for c in info.schema])
    with versions_tab:
        show_versions(name, versions)
    with download_tab:
        st.write("CSV cells starting with =, +, -, @ get a leading ' so spreadsheets never run them as formulas.")
        left, right = st.columns(2)
        left.download_button(
            "Download CSV",
            data=export_callable(name, version, "csv"),
            file_name=f"{name}-v{version}.csv",
            mime="text/csv",
            key="datasets.download_csv",
            on_click="ignore",
        )
        right.download_button(
            "Download Parquet",
            data=export_callable(name, version, "parquet"),
            file_name=f"{name}-v{version}.parquet",
            mime="application/vnd.apache.parquet",
            key="datasets.download_parquet",
            on_click="ignore",
        )


selected = st.query_params.get("dataset")
if selected:
    show_detail(selected)
else:
    show_browser()
