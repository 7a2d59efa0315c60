"""The supervising loop around the real tritonserver: kill -9 → restarted, models reloaded, ready again.

Also runs the Procfile entry (``python -m backend.serving.server``) with a reload hook named in the
environment, and stops it with SIGTERM as honcho does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest

from backend.config import get_settings, reset_settings
from backend.datasets import create_dataset_version
from backend.db import dispose_engines, migrate, session_scope
from backend.serving.client import TritonClient
from backend.serving.repository import ServingOptions, export_model_version, load_config_json
from backend.serving.server import (
    SupervisorStats,
    TritonServer,
    TritonServerOptions,
    orphaned_stubs,
    supervise,
)
from backend.training import TrainingSpec, run_training
from tests.conftest import free_ports

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CSV = REPO_ROOT / "examples" / "churn.csv"
MODEL = "churn-churned"
ROWS = {
    "plan": ["basic", "premium"],
    "region": ["north", None],
    "contract": ["month-to-month", "two-year"],
    "payment_method": ["paypal", "card"],
    "has_partner": ["yes", "no"],
    "tenure_months": [3, 40],
    "monthly_charges": [80.5, np.nan],
    "data_usage_gb": [10.0, 2.5],
    "support_calls": [4, 0],
    "logins_30d": [2, 20],
    "satisfaction_score": [2.1, 4.8],
}


def load_deployed(client: TritonClient) -> None:
    """The reload hook the Procfile entry gets (SEXTANT_TRITON_RELOAD_HOOK): load every written model."""
    repository = get_settings().triton_models_dir
    for folder in sorted(repository.iterdir()):
        if folder.is_dir() and not folder.name.startswith("."):
            client.load_model(
                folder.name, config=load_config_json(repository=repository, triton_name=folder.name, versions=[1])
            )


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A workspace with one trained, registered XGBoost model written into its Triton repository."""
    home = tmp_path_factory.mktemp("supervised-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEXTANT_HOME", str(home))
        patch.delenv("SEXTANT_DATABASE_URL", raising=False)
        reset_settings()
        settings = get_settings()
        settings.ensure_dirs()
        migrate(settings.resolved_database_url)
        sample = home / "churn-small.parquet"
        pl.read_csv(EXAMPLE_CSV, try_parse_dates=True).sample(300, seed=3).write_parquet(sample)
        with session_scope(settings.resolved_database_url) as session:
            create_dataset_version(session, name="churn", source_path=sample)
        run_training(TrainingSpec(dataset="churn", target="churned", hyperparameters={"n_estimators": 10}))
        export_model_version(registry_name=MODEL, version=1, settings=settings, options=ServingOptions())
        dispose_engines()
    reset_settings()
    yield home
    # Later modules must not find MLflow pointed at this module's store.
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def test_a_killed_tritonserver_is_restarted_and_its_models_reloaded(home: Path, tmp_path: Path) -> None:
    http, grpc, metrics = free_ports(3)
    repository = home / "triton" / "models"
    options = TritonServerOptions(
        model_repository=repository,
        backend_directory=home / "triton" / "backends",
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
    )
    server = TritonServer(options, log_path=tmp_path / "triton.log")
    hook_calls: list[int | None] = []

    def reload_hook(client: TritonClient) -> None:
        hook_calls.append(server.pid)
        config = load_config_json(repository=repository, triton_name=MODEL, versions=[1])
        client.load_model(MODEL, config=config, versions=[1])

    stop = threading.Event()
    stats = SupervisorStats()
    loop = threading.Thread(
        target=supervise,
        kwargs={"server": server, "stop": stop, "reload_hook": reload_hook, "health_interval_s": 0.2, "stats": stats},
    )
    loop.start()
    try:
        client = TritonClient(options.grpc_url)
        _wait_for(lambda: stats.reloads == 1 and client.is_model_ready(MODEL, 1), 60, "the first start")
        before = client.infer(MODEL, 1, ROWS)
        first_pid = server.pid
        assert first_pid is not None

        os.kill(first_pid, signal.SIGKILL)
        _wait_for(lambda: stats.reloads == 2 and client.is_model_ready(MODEL, 1), 60, "the restart")

        assert stats.starts == 2 and stats.last_exit_code == -signal.SIGKILL
        assert hook_calls[0] == first_pid and hook_calls[1] == server.pid != first_pid
        # The killed server's python-backend stub does not linger.
        assert orphaned_stubs(server.stub_path) == []
        after = client.infer(MODEL, 1, ROWS)
        assert np.array_equal(before["probabilities"], after["probabilities"])
        client.close()
    finally:
        stop.set()
        loop.join(timeout=30)
    assert not loop.is_alive() and not server.is_running()
    assert not any(path.name.startswith(options.shm_prefix) for path in Path("/dev/shm").iterdir())


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_the_procfile_entry_serves_the_workspace_and_stops_on_sigterm(home: Path, tmp_path: Path) -> None:
    http, grpc, metrics = free_ports(3)
    env = {
        **os.environ,
        "SEXTANT_HOME": str(home),
        "SEXTANT_TRITON_HTTP_PORT": str(http),
        "SEXTANT_TRITON_GRPC_PORT": str(grpc),
        "SEXTANT_TRITON_METRICS_PORT": str(metrics),
        "SEXTANT_TRITON_RELOAD_HOOK": "tests.integration.test_serving_supervisor:load_deployed",
    }
    with (tmp_path / "supervisor.log").open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "backend.serving.server"], cwd=REPO_ROOT, env=env, stdout=output, stderr=output
        )
    try:
        with TritonClient(f"127.0.0.1:{grpc}") as client:
            _wait_for(
                lambda: client.is_server_ready() and client.is_model_ready(MODEL, 1),
                60,
                "the model (see supervisor.log)",
            )
            assert client.infer(MODEL, 1, ROWS)["prediction"].shape == (2,)
        (triton_pid,) = _children(process.pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # The supervisor stopped its tritonserver before exiting.
    assert not Path(f"/proc/{triton_pid}").exists()
