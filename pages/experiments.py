"""Experiments: runs table paged on the server, diff-only comparison, curves, Optuna study charts."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.charts import (
    importances_chart,
    metric_curves_chart,
    optimization_history_chart,
    parallel_coordinates_chart,
)
from backend import experiments
from backend.config import get_settings
from backend.errors import SextantError

PAGE_SIZE = 50
TOKENS_KEY = "experiments.page_tokens"
SORT_ATTRIBUTES = ["start_time", "end_time", "run_name", "status"]


@st.cache_resource
def client() -> experiments.MlflowClient:  # one client for the life of the portal process
    return experiments.mlflow_client()


def reset_paging() -> None:
    st.session_state[TOKENS_KEY] = [None]


def run_url(experiment_id: str, run_id: str) -> str:
    return f"{get_settings().mlflow_ui_url}/#/experiments/{experiment_id}/runs/{run_id}"


def runs_frame(page: experiments.RunsPage, experiment_id: str) -> pd.DataFrame:
    rows = []
    for run in page.runs:
        row = {
            "run": run.run_name,
            "status": run.status,
            "started": run.start_time.astimezone().strftime("%Y-%m-%d %H:%M:%S") if run.start_time else None,
            "duration (s)": round(run.duration_s, 1) if run.duration_s is not None else None,
            "trial of": run.parent_run_id[:8] if run.parent_run_id else "",
        }
        row.update({key: run.metrics.get(key) for key in page.metric_keys})
        row.update({f"param: {key}": run.params.get(key) for key in page.param_keys})
        row["MLflow"] = run_url(experiment_id, run.run_id)
        rows.append(row)
    return pd.DataFrame(rows)


def show_study(experiment_id: str, parent: experiments.RunSummary) -> None:
    trials = experiments.child_runs(client(), parent_run_id=parent.run_id, experiment_id=experiment_id)
    if not trials:
        return
    st.subheader(f"Tuning study: {parent.run_name} ({len(trials)} trials)")
    keys = sorted({k for trial in trials for k in trial.metrics})
    if not keys:
        st.caption("The trials have logged no metrics yet.")
        return
    objective = st.selectbox("Objective", keys, key="experiments.objective")
    summary = experiments.study_from_trials(
        trials, objective_key=objective, direction=experiments.metric_direction(objective)
    )
    left, right = st.columns(2)
    left.altair_chart(optimization_history_chart(summary.history, objective), width="stretch")
    if summary.importances.empty:
        right.caption("Parameter importances need at least two finished trials with varying parameters.")
    else:
        right.altair_chart(importances_chart(summary.importances), width="stretch")


def show_comparison(experiment_id: str, selected: list[experiments.RunSummary]) -> None:
    st.subheader(f"Compare {len(selected)} run{'s' if len(selected) != 1 else ''}")
    only_differences = st.toggle("Only parameters that differ", value=True, key="experiments.diff_only")
    comparison = experiments.compare_runs(
        client(), run_ids=[r.run_id for r in selected], only_differences=only_differences
    )
    left, right = st.columns(2)
    with left:
        st.markdown("**Parameters**")
        if comparison.params.empty:
            st.caption("All parameters are equal." if only_differences else "No parameters logged.")
        else:
            st.dataframe(comparison.params, width="stretch")
    with right:
        st.markdown("**Metrics**")
        st.dataframe(comparison.metrics, width="stretch")
    metric_keys = sorted({k for run in selected for k in run.metrics})
    if metric_keys:
        curve_key = st.selectbox(
            "Metric curve",
            metric_keys,
            index=metric_keys.index(experiments.preferred_curve_metric(metric_keys)),
            key="experiments.curve_metric",
        )
        curves = experiments.metric_histories(client(), run_ids=[r.run_id for r in selected], metric_key=curve_key)
        st.altair_chart(metric_curves_chart(curves, curve_key), width="stretch")
    for run in selected:
        if run.parent_run_id is None:
            show_study(experiment_id, run)


def show_parallel_coordinates(page: experiments.RunsPage) -> None:
    if not page.metric_keys or len(page.runs) < 2:
        return
    with st.expander("Parallel coordinates over this page's runs", icon=":material/insights:"):
        metric_key = st.selectbox("Colour by metric", page.metric_keys, key="experiments.pc_metric")
        frame = experiments.parallel_coordinates_frame(page.runs, metric_key=metric_key)
        if len(frame.columns) <= 2:
            st.caption("No parameter varies across these runs.")
        else:
            st.altair_chart(parallel_coordinates_chart(frame, metric_key), width="stretch")


st.title("Experiments")
experiment_list = experiments.list_experiments(client())
if not experiment_list:
    st.info("No experiments yet. Launch a training job on the Training page; its runs appear here.")
    st.page_link("../pages/training.py", label="Go to Training", icon=":material/model_training:")
    st.stop()

names = {e.name: e for e in experiment_list}
top = st.columns([3, 2, 1, 2], vertical_alignment="bottom")
chosen = top[0].selectbox("Experiment", list(names), key="experiments.experiment", on_change=reset_paging)
experiment = names[chosen]
first_page = experiments.search_runs_page(client(), experiment_id=experiment.experiment_id, page_size=5)
sort_options = SORT_ATTRIBUTES + [f"metrics.{k}" for k in first_page.metric_keys]
sort_options += [f"params.{k}" for k in first_page.param_keys]
sort_by = top[1].selectbox("Sort by", sort_options, key="experiments.sort_by", on_change=reset_paging)
descending = top[2].toggle("Descending", value=True, key="experiments.descending", on_change=reset_paging)
show_trials = top[3].toggle("Show tuning trials", value=False, key="experiments.trials", on_change=reset_paging)

tokens: list[str | None] = st.session_state.setdefault(TOKENS_KEY, [None])
page_index = len(tokens) - 1
try:
    page = experiments.search_runs_page(
        client(),
        experiment_id=experiment.experiment_id,
        sort_by=sort_by,
        descending=descending,
        page_size=PAGE_SIZE,
        page_token=tokens[-1],
        top_level_only=not show_trials,
    )
except SextantError as error:
    st.error(str(error))
    st.stop()

frame = runs_frame(page, experiment.experiment_id)
st.dataframe(
    frame,
    hide_index=True,
    width="stretch",
    key="experiments.runs",
    column_config={"MLflow": st.column_config.LinkColumn("MLflow", display_text="open")},
)
nav = st.columns([1, 2, 1, 1])
if nav[0].button("← Previous", disabled=page_index == 0, key="experiments.prev"):
    tokens.pop()
    st.rerun()
if page.total is not None:
    nav[1].caption(f"Page {page_index + 1} of {max(1, -(-page.total // PAGE_SIZE))} · {page.total:,} runs")
else:
    nav[1].caption(f"Page {page_index + 1} · {len(page.runs)} runs")
nav[3].link_button("Open in MLflow", f"{get_settings().mlflow_ui_url}/#/experiments/{experiment.experiment_id}")
if nav[2].button("Next →", disabled=page.next_page_token is None, key="experiments.next"):
    tokens.append(page.next_page_token)
    st.rerun()

show_parallel_coordinates(page)
labels = {f"{run.run_name} · {run.run_id[:8]}": run for run in page.runs}
chosen_labels = st.multiselect(
    "Compare runs", list(labels), max_selections=experiments.MAX_COMPARED_RUNS, key="experiments.compare",
    placeholder="choose runs from this page (a tuning job shows its study)",
)  # fmt: skip
if chosen_labels:
    show_comparison(experiment.experiment_id, [labels[label] for label in chosen_labels])
