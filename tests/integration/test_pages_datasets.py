"""The portal's Dashboard and Datasets pages, run headless with AppTest against a real workspace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from backend import datasets
from backend.db import migrate, session_scope
from tests.conftest import REPO_ROOT

HOME = str(REPO_ROOT / "app" / "Home.py")


@pytest.fixture(autouse=True)
def clear_streamlit_caches() -> Iterator[None]:
    migrate()
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


def open_datasets(dataset: str | None = None) -> AppTest:
    at = AppTest.from_file(HOME, default_timeout=30)
    if dataset:
        at.query_params["dataset"] = dataset
    at.run()
    at.switch_page("../pages/datasets.py").run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> str:
    parts = [e.value for e in at.markdown] + [e.value for e in at.title] + [e.value for e in at.caption]
    parts += [e.value for e in at.info] + [e.value for e in at.success] + [e.value for e in at.error]
    return "\n".join(str(p) for p in parts)


def test_dashboard_counts_real_data(example_csv: Path) -> None:
    at = AppTest.from_file(HOME, default_timeout=30).run()
    assert not at.exception
    assert at.title[0].value == "Dashboard"
    assert "No datasets yet" in at.info[0].value
    with session_scope() as session:
        datasets.create_dataset_version(session, name="churn", source_path=example_csv)
    at.run()
    values = {metric.label: metric.value for metric in at.metric}
    assert values["Datasets"] == "1"
    assert values["Rows (latest versions)"] == f"{pl.read_csv(example_csv).height:,}"


def test_empty_workspace_offers_example_data() -> None:
    at = open_datasets()
    assert "no datasets yet" in at.info[0].value
    at.button(key="datasets.load_example").click().run()
    assert not at.exception
    assert at.query_params["dataset"] == ["churn"] or at.query_params["dataset"] == "churn"
    assert at.title[0].value == "churn"
    assert {metric.label: metric.value for metric in at.metric}["Rows"] == "11,023"


def test_upload_from_the_page(tmp_path: Path) -> None:
    at = open_datasets()
    at.text_input(key="datasets.upload_name").input("sales")
    at.file_uploader(key="datasets.upload_file").set_value(("sales.csv", b"id;amount\n1;2.5\n2;3.5\n", "text/csv"))
    at.button(key="FormSubmitter:datasets.upload_form-Upload").click().run()
    assert not at.exception
    assert "Created sales:1 — 2 rows × 2 columns" in at.success[0].value
    with session_scope() as session:
        assert datasets.get_dataset_version(session, name="sales").ingest["delimiter"] == ";"


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (b"a,b\n1,2\n3\n", "ragged", "ragged rows"),
        (b"", "empty", "the file is empty"),
        (b"a,a\n1,2\n", "dupes", "duplicate column name"),
        (b"a,b\n1,2\n", "bad/name", "path separator"),
    ],
)
def test_bad_upload_shows_the_reason_and_stores_nothing(content: bytes, name: str, message: str) -> None:
    at = open_datasets()
    at.text_input(key="datasets.upload_name").input(name)
    at.file_uploader(key="datasets.upload_file").set_value(("bad.csv", content, "text/csv"))
    at.button(key="FormSubmitter:datasets.upload_form-Upload").click().run()
    assert not at.exception
    assert message in at.error[0].value
    assert "Nothing was stored" in at.error[0].value
    with session_scope() as session:
        assert datasets.list_datasets(session).total == 0


def test_detail_page_profile_preview_and_versions(tmp_path: Path, example_csv: Path) -> None:
    with session_scope() as session:
        datasets.create_dataset_version(session, name="churn", source_path=example_csv)
        smaller = tmp_path / "v2.csv"
        pl.read_csv(example_csv).drop("region").head(100).write_csv(smaller)
        datasets.create_dataset_version(session, name="churn", source_path=smaller)
    at = open_datasets("churn")
    assert at.title[0].value == "churn"
    assert at.selectbox(key="datasets.version.churn").value == 2
    # Profile: the numeric histogram and the correlation heatmap are Altair charts.
    charts = at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")
    assert len(charts) >= 2
    at.selectbox(key="datasets.version.churn").select(1).run()
    assert {metric.label: metric.value for metric in at.metric}["Rows"] == "11,023"
    at.selectbox(key="datasets.filter_column").select("plan").run()
    at.selectbox(key="datasets.filter_operator").select("==").run()
    at.text_input(key="datasets.filter_value").input("premium").run()
    premium = pl.read_csv(example_csv).filter(pl.col("plan") == "premium").height
    assert f"of {premium:,} (filtered)" in texts(at)
    # Versions tab: the schema diff names the removed column.
    diff_tables = [frame.value for frame in at.dataframe if "change" in frame.value.columns]
    assert diff_tables and diff_tables[0].to_dict("records") == [
        {"change": "removed", "column": "region", "type": "String"}
    ]


def test_unknown_dataset_link_shows_an_error() -> None:
    at = open_datasets("ghost")
    assert "'ghost' does not exist" in at.error[0].value
