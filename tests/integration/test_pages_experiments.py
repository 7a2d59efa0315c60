"""The Experiments page with AppTest over a real MLflow store in the test's workspace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import streamlit as st
from mlflow.entities import Metric, Param
from streamlit.testing.v1 import AppTest

from backend import experiments
from backend.config import get_settings
from backend.db import migrate
from tests.conftest import REPO_ROOT

HOME = str(REPO_ROOT / "app" / "Home.py")


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    migrate()
    get_settings().ensure_dirs()
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


def seed(runs: int, trials: int = 0) -> str:
    client = experiments.mlflow_client()
    experiment_id = client.create_experiment("churn-churned")
    for index in range(runs):
        run = client.create_run(experiment_id, run_name=f"run-{index:03d}")
        client.log_batch(
            run.info.run_id,
            params=[Param("max_depth", str(3 + index % 3)), Param("framework", "xgboost")],
            metrics=[Metric("val_auc", 0.6 + index / 1000, 0, 0)]
            + [Metric("val_logloss", 0.7 - step / 20 - index / 1000, 0, step) for step in range(4)],
        )
        client.set_terminated(run.info.run_id)
    if trials:
        parent = client.create_run(experiment_id, run_name="tuning-job")
        for trial in range(trials):
            child = client.create_run(
                experiment_id, run_name=f"trial-{trial}", tags={experiments.PARENT_RUN_TAG: parent.info.run_id}
            )
            client.log_batch(
                child.info.run_id,
                params=[Param("eta", str(0.05 * (trial + 1))), Param("max_depth", str(2 + trial % 3))],
                metrics=[Metric("val_logloss", 0.5 - 0.02 * trial, 0, 0)],
            )
            client.set_terminated(child.info.run_id)
        client.set_terminated(parent.info.run_id)
    return experiment_id


def open_page() -> AppTest:
    at = AppTest.from_file(HOME, default_timeout=30).run()
    at.switch_page("../pages/experiments.py").run()
    assert not at.exception, at.exception
    return at


def test_empty_tracking_store_points_to_training() -> None:
    at = open_page()
    assert "No experiments yet" in at.info[0].value


def test_runs_are_paged_on_the_server_and_sorted() -> None:
    seed(runs=120)
    at = open_page()
    table = at.dataframe[0].value
    assert len(table) == 50
    assert "Page 1 of 3 · 120 runs" in at.caption[0].value
    at.selectbox(key="experiments.sort_by").select("metrics.val_auc").run()
    table = at.dataframe[0].value
    assert table["run"].iloc[0] == "run-119"
    assert list(table["val_auc"]) == sorted(table["val_auc"], reverse=True)
    at.button(key="experiments.next").click().run()
    at.button(key="experiments.next").click().run()
    assert len(at.dataframe[0].value) == 20
    assert at.button(key="experiments.next").disabled
    assert "Page 3 of 3" in at.caption[0].value
    at.button(key="experiments.prev").click().run()
    assert at.dataframe[0].value["run"].iloc[0] == "run-069"


def test_comparison_is_diff_only_with_curves() -> None:
    seed(runs=3)
    at = open_page()
    options = at.multiselect(key="experiments.compare").options
    at.multiselect(key="experiments.compare").set_value(options[:2]).run()
    assert not at.exception
    params = at.dataframe[1].value
    assert list(params.index) == ["max_depth"]  # framework is equal in both runs, so hidden
    at.toggle(key="experiments.diff_only").set_value(False).run()
    assert set(at.dataframe[1].value.index) == {"max_depth", "framework"}
    at.selectbox(key="experiments.curve_metric").select("val_logloss").run()
    curves = charts(at)[-1].spec
    assert '"title": "val_logloss per step"' in curves


def test_tuning_job_shows_its_study() -> None:
    seed(runs=1, trials=5)
    at = open_page()
    runs = list(at.dataframe[0].value["run"])
    assert "tuning-job" in runs and not any(name.startswith("trial-") for name in runs)
    tuning = next(o for o in at.multiselect(key="experiments.compare").options if o.startswith("tuning-job"))
    at.multiselect(key="experiments.compare").set_value([tuning]).run()
    assert not at.exception
    specs = " ".join(str(chart.spec) for chart in charts(at))
    assert "Optimization history (val_logloss)" in specs
    assert "Parameter importances" in specs
    at.toggle(key="experiments.trials").set_value(True).run()
    assert any(name.startswith("trial-") for name in at.dataframe[0].value["run"])


def charts(at: AppTest) -> list:
    return list(at.get("arrow_vega_lite_chart")) + list(at.get("vega_lite_chart"))
