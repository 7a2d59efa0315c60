"""An analyst uploads the example CSV in a real browser, sees its profile and previews rows."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from tests.e2e.conftest import READY


def wait_ready(page: Page) -> None:
    page.wait_for_selector(READY, timeout=30_000)


def test_upload_profile_and_browse(page: Page, portal: str, example_csv: Path, screenshot_dir: Path) -> None:
    page.goto(portal)
    wait_ready(page)
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.get_by_role("link", name="Datasets").first.click()
    wait_ready(page)
    expect(page.get_by_text("This workspace has no datasets yet")).to_be_visible()

    page.get_by_text("Upload", exact=True).first.click()
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(example_csv))
    expect(page.get_by_text("churn.csv")).to_be_visible()
    page.get_by_role("textbox", name="Dataset name").fill("churn")
    page.get_by_test_id("stBaseButton-primaryFormSubmit").click()
    expect(page.get_by_text("Created churn:1 — 11,023 rows × 14 columns")).to_be_visible(timeout=30_000)

    page.get_by_role("button", name="Open dataset").click()
    wait_ready(page)
    expect(page.get_by_role("heading", name="churn")).to_be_visible()
    expect(page.get_by_test_id("stMetric").filter(has_text="Rows").first).to_contain_text("11,023")
    # The profile's summary grid and Altair charts (histogram, correlation heatmap) rendered.
    expect(page.get_by_role("gridcell", name="monthly_charges", include_hidden=True).first).to_be_attached()
    expect(page.locator("[data-testid=stVegaLiteChart]").first).to_be_visible(timeout=15_000)
    expect(page.get_by_text("Correlation of numeric columns (Pearson)")).to_be_attached()
    # Streamlit scrolls inside its own container, so a tall viewport shows the whole profile.
    page.set_viewport_size({"width": 1400, "height": 2100})
    page.wait_for_timeout(1500)
    page.screenshot(path=str(screenshot_dir / "datasets-profile.png"))
    page.set_viewport_size({"width": 1400, "height": 1000})

    page.get_by_role("tab", name="Preview").click()
    expect(page.get_by_text("Rows 1–50 of 11,023")).to_be_visible()
    page.screenshot(path=str(screenshot_dir / "datasets-preview.png"))

    page.get_by_role("link", name="Dashboard").first.click()
    wait_ready(page)
    expect(page.get_by_text("churn  ·  v1")).to_be_visible()


def test_bad_upload_in_browser_explains_and_stores_nothing(page: Page, portal: str, tmp_path: Path) -> None:
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3\n")
    page.goto(f"{portal}/datasets")
    wait_ready(page)
    page.get_by_text("Upload", exact=True).first.click()
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(ragged))
    page.get_by_test_id("stBaseButton-primaryFormSubmit").click()
    expect(page.get_by_text("ragged rows: line 3 has 1 fields, the header has 2")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("This workspace has no datasets yet")).to_be_visible()
