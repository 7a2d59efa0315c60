"""A real portal process and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend.db import migrate
from tests.conftest import REPO_ROOT, free_ports

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
READY = "[data-testid=stApp][data-test-connection-state=CONNECTED][data-test-script-state=notRunning]"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("REQUIRE_E2E") == "1":
        raise pytest.UsageError(f"REQUIRE_E2E=1 but Chromium is missing at {CHROMIUM} (make test installs it)")
    skip = pytest.mark.skip(reason="Chromium is not installed")
    for item in items:
        if "e2e" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict[str, object]:
    return {"executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args() -> dict[str, object]:
    return {"viewport": {"width": 1400, "height": 1000}}


def start_process(command: list[str], *, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def portal(sextant_home: Path) -> Iterator[str]:
    """The portal as `make run` starts it, on a free port, over this test's empty workspace."""
    migrate()
    port = free_ports(1)[0]
    env = os.environ | {"SEXTANT_HOME": str(sextant_home)}
    command = [
        sys.executable, "-m", "streamlit", "run", "app/Home.py",
        "--server.headless", "true", "--server.address", "127.0.0.1", "--server.port", str(port),
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
    ]  # fmt: skip
    log_path = sextant_home.parent / "portal.log"
    process = start_process(command, env=env, log_path=log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=1).text == "ok":
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"portal did not start: {log_path.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        stop_process(process)


@pytest.fixture
def worker(sextant_home: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The job worker as `make run` starts it, over the same workspace."""
    migrate()
    env = os.environ | {"SEXTANT_HOME": str(sextant_home)}
    process = start_process(
        [sys.executable, "-m", "backend.jobs.worker"], env=env, log_path=sextant_home.parent / "worker.log"
    )
    try:
        yield process
    finally:
        stop_process(process)


@pytest.fixture
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
