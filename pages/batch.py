"""Batch prediction: score a dataset or a file with a registered model, follow the jobs, download, schedule."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from app.formatting import format_duration, format_time
from backend import batch, datasets, jobs, schedules
from backend.db import session_scope
from backend.errors import SextantError

SELECTED_KEY = "batch.selected_job"
JOBS_PAGE_KEY = "batch.jobs_page"
FLASH_KEY = "batch.flash"
JOB_PAGE_SIZE = 15
PREVIEW_ROWS = 20
LATEST = "latest"
DATASET_SOURCE = "Dataset"
FILE_SOURCE = "File on the server"
STATUS_BADGES = {
    "queued": "queued",
    "running": "running",
    "succeeded": "succeeded ✓",
    "failed": "failed ✗",
    "cancelled": "cancelled",
}
COLUMN_LABELS = {"ids": "Id columns + predictions", "all": "All input columns + predictions"}
CATCH_UP_LABELS = {"once": "Run once to catch up", "skip": "Skip missed runs"}


@st.cache_data(ttl=10, show_spinner=False)
def model_refs() -> list[str]:
    # Aliases first: a schedule that follows @champion scores whatever version it names at each run.
    return [ref for choice in batch.list_model_choices() for ref in choice.refs]


def dataset_names() -> list[str]:
    with session_scope() as session:
        return [item.name for item in datasets.list_datasets(session, limit=1000).items]


def flash(kind: str, message: str) -> None:
    st.session_state[FLASH_KEY] = (kind, message)


def show_flash() -> None:
    kind, message = st.session_state.pop(FLASH_KEY, (None, None))
    if kind == "success":
        st.success(message)
    elif kind == "error":
        st.error(message)


def pick_model(refs: list[str], key: str) -> str:
    wanted = st.query_params.get("model")
    index = refs.index(wanted) if wanted in refs else 0
    return st.selectbox("Model", refs, index=index, key=key, help="MODEL@ALIAS follows the alias; MODEL/N is fixed")


def pick_dataset_input(names: list[str], *, key: str, allow_pinned: bool = True) -> str:
    left, right = st.columns([3, 1])
    name = left.selectbox("Dataset", names, key=f"{key}.dataset")
    if not allow_pinned:
        right.text_input("Version", LATEST, disabled=True, key=f"{key}.version_fixed")
        return f"dataset:{name}"
    with session_scope() as session:
        versions = [info.version for info in datasets.list_dataset_versions(session, name=name)]
    version = right.selectbox("Version", [LATEST, *versions], key=f"{key}.version.{name}")
    return f"dataset:{name}" if version == LATEST else f"dataset:{name}:{version}"


def default_output_name(input_ref: str) -> str:
    try:
        return batch.default_output_dataset(batch.parse_input_ref(input_ref))
    except SextantError:
        return "batch-predictions"


def output_options(input_ref: str, key: str) -> dict[str, object]:
    default_name = default_output_name(input_ref)
    left, middle, right = st.columns(3)
    output_dataset = left.text_input("Output dataset", default_name, key=f"{key}.output_dataset.{default_name}")
    file_format = middle.radio("Format", batch.OUTPUT_FORMATS, horizontal=True, key=f"{key}.format")
    columns = right.radio(
        "Columns", batch.COLUMN_CHOICES, format_func=COLUMN_LABELS.get, horizontal=True, key=f"{key}.columns"
    )
    output_path = st.text_input(
        "Also write a file (optional)",
        key=f"{key}.output_path",
        placeholder="/srv/scores/churn-{date}.parquet",
        help="A path on the server; {job_id}, {date} and {time} are filled in at each run.",
    )
    return {
        "output_dataset": output_dataset,
        "output_format": file_format,
        "columns": columns,
        "output_path": output_path,
    }


def show_launch_form(refs: list[str], names: list[str]) -> None:
    model = pick_model(refs, "batch.model")
    source = st.radio("Input", [DATASET_SOURCE, FILE_SOURCE], horizontal=True, key="batch.source")
    if source == DATASET_SOURCE:
        if not names:
            st.info("No dataset yet: upload one on the Datasets page, or score a file on the server.")
            return
        input_ref = pick_dataset_input(names, key="batch.input")
    else:
        input_ref = st.text_input("CSV or Parquet file", key="batch.input_path", placeholder="/data/customers.csv")
    options = output_options(input_ref, "batch")
    if st.button("Launch", type="primary", key="batch.launch"):
        try:
            with session_scope() as session:
                info = batch.submit_batch_prediction(session, model=model, input=input_ref, **options)
        except SextantError as error:
            st.error(f"Not launched: {error}")
            return
        st.session_state[SELECTED_KEY] = info.id
        st.success(f"Job #{info.id} queued (batch_predict). It appears in the list below.")


def rows_text(info: batch.BatchJobInfo) -> str:
    if info.rows_done is None:
        return "—"
    return f"{info.rows_done:,} / {info.rows_total:,}" if info.rows_total else f"{info.rows_done:,}"


JOB_COLUMNS = {
    "job": st.column_config.NumberColumn("job", width=50),
    "status": st.column_config.TextColumn("status", width=100),
    "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, width=110),
    "rows": st.column_config.TextColumn("rows", width=130),
    "rows/s": st.column_config.TextColumn("rows/s", width=80),
    "duration": st.column_config.TextColumn("duration", width=75),
    "model": st.column_config.TextColumn("model", width=170),
}


def jobs_frame(items: list[batch.BatchJobInfo]) -> pd.DataFrame:
    scheduled = any(info.schedule_name for info in items)
    return pd.DataFrame(
        [
            {
                "job": info.id,
                "status": STATUS_BADGES.get(info.status, info.status),
                "progress": info.job.progress if info.job.progress is not None else 0.0,
                "rows": rows_text(info),
                "rows/s": f"{info.rows_per_second:,.0f}" if info.rows_per_second else "—",
                "duration": format_duration(info.job.duration_seconds),
                "model": info.model,
                "input": info.input,
                "output": info.output_ref or info.output_dataset,
                **({"schedule": info.schedule_name or ""} if scheduled else {}),
                "created": format_time(info.job.created_at),
            }
            for info in items
        ]
    )


def output_download(job_id: int, file_format: str) -> Callable[[], bytes]:
    def build() -> bytes:
        with session_scope() as session:
            return batch.export_batch_output(session, job_id=job_id, file_format=file_format)

    return build


def show_job_detail(job_id: int) -> None:
    with session_scope() as session:
        info = batch.get_batch_job(session, job_id=job_id)
    st.subheader(f"Job #{info.id} · {STATUS_BADGES.get(info.status, info.status)}")
    st.caption(f"{info.model} on {info.input} → dataset {info.output_dataset}")
    if info.job.error:
        st.error(info.job.error)
    if not info.job.is_finished:
        st.caption(info.job.progress_message or "waiting for a worker")
        if st.button("Cancel", key=f"batch.cancel.{info.id}"):
            with session_scope() as session:
                jobs.request_job_cancel(session, job_id=info.id)
            st.rerun()
        return
    if info.output_version is None:
        return
    result = info.job.result or {}
    st.success(
        f"{result.get('rows', 0):,} rows scored at {result.get('rows_per_second', 0):,.0f} rows/s → "
        f"dataset {info.output_dataset}:{info.output_version}"
        + (f" and {info.output_path}" if info.output_path else "")
    )
    with session_scope() as session:
        preview = batch.preview_batch_output(session, job_id=info.id, limit=PREVIEW_ROWS)
    st.caption(f"First {min(PREVIEW_ROWS, preview.height)} rows")
    st.dataframe(preview.to_pandas(), hide_index=True, width="stretch", key=f"batch.preview.{info.id}")
    extension = info.output_format
    st.download_button(
        f"Download {extension.upper()}",
        data=output_download(info.id, extension),
        file_name=f"{info.output_dataset}-v{info.output_version}.{extension}",
        mime="text/csv" if extension == "csv" else "application/octet-stream",
        key=f"batch.download.{info.id}",
        on_click="ignore",
        icon=":material/download:",
    )


@st.fragment(run_every=2)
def show_jobs() -> None:
    # Reruns on its own every two seconds: status, progress and rows/s stay live, the forms are left alone.
    page_number = st.session_state.get(JOBS_PAGE_KEY, 0)
    with session_scope() as session:
        page = batch.list_batch_jobs(session, offset=page_number * JOB_PAGE_SIZE, limit=JOB_PAGE_SIZE)
    if not page.items:
        st.caption("No batch jobs yet.")
        return
    event = st.dataframe(
        jobs_frame(page.items),
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="single-row",
        key="batch.jobs",
        column_config=JOB_COLUMNS,
    )
    if page.total > JOB_PAGE_SIZE:
        previous, label, following = st.columns([1, 2, 1])
        if previous.button("← Newer", disabled=page_number == 0, key="batch.jobs_prev"):
            st.session_state[JOBS_PAGE_KEY] = page_number - 1
            st.rerun(scope="fragment")
        label.caption(f"{page.total} jobs")
        last = (page_number + 1) * JOB_PAGE_SIZE >= page.total
        if following.button("Older →", disabled=last, key="batch.jobs_next"):
            st.session_state[JOBS_PAGE_KEY] = page_number + 1
            st.rerun(scope="fragment")
    rows = event.selection.rows if event and event.selection else []
    if rows:
        st.session_state[SELECTED_KEY] = page.items[rows[0]].id
    shown = {info.id for info in page.items}
    selected = st.session_state.get(SELECTED_KEY)
    show_job_detail(selected if selected in shown else page.items[0].id)


def show_schedule_form(refs: list[str], names: list[str]) -> None:
    if not names:
        st.info("Schedules score a dataset's latest version: upload a dataset first.")
        return
    left, middle, right = st.columns(3)
    name = left.text_input("Schedule name", key="batch.schedule.name", placeholder="nightly-churn")
    cron = middle.text_input(
        "Cron", "0 2 * * *", key="batch.schedule.cron", help="minute hour day-of-month month day-of-week, or @daily"
    )
    timezone = right.text_input("Time zone", "UTC", key="batch.schedule.timezone", help="e.g. Europe/Paris")
    model = pick_model(refs, "batch.schedule.model")
    input_ref = pick_dataset_input(names, key="batch.schedule.input", allow_pinned=False)
    options = output_options(input_ref, "batch.schedule")
    catch_up = st.radio(
        "Runs missed while the worker was down",
        list(CATCH_UP_LABELS),
        format_func=CATCH_UP_LABELS.get,
        horizontal=True,
        key="batch.schedule.catch_up",
    )
    if st.button("Create schedule", type="primary", key="batch.schedule.create"):
        try:
            with session_scope() as session:
                item = batch.create_batch_schedule(
                    session, name=name, cron=cron, timezone=timezone, model=model, input=input_ref,
                    catch_up=catch_up, **options,
                )  # fmt: skip
        except SextantError as error:
            st.error(f"Not created: {error}")
            return
        when = format_time(item.next_run_at) if item.next_run_at else "—"
        flash("success", f"Schedule {item.name} created; next run {when}.")
        st.rerun()


def schedules_frame(items: list[schedules.ScheduleInfo]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "schedule": item.name,
                "cron": item.cron,
                "time zone": item.timezone,
                "state": "paused" if item.paused else "active",
                "next run": format_time(item.next_run_at) if item.next_run_at else "—",
                "last run": format_time(item.last_run_at) if item.last_run_at else "—",
                "model": item.spec.get("model", ""),
                "input": item.spec.get("input", ""),
                "output": item.spec.get("output_dataset", ""),
                "catch-up": item.catch_up,
            }
            for item in items
        ]
    )


def runs_frame(runs: list[schedules.ScheduleRunInfo]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "due": format_time(run.scheduled_for),
                "fired": format_time(run.fired_at),
                "outcome": run.outcome + (" (catch-up)" if run.catch_up else ""),
                "job": run.job_id,
                "job status": STATUS_BADGES.get(run.job_status or "", run.job_status or "—"),
                "note": run.message,
            }
            for run in runs
        ]
    )


def change_schedule(name: str, action: Callable[..., object], done: str) -> None:
    try:
        with session_scope() as session:
            action(session, name=name)
    except SextantError as error:
        flash("error", str(error))
    else:
        flash("success", f"Schedule {name} {done}.")
    st.rerun()


@st.fragment(run_every=5)
def show_schedules() -> None:
    with session_scope() as session:
        items = schedules.list_schedules(session, kind=batch.BATCH_JOB_KIND)
    if not items:
        st.caption("No schedules yet.")
        return
    st.dataframe(schedules_frame(items), hide_index=True, width="stretch", key="batch.schedules")
    names = [item.name for item in items]
    chosen = st.selectbox("Schedule", names, key="batch.schedule.selected")
    item = next(entry for entry in items if entry.name == chosen)
    buttons = st.columns([1, 1, 4])
    if item.paused:
        if buttons[0].button("Resume", key="batch.schedule.resume"):
            change_schedule(item.name, schedules.resume_schedule, "resumed")
    elif buttons[0].button("Pause", key="batch.schedule.pause"):
        change_schedule(item.name, schedules.pause_schedule, "paused")
    if buttons[1].button("Delete", key="batch.schedule.delete"):
        change_schedule(item.name, schedules.delete_schedule, "deleted (its jobs stay)")
    with session_scope() as session:
        runs = schedules.list_schedule_runs(session, name=item.name)
    if runs:
        st.caption("Run history")
        st.dataframe(runs_frame(runs), hide_index=True, width="stretch", key="batch.schedule.runs")
    else:
        st.caption("No runs yet.")


st.title("Batch prediction")
st.caption("Score a dataset version or a file with a registered model on Triton; the output becomes a dataset.")
show_flash()
try:
    refs = model_refs()
except SextantError as error:
    st.error(f"The model registry is unavailable: {error}")
    refs = []
names = dataset_names()
if not refs:
    st.info("No registered model yet: train one first; batch prediction scores a model version from the registry.")
    st.page_link("../pages/training.py", label="Go to Training", icon=":material/model_training:")
else:
    with st.expander("New batch prediction job", expanded=True, icon=":material/rocket_launch:"):
        show_launch_form(refs, names)
st.subheader("Jobs")
show_jobs()
st.subheader("Schedules")
if refs:
    with st.expander("New schedule", icon=":material/schedule:"):
        show_schedule_form(refs, names)
show_schedules()
