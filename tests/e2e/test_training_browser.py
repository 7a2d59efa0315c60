"""An analyst launches training from the page, watches it finish and finds the run in Experiments."""

from __future__ import annotations

import subprocess
from pathlib import Path

from playwright.sync_api import Page, expect

from backend import datasets
from backend.db import session_scope
from tests.e2e.conftest import READY


def test_train_then_compare_in_experiments(
    page: Page, portal: str, worker: subprocess.Popen[bytes], example_csv: Path, screenshot_dir: Path
) -> None:
    with session_scope() as session:
        datasets.create_dataset_version(session, name="churn", source_path=example_csv)
    page.goto(f"{portal}/training")
    page.wait_for_selector(READY, timeout=30_000)
    expect(page.get_by_role("heading", name="Training")).to_be_visible()
    page.get_by_role("button", name="Launch").click()
    expect(page.get_by_text("Job #1 queued (train)")).to_be_visible(timeout=30_000)
    # The job list refreshes itself; the worker trains, logs to MLflow and registers the model.
    expect(page.get_by_text("Registered model churn-churned version 1")).to_be_visible(timeout=120_000)
    expect(page.get_by_text("Job #1 · train · succeeded ✓")).to_be_visible()
    page.set_viewport_size({"width": 1400, "height": 1600})
    page.wait_for_timeout(1000)
    page.screenshot(path=str(screenshot_dir / "training-job.png"))
    page.set_viewport_size({"width": 1400, "height": 1000})

    page.get_by_role("link", name="Experiments").first.click()
    page.wait_for_selector(READY, timeout=30_000)
    expect(page.get_by_role("combobox", name="Experiment")).to_have_value("churn-churned")
    expect(page.get_by_role("gridcell", name="train-xgboost-job-1", include_hidden=True)).to_be_attached()
    page.get_by_role("combobox", name="Compare runs").click()
    page.get_by_role("option").first.click()
    page.keyboard.press("Escape")
    page.wait_for_selector(READY, timeout=30_000)
    expect(page.get_by_text("Compare 1 run")).to_be_visible()
    expect(page.locator("[data-testid=stVegaLiteChart]").first).to_be_visible(timeout=15_000)
    page.set_viewport_size({"width": 1400, "height": 1600})
    page.wait_for_timeout(1500)
    page.screenshot(path=str(screenshot_dir / "experiments-compare.png"))
