"""portal: how long each page of the portal takes to render in Chromium on a full workspace.

The workspace holds 1,000 datasets and an experiment of 10,000 runs. Each page listed in
app/Home.py's menu is loaded in Debian's Chromium (Playwright) and timed until Streamlit's ready
signal shows (connected, script not running) together with the page's main content. The baseline
is MLflow's own UI (a real ``mlflow server`` over the same store, started as infra/Procfile starts
it) loading the same experiment's runs list until its table shows rows. Every load starts from
``about:blank`` (a full page load, not an in-app navigation); one warm-up load per page is not
counted; the figure is the median of the timed loads.

Seeding: 5 datasets are uploaded through ``create_dataset_version`` and copied to 1,000 dataset
rows (same Parquet files, distinct names); runs are written with ``bench.experiments_runs.seed_runs``
(MLflow's ORM in one transaction, checked against MlflowClient's path). The Experiments page's
query figure (``bench.experiments_runs``) is measured over the same store.
"""

from __future__ import annotations

import ast
import re
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    REPO_ROOT,
    BenchError,
    Result,
    Size,
    free_port,
    mlflow_server,
    new_mlflow_store,
    pick,
    procfile_server,
    running,
    sextant_env,
    sextant_home,
    stage,
)
from bench.data import feature_frame, write_csv

CHROMIUM = "/usr/bin/chromium"
# The flags of tests/e2e/conftest.py.
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
READY = "[data-testid=stApp][data-test-connection-state=CONNECTED][data-test-script-state=notRunning]"
HOME = REPO_ROOT / "app" / "Home.py"
EXPERIMENT = "bench-10k-runs"
REAL_DATASETS = 5
PAGE_TIMEOUT_MS = 60_000
MLFLOW_UI = "MLflow UI runs list"


@dataclass(frozen=True)
class MenuPage:
    title: str
    path: str
    # "" for the default page.
    url_path: str


def menu_pages(home: Path = HOME) -> list[MenuPage]:
    """Every ``st.Page(...)`` in the portal's entry script, so pages added later are measured too."""
    pages = []
    for node in ast.walk(ast.parse(home.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "Page"):
            continue
        if not node.args or not isinstance(node.args[0], ast.Constant):
            continue
        path = str(node.args[0].value)
        options = {kw.arg: kw.value.value for kw in node.keywords if isinstance(kw.value, ast.Constant)}
        stem = Path(path).stem
        url_path = "" if options.get("default") else str(options.get("url_path") or stem)
        pages.append(MenuPage(str(options.get("title") or stem), path, url_path))
    if not pages:
        raise BenchError(f"no st.Page in {home}")
    return pages


def content_locator(page: Any, menu_page: MenuPage) -> Any:
    """The main content that says the page has rendered its data, not just its frame."""
    key = Path(menu_page.path).stem
    if key == "dashboard":
        return page.get_by_role("heading", name="Recent jobs")
    if key == "datasets":
        return page.get_by_role("button", name="Open", exact=True)
    if key == "training":
        return page.get_by_role("button", name="Launch")
    if key == "experiments":
        return page.get_by_text(re.compile(r"Page 1 of \d+ · [\d,]+ runs"))
    return page.locator("[data-testid=stMain] h1").first


def seed_datasets(count: int, folder: Path, *, real: int = REAL_DATASETS) -> None:
    from sqlalchemy import insert, select

    from backend.datasets import create_dataset_version
    from backend.db import migrate, session_scope
    from backend.models import Dataset, DatasetVersion

    migrate()
    with session_scope() as session:
        for index in range(min(real, count)):
            csv = write_csv(feature_frame(300, seed=index), folder / f"dataset-{index}.csv")
            create_dataset_version(session, name=f"dataset-{index:04d}", source_path=csv)
    with session_scope() as session:
        templates = session.scalars(select(DatasetVersion).order_by(DatasetVersion.id)).all()
        now = datetime.now(UTC)
        datasets, versions = [], []
        for index in range(len(templates), count):
            datasets.append({"id": index + 1, "name": f"dataset-{index:04d}", "description": "", "created_at": now})
            template = templates[index % len(templates)]
            versions.append(
                {
                    "dataset_id": index + 1,
                    "version": 1,
                    "content_hash": template.content_hash,
                    "storage_path": template.storage_path,
                    "source_filename": template.source_filename,
                    "source_format": template.source_format,
                    "source_bytes": template.source_bytes,
                    "row_count": template.row_count,
                    "column_count": template.column_count,
                    "schema_json": template.schema_json,
                    "ingest_json": template.ingest_json,
                    "profile_json": template.profile_json,
                    "created_at": now - timedelta(seconds=index),
                }
            )
        if datasets:
            session.execute(insert(Dataset), datasets)
            session.execute(insert(DatasetVersion), versions)


def load_once(page: Any, url: str, ready: list[Any]) -> float:
    """Seconds from navigation (out of ``about:blank``: a full page load) until every ``ready`` locator shows."""
    page.goto("about:blank")
    start = time.perf_counter()
    page.goto(url, wait_until="commit")
    for locator in ready:
        locator.first.wait_for(state="visible", timeout=PAGE_TIMEOUT_MS)
    return time.perf_counter() - start


def measure_loads(
    page: Any, targets: dict[str, tuple[str, list[Any]]], *, repeat: int, warmup: int
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Load every target in turn, ``warmup`` + ``repeat`` rounds (round-robin, so load that comes and
    goes on the machine falls on all alike); the timed samples and any page's error box."""
    samples: dict[str, list[float]] = {key: [] for key in targets}
    errors: dict[str, str] = {}
    for attempt in range(warmup + repeat):
        for key, (url, ready) in targets.items():
            seconds = load_once(page, url, ready)
            if attempt >= warmup:
                samples[key].append(seconds)
            if attempt == warmup + repeat - 1 and (error := page_error(page)):
                errors[key] = error
    return samples, errors


def run(size: Size) -> list[Result]:
    from playwright.sync_api import sync_playwright

    from bench import experiments_runs

    if not Path(CHROMIUM).exists():
        raise BenchError(f"Chromium is missing at {CHROMIUM} (make chromium installs it)")
    dataset_count = pick(size, full=1_000, smoke=12)
    run_count = pick(size, full=10_000, smoke=200)
    real_datasets = pick(size, full=REAL_DATASETS, smoke=1)
    repeat = pick(size, full=3, smoke=1)
    warmup = pick(size, full=1, smoke=0)
    pages = menu_pages()
    with tempfile.TemporaryDirectory(prefix="sextant-bench-portal-") as folder:
        root = Path(folder)
        home = root / "home"
        portal_port, mlflow_port = free_port(), free_port()
        with sextant_home(home):
            from backend.config import get_settings
            from backend.db import migrate
            from backend.tracking import get_or_create_experiment, tracking_client

            settings = get_settings()
            migrate()
            tracking_uri = new_mlflow_store(settings.mlflow_dir / "mlflow.db")
            client = tracking_client(settings)
            experiment_id = get_or_create_experiment(EXPERIMENT, client=client, settings=settings)
            # Both servers boot while the workspace is seeded: they read it only when asked.
            portal = procfile_server(
                "portal",
                variables={"SEXTANT_PORTAL_HOST": "127.0.0.1", "SEXTANT_PORTAL_PORT": str(portal_port)},
                env=sextant_env(home, SEXTANT_MLFLOW_PORT=str(mlflow_port)),
                log_path=root / "portal.log",
            )
            mlflow = mlflow_server(
                backend_store_uri=tracking_uri,
                artifacts_dir=settings.mlflow_artifacts_dir,
                port=mlflow_port,
                log_path=root / "mlflow.log",
            )
            with running(portal, mlflow):
                with stage(f"seed {dataset_count} datasets and {run_count} runs"):
                    seed_datasets(dataset_count, root, real=real_datasets)
                    experiments_runs.check_seeding(root)
                    start = time.perf_counter()
                    experiments_runs.seed_runs(tracking_uri, experiment_id, range(run_count))
                    seed_seconds = time.perf_counter() - start
                portal_url, mlflow_url = f"http://127.0.0.1:{portal_port}", f"http://127.0.0.1:{mlflow_port}"
                portal.wait_http(f"{portal_url}/_stcore/health", timeout_s=120)
                mlflow.wait_http(f"{mlflow_url}/health", timeout_s=120)
                with stage("load every page in Chromium"), sync_playwright() as playwright:
                    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                    try:
                        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                        targets = {
                            menu_page.title: (
                                f"{portal_url}/{menu_page.url_path}",
                                [page.locator(READY), content_locator(page, menu_page)],
                            )
                            for menu_page in pages
                        }
                        targets[MLFLOW_UI] = (
                            f"{mlflow_url}/#/experiments/{experiment_id}/runs",
                            [page.locator(".ag-row a", has_text=re.compile(r"^run-\d+"))],
                        )
                        timings, errors = measure_loads(page, targets, repeat=repeat, warmup=warmup)
                    finally:
                        browser.close()
            # Measured with the servers gone, so their work does not slow the query.
            with stage("Experiments page query"):
                query = experiments_runs.query_result(client, experiment_id, runs=run_count, seed_seconds=seed_seconds)
    baseline = statistics.median(timings.pop(MLFLOW_UI))
    errors.pop(MLFLOW_UI, None)
    extra: dict[str, Any] = {"datasets": dataset_count, "runs": run_count, "loads": repeat}
    results = []
    for menu_page in pages:
        row_extra = {"page": menu_page.title, **extra}
        if menu_page.title in errors:
            row_extra["page_error"] = errors[menu_page.title]
            print(f"   ! {menu_page.title} shows an error: {errors[menu_page.title]}", flush=True)
        results.append(
            Result(
                f"portal.{Path(menu_page.path).stem}", "s", statistics.median(timings[menu_page.title]),
                "MLflow UI runs list", baseline, "lower", row_extra,
            )
        )  # fmt: skip
    results.append(query)
    return results


def page_error(page: Any) -> str | None:
    """The exception or error box the rendered page shows, if any (a fast page that fails is no win)."""
    boxes = page.locator("[data-testid=stException], [data-testid=stAlertContentError]")
    if boxes.count() == 0:
        return None
    return boxes.first.inner_text()[:200]
