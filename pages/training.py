"""Training: launch training and tuning jobs, follow them live, cancel or retry them."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from app.formatting import format_duration, format_time
from backend import datasets, jobs
from backend.config import get_settings
from backend.db import session_scope
from backend.errors import SextantError
from backend.training import (
    FRAMEWORKS,
    default_hyperparameters,
    default_model_name,
    default_search_space,
    launch_training_job,
)

SELECTED_KEY = "training.selected_job"
JOB_PAGE_SIZE = 15
STATUS_BADGES = {
    "queued": "queued",
    "running": "running",
    "succeeded": "succeeded ✓",
    "failed": "failed ✗",
    "cancelled": "cancelled",
}
TRAINING_KINDS = ("train", "tune")


def dataset_names() -> list[str]:
    with session_scope() as session:
        return [item.name for item in datasets.list_datasets(session, limit=1000).items]


def search_space_editor(framework: str) -> dict[str, dict[str, Any]]:
    defaults = default_search_space(framework)
    frame = pd.DataFrame(
        [
            {"parameter": name, "type": item.type, "low": item.low, "high": item.high, "log": item.log}
            for name, item in defaults.items()
            if item.type != "categorical"
        ]
    )
    edited = st.data_editor(
        frame,
        hide_index=True,
        width="stretch",
        num_rows="dynamic",
        key=f"training.search_space.{framework}",
        column_config={"type": st.column_config.SelectboxColumn("type", options=["int", "float"], required=True)},
    )
    space = {
        row["parameter"]: {"type": row["type"], "low": row["low"], "high": row["high"], "log": bool(row["log"])}
        for row in edited.to_dict("records")
        if row.get("parameter")
    }
    # Categorical ranges are not editable in a grid; keep the defaults.
    space.update({name: item.model_dump() for name, item in defaults.items() if item.type == "categorical"})
    return space


def hyperparameter_editor(framework: str) -> dict[str, Any]:
    defaults = default_hyperparameters(framework)
    frame = pd.DataFrame({"parameter": list(defaults), "value": [str(v) for v in defaults.values()]})
    edited = st.data_editor(
        frame, hide_index=True, width="stretch", disabled=["parameter"], key=f"training.hyperparameters.{framework}"
    )
    values: dict[str, Any] = {}
    for row in edited.to_dict("records"):
        default = defaults[row["parameter"]]
        text = str(row["value"]).strip()
        # Values come back as text; convert to the default's type so validation sees numbers.
        try:
            values[row["parameter"]] = type(default)(float(text)) if isinstance(default, int) else type(default)(text)
        except ValueError:
            values[row["parameter"]] = text
    return values


def show_launch_form() -> None:
    names = dataset_names()
    if not names:
        st.info("Upload a dataset first: training reads a dataset version.")
        st.page_link("../pages/datasets.py", label="Go to Datasets", icon=":material/dataset:")
        return
    left, middle, right = st.columns(3)
    dataset = left.selectbox("Dataset", names, key="training.dataset")
    with session_scope() as session:
        versions = datasets.list_dataset_versions(session, name=dataset)
    version = middle.selectbox("Version", [v.version for v in versions], key=f"training.version.{dataset}")
    info = next(v for v in versions if v.version == version)
    columns = [c.name for c in info.schema]
    default_target = columns.index("churned") if "churned" in columns else len(columns) - 1
    target = right.selectbox("Target column", columns, index=default_target, key=f"training.target.{dataset}")

    left, middle, right = st.columns(3)
    framework = left.radio(
        "Framework", FRAMEWORKS, horizontal=True, key="training.framework",
        format_func=lambda f: {"xgboost": "XGBoost", "torch": "PyTorch MLP"}[f],
    )  # fmt: skip
    task = middle.selectbox("Task", ["auto", "binary", "multiclass", "regression"], key="training.task")
    model_name = right.text_input(
        "Register as model", value=default_model_name(dataset, target), key=f"training.model_name.{dataset}.{target}"
    )
    tune = st.toggle("Tune hyper-parameters with Optuna", key="training.tune")
    tuning: dict[str, Any] | None = None
    if tune:
        left, right = st.columns(2)
        trials = left.number_input("Trials", min_value=1, max_value=500, value=10, key="training.trials")
        timeout = right.number_input(
            "Time limit (minutes, 0 = none)", min_value=0, max_value=24 * 60, value=0, key="training.timeout"
        )
        st.caption("Search space (log = sample on a log scale)")
        tuning = {
            "n_trials": int(trials),
            "timeout_seconds": float(timeout) * 60 or None,
            "search_space": search_space_editor(framework),
        }
    with st.expander("Advanced: hyper-parameters, split and seed"):
        hyperparameters = {} if tune else hyperparameter_editor(framework)
        if tune:
            st.caption("A tuning job searches the hyper-parameters above; the split and seed apply.")
        left, middle, right = st.columns(3)
        validation = left.number_input("Validation fraction", 0.05, 0.5, 0.15, 0.05, key="training.validation")
        test = middle.number_input("Test fraction", 0.05, 0.5, 0.15, 0.05, key="training.test")
        seed = right.number_input("Seed", 0, 2**31 - 1, 42, key="training.seed")
    if st.button("Launch", type="primary", key="training.launch"):
        spec = {
            "dataset": dataset,
            "dataset_version": version,
            "target": target,
            "framework": framework,
            "task": task,
            "model_name": model_name.strip() or None,
            "hyperparameters": hyperparameters,
            "validation_fraction": validation,
            "test_fraction": test,
            "seed": int(seed),
            "tuning": tuning,
        }
        try:
            with session_scope() as session:
                job = launch_training_job(session, spec=spec, tune=tune)
        except SextantError as error:
            st.error(f"Not launched: {error}")
            return
        st.session_state[SELECTED_KEY] = job.id
        st.success(f"Job #{job.id} queued ({job.kind}). It appears in the list below.")


def jobs_frame(items: list[jobs.JobInfo]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "job": job.id,
                "kind": job.kind,
                "status": STATUS_BADGES.get(job.status, job.status),
                "dataset": f"{job.params.get('dataset')}:{job.params.get('dataset_version') or 'latest'}",
                "target": job.params.get("target"),
                "framework": job.params.get("framework"),
                "progress": job.progress if job.progress is not None else 0.0,
                "message": job.error or job.progress_message,
                "duration": format_duration(job.duration_seconds),
                "created": format_time(job.created_at),
            }
            for job in items
        ]
    )


def show_job_detail(job_id: int) -> None:
    with session_scope() as session:
        job = jobs.get_job(session, job_id=job_id)
        log = jobs.read_job_log(session, job_id=job_id)
    st.subheader(f"Job #{job.id} · {job.kind} · {STATUS_BADGES.get(job.status, job.status)}")
    if job.error:
        st.error(job.error)
    result = job.result or {}
    if result.get("mlflow_run_url"):
        st.link_button("Open the run in MLflow", result["mlflow_run_url"])
    if result.get("model_name"):
        st.success(f"Registered model {result['model_name']} version {result.get('model_version')}")
    if result.get("test_metrics"):
        st.dataframe(pd.DataFrame([result["test_metrics"]]).T.rename(columns={0: "test"}), width="content")
    buttons = st.columns(4)
    if not job.is_finished and buttons[0].button("Cancel", key=f"training.cancel.{job.id}"):
        with session_scope() as session:
            jobs.request_job_cancel(session, job_id=job.id)
        st.rerun()
    if job.is_finished and buttons[0].button("Retry", key=f"training.retry.{job.id}"):
        with session_scope() as session:
            st.session_state[SELECTED_KEY] = jobs.retry_job(session, job_id=job.id).id
        st.rerun()
    st.caption("Log (live while the job runs)")
    lines = log.text.splitlines()
    st.code("\n".join(lines[-200:]) or "(no output yet)", language="log")


@st.fragment(run_every=2)
def show_jobs() -> None:
    # A fragment reruns on its own every two seconds: status, progress and logs stay live
    # while the rest of the page (the form) is left alone.
    page_number = st.session_state.get("training.jobs_page", 0)
    with session_scope() as session:
        page = jobs.list_jobs(session, offset=page_number * JOB_PAGE_SIZE, limit=JOB_PAGE_SIZE)
    items = [job for job in page.items if job.kind in TRAINING_KINDS]
    if not items:
        st.caption("No training jobs yet.")
        return
    event = st.dataframe(
        jobs_frame(items),
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="single-row",
        key="training.jobs",
        column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0)},
    )
    if page.total > JOB_PAGE_SIZE:
        previous, label, following = st.columns([1, 2, 1])
        if previous.button("← Newer", disabled=page_number == 0, key="training.jobs_prev"):
            st.session_state["training.jobs_page"] = page_number - 1
            st.rerun(scope="fragment")
        label.caption(f"{page.total} jobs")
        if following.button("Older →", disabled=(page_number + 1) * JOB_PAGE_SIZE >= page.total,
                            key="training.jobs_next"):  # fmt: skip
            st.session_state["training.jobs_page"] = page_number + 1
            st.rerun(scope="fragment")
    rows = event.selection.rows if event and event.selection else []
    if rows:
        st.session_state[SELECTED_KEY] = items[rows[0]].id
    selected = st.session_state.get(SELECTED_KEY) or items[0].id
    show_job_detail(selected)


st.title("Training")
st.caption(f"Runs are tracked in MLflow: {get_settings().mlflow_ui_url}")
with st.expander("New training job", expanded=True, icon=":material/rocket_launch:"):
    show_launch_form()
st.subheader("Jobs")
show_jobs()
