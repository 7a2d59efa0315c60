"""An analyst deploys the champion from the Model registry page and predicts on the Online prediction page
(real portal, real tritonserver, real gateway process, Chromium)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from backend.config import get_settings, reset_settings
from backend.db import migrate
from backend.serving.server import TritonServer, TritonServerOptions
from backend.tracking import tracking_client
from tests.conftest import free_ports
from tests.e2e.conftest import READY, start_process, stop_process
from tests.integration.test_endpoints_service import CHURN, trained_store, wait_for


@pytest.fixture
def serving(
    sextant_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Trained models in MLflow (champion = version 1), tritonserver and the gateway over this test's workspace."""
    store = tmp_path / "mlflow.db"
    shutil.copy(trained_store(tmp_path_factory), store)
    http, grpc, metrics, gateway = free_ports(4)
    for key, value in {
        "SEXTANT_MLFLOW_TRACKING_URI": f"sqlite:///{store}",
        "SEXTANT_TRITON_HTTP_PORT": str(http),
        "SEXTANT_TRITON_GRPC_PORT": str(grpc),
        "SEXTANT_TRITON_METRICS_PORT": str(metrics),
        "SEXTANT_TRITON_INSTANCE_KIND": "cpu",
        "SEXTANT_GATEWAY_PORT": str(gateway),
    }.items():
        monkeypatch.setenv(key, value)
    reset_settings()
    settings = get_settings()
    migrate()
    tracking_client(settings).set_registered_model_alias(CHURN, "champion", "1")
    server = TritonServer(TritonServerOptions.from_settings(settings), log_path=tmp_path / "triton.log")
    server.start()
    process = start_process(
        [sys.executable, "-m", "backend.gateway"], env=os.environ.copy(), log_path=tmp_path / "gateway.log"
    )
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"{settings.gateway_url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                assert process.poll() is None, (tmp_path / "gateway.log").read_text()
                return False

        wait_for(healthy, 60, "the gateway")
        yield settings.gateway_url
    finally:
        stop_process(process)
        server.stop()


def test_deploy_the_champion_and_predict_online(serving: str, page: Page, portal: str, screenshot_dir: Path) -> None:
    page.goto(f"{portal}/registry")
    page.wait_for_selector(READY, timeout=30_000)
    expect(page.get_by_role("heading", name="Model registry")).to_be_visible()
    page.get_by_role("combobox", name="Model").click()
    page.get_by_role("option", name=CHURN, exact=True).click()
    page.wait_for_selector(READY, timeout=30_000)
    expect(page.get_by_role("combobox", name="Deploy")).to_have_value(f"{CHURN}@champion (now v1, follows the alias)")
    name = page.get_by_role("textbox", name="Endpoint name")
    name.fill("churn")
    name.press("Enter")
    page.wait_for_selector(READY, timeout=30_000)
    page.get_by_role("button", name="Deploy", exact=True).click()
    expect(page.get_by_text("Deployed to endpoint churn")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Endpoint churn: ready")).to_be_visible(timeout=30_000)
    expect(page.get_by_role("button", name="Batch predict")).to_be_enabled()
    page.set_viewport_size({"width": 1400, "height": 1400})
    page.wait_for_timeout(1000)
    page.screenshot(path=str(screenshot_dir / "registry-deploy.png"))
    page.set_viewport_size({"width": 1400, "height": 1000})

    page.get_by_role("link", name="Predict on the Online prediction page").click()
    page.wait_for_selector(READY, timeout=30_000)
    expect(page.get_by_role("heading", name="Online prediction")).to_be_visible()
    expect(page.get_by_text("State: ready")).to_be_visible(timeout=30_000)
    page.get_by_role("button", name="Predict", exact=True).click()
    expect(page.get_by_text(f"Predicted by {CHURN} version 1")).to_be_visible(timeout=30_000)
    expect(page.get_by_text(f"curl -sS -X POST {serving}/v1/endpoints/churn:predict")).to_be_visible()
    page.set_viewport_size({"width": 1400, "height": 1900})
    page.wait_for_timeout(1500)
    page.screenshot(path=str(screenshot_dir / "online-prediction.png"), full_page=True)
