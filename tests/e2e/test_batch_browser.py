"""An analyst launches a batch prediction from the page, watches it finish on Triton and downloads the output."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from playwright.sync_api import Page, expect

from backend.config import reset_settings
from tests.e2e.conftest import READY
from tests.integration.test_batch_jobs import CHURNED, prepare_workspace, triton_for


@pytest.fixture
def batch_stack(sextant_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A registered model and Triton over this test's workspace; requested before the portal and the worker."""
    prepare_workspace(sextant_home, specs=[CHURNED])
    with triton_for(sextant_home, sextant_home.parent) as env:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        reset_settings()
        yield


@pytest.mark.usefixtures("batch_stack")
def test_launch_a_batch_job_and_download_its_output(
    page: Page, portal: str, worker: subprocess.Popen[bytes], screenshot_dir: Path
) -> None:
    page.goto(f"{portal}/batch")
    page.wait_for_selector(READY, timeout=30_000)
    expect(page.get_by_role("heading", name="Batch prediction")).to_be_visible()
    page.get_by_role("radiogroup", name="Format").first.get_by_text("csv").click()
    page.get_by_role("button", name="Launch").click()
    expect(page.get_by_text("Job #1 queued (batch_predict)")).to_be_visible(timeout=30_000)
    # The job list refreshes itself while the worker scores the dataset on Triton and publishes it.
    expect(page.get_by_text("Job #1 · succeeded ✓")).to_be_visible(timeout=120_000)
    expect(page.get_by_text("400 rows scored at")).to_be_visible()
    expect(page.get_by_text("dataset churn-predictions:1")).to_be_visible()

    with page.expect_download(timeout=30_000) as downloading:
        page.get_by_role("button", name="Download CSV").click()
    download = downloading.value
    assert download.suggested_filename == "churn-predictions-v1.csv"
    frame = pl.read_csv(io.BytesIO(Path(download.path()).read_bytes()))
    assert frame.columns == ["customer_id", "prediction", "probability_0", "probability_1"]
    assert frame.height == 400

    page.set_viewport_size({"width": 1400, "height": 1900})
    page.locator("[data-testid=stMain]").evaluate("main => main.scrollTo(0, 0)")
    page.wait_for_timeout(1500)
    page.screenshot(path=str(screenshot_dir / "batch-prediction.png"))
