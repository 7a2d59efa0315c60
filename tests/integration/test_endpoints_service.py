"""Endpoints against the real tritonserver, a real MLflow store and the DB on SQLite and PostgreSQL:
deploy XGBoost and PyTorch versions side by side with a canary split, undeploy, a failed load with
Triton's message, alias-following redeploys, Triton down → the reload hook, the batched request log.

Also the shared helpers of the serving tests: ``trained_store`` trains the test models once per pytest
session (every serving test module copies its MLflow database), ``ServingStack`` points a module's
settings at its own Triton ports and workspace.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import polars as pl
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Index, Table, event
from sqlalchemy.orm import Session

from backend import registry
from backend.config import Settings, get_settings, reset_settings
from backend.datasets import create_dataset_version
from backend.db import dispose_engines, get_engine, migrate, session_scope
from backend.errors import ConflictError, InvalidInputError, NotFoundError
from backend.models import Base
from backend.serving import endpoints
from backend.serving.client import TritonClient
from backend.serving.repository import triton_model_name
from backend.serving.request_log import RequestLog, RequestRecord, count_requests, summarize_requests
from backend.serving.server import TritonServer, TritonServerOptions
from backend.tracking import tracking_client
from backend.training import TrainingSpec, run_training
from tests.conftest import free_ports

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CSV = REPO_ROOT / "examples" / "churn.csv"
CHURN = "churn-churned"
CHARGES = "churn-monthly_charges"
XGBOOST_VERSION, TORCH_VERSION, SMALL_XGBOOST_VERSION = 1, 2, 3
TEMPLATE_SPECS = [
    TrainingSpec(dataset="churn", target="churned", hyperparameters={"n_estimators": 20}),
    TrainingSpec(dataset="churn", target="churned", framework="torch", hyperparameters={"max_epochs": 4}),
    TrainingSpec(dataset="churn", target="churned", hyperparameters={"n_estimators": 5, "max_depth": 2}),
    TrainingSpec(dataset="churn", target="monthly_charges", hyperparameters={"n_estimators": 10}),
]
SERVING_TABLES = {"endpoints", "endpoint_deployments", "endpoint_requests"}
_STORES: dict[str, Path] = {}
_STORE_LOCK = threading.Lock()


# Shared helpers (imported by the other serving test modules) -----------------------------------


def trained_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MLflow database of a workspace where the test models are trained (once per session).

    churn-churned 1 (XGBoost), 2 (PyTorch), 3 (a smaller XGBoost); churn-monthly_charges 1 (regression).
    The artifacts stay where training put them; copies of the database keep pointing at them.
    """
    with _STORE_LOCK:
        if "db" in _STORES:
            return _STORES["db"]
        home = tmp_path_factory.getbasetemp() / "serving-models"
        with pytest.MonkeyPatch.context() as patch:
            for key in [key for key in os.environ if key.startswith("SEXTANT_")]:
                patch.delenv(key)
            patch.setenv("SEXTANT_HOME", str(home))
            reset_settings()
            settings = get_settings()
            settings.ensure_dirs()
            migrate(settings.resolved_database_url)
            sample = home / "churn-small.parquet"
            pl.read_csv(EXAMPLE_CSV, try_parse_dates=True).sample(300, seed=11).write_parquet(sample)
            with session_scope(settings.resolved_database_url) as session:
                create_dataset_version(session, name="churn", source_path=sample)
            for spec in TEMPLATE_SPECS:
                run_training(spec, settings=settings)
            dispose_engines()
        reset_settings()
        mlflow.set_tracking_uri(None)
        _STORES["db"] = settings.mlflow_dir / "mlflow.db"
        return _STORES["db"]


@dataclass
class ServingStack:
    """A module's workspace: its copy of the MLflow store, its Triton ports, optionally its own DB."""

    home: Path
    mlflow_uri: str
    http_port: int
    grpc_port: int
    metrics_port: int
    database_url: str | None = None

    @classmethod
    def create(cls, folder: Path, store: Path, *, own_database: bool = False) -> ServingStack:
        home = folder / "home"
        (home / "mlflow").mkdir(parents=True, exist_ok=True)
        copy = home / "mlflow" / "mlflow.db"
        shutil.copy(store, copy)
        http, grpc, metrics = free_ports(3)
        database_url = f"sqlite:///{home / 'sextant.db'}" if own_database else None
        return cls(home, f"sqlite:///{copy}", http, grpc, metrics, database_url)

    def environment(self) -> dict[str, str]:
        env = {
            "SEXTANT_HOME": str(self.home),
            "SEXTANT_MLFLOW_TRACKING_URI": self.mlflow_uri,
            "SEXTANT_TRITON_HTTP_PORT": str(self.http_port),
            "SEXTANT_TRITON_GRPC_PORT": str(self.grpc_port),
            "SEXTANT_TRITON_METRICS_PORT": str(self.metrics_port),
            "SEXTANT_TRITON_INSTANCE_KIND": "cpu",
            "SEXTANT_GATEWAY_LOG_FLUSH_S": "0.2",
            "SEXTANT_GATEWAY_ENDPOINT_CACHE_S": "0",
        }
        if self.database_url:
            env["SEXTANT_DATABASE_URL"] = self.database_url
        return env

    def apply(self, patch: pytest.MonkeyPatch) -> None:
        for key, value in self.environment().items():
            patch.setenv(key, value)
        reset_settings()

    def server(self, log_dir: Path) -> TritonServer:
        options = TritonServerOptions(
            model_repository=self.home / "triton" / "models",
            backend_directory=self.home / "triton" / "backends",
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            metrics_port=self.metrics_port,
        )
        return TritonServer(options, log_path=log_dir / "triton.log")

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@contextmanager
def serve_gateway(settings: Settings) -> Iterator[str]:
    """The gateway app under a real uvicorn server in a thread, at the settings' gateway address."""
    import uvicorn

    from backend.gateway import create_app

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host=settings.gateway_host, port=settings.gateway_port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 30, "the gateway")
        yield settings.gateway_url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# Fixtures of this module -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> ServingStack:
    return ServingStack.create(tmp_path_factory.mktemp("endpoints"), trained_store(tmp_path_factory))


@pytest.fixture(scope="module")
def triton_server(stack: ServingStack) -> Iterator[TritonServer]:
    server = stack.server(stack.home.parent)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def triton(triton_server: TritonServer) -> Iterator[TritonClient]:
    with TritonClient(triton_server.grpc_url) as client:
        yield client


@pytest.fixture(autouse=True)
def stack_env(sextant_home: Path, stack: ServingStack, monkeypatch: pytest.MonkeyPatch) -> None:
    stack.apply(monkeypatch)


def _reset_aliases(names: list[str]) -> None:
    client = tracking_client()
    for name in names:
        for alias in list(client.get_registered_model(name).aliases):
            client.delete_registered_model_alias(name, alias)


# Tests -----------------------------------------------------------------------------------------


def test_migration_matches_the_models(database_url: str) -> None:
    with get_engine(database_url).connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    changes = [change for item in diff for change in (item if isinstance(item, list) else [item])]

    def table_of(change: tuple[Any, ...]) -> str | None:
        subject = change[1]
        if isinstance(subject, Table):
            return subject.name
        if isinstance(subject, Index) and subject.table is not None:
            return subject.table.name
        return change[2] if len(change) > 2 and isinstance(change[2], str) else None

    assert [change for change in changes if table_of(change) in SERVING_TABLES] == []


def test_endpoint_names_are_validated_and_unique(session: Session) -> None:
    created = endpoints.create_endpoint(session, name="churn-api", description="churn scores")
    assert (created.name, created.description, created.state, created.deployments) == (
        "churn-api",
        "churn scores",
        endpoints.NO_MODEL,
        (),
    )
    for bad in ["Churn", "-churn", "churn_api", "a" * 64, "", "churn/api"]:
        with pytest.raises(InvalidInputError, match="endpoint name"):
            endpoints.create_endpoint(session, name=bad)
    with pytest.raises(ConflictError, match="already exists"):
        endpoints.create_endpoint(session, name="churn-api")
    with pytest.raises(NotFoundError, match="no endpoint named 'nope'"):
        endpoints.get_endpoint(session, name="nope")
    assert [info.name for info in endpoints.list_endpoints(session)] == ["churn-api"]


def test_xgboost_and_torch_side_by_side_with_a_canary_split(
    session: Session, triton: TritonClient, stack: ServingStack
) -> None:
    endpoints.create_endpoint(session, name="canary")
    with pytest.raises(InvalidInputError, match="only model"):
        endpoints.deploy_model(session, endpoint="canary", model=CHURN, version=XGBOOST_VERSION, traffic_percent=50)

    first = endpoints.deploy_model(session, endpoint="canary", model=CHURN, version=XGBOOST_VERSION, triton=triton)
    assert [(d.version, d.traffic_percent, d.state, d.framework) for d in first.deployments] == [
        (XGBOOST_VERSION, 100, "ready", "xgboost")
    ]
    assert first.deployments[0].inputs[0] == endpoints.InputColumn("plan", "string")
    assert first.example is not None and set(first.example) == {column.name for column in first.inputs}

    both = endpoints.deploy_model(
        session, endpoint="canary", model=CHURN, version=TORCH_VERSION, traffic_percent=20, triton=triton
    )
    assert [(d.version, d.traffic_percent, d.state, d.framework) for d in both.deployments] == [
        (XGBOOST_VERSION, 80, "ready", "xgboost"),
        (TORCH_VERSION, 20, "ready", "torch"),
    ]
    assert both.state == endpoints.READY
    assert triton.is_model_ready(CHURN, XGBOOST_VERSION) and triton.is_model_ready(CHURN, TORCH_VERSION)
    live = endpoints.get_endpoint(session, name="canary", triton=triton)
    assert [d.state for d in live.deployments] == ["ready", "ready"]

    # Redeploying what is deployed changes its share; the others share the rest.
    again = endpoints.deploy_model(
        session, endpoint="canary", model=CHURN, version=TORCH_VERSION, traffic_percent=50, triton=triton
    )
    assert [d.traffic_percent for d in again.deployments] == [50, 50] and len(again.deployments) == 2
    split = endpoints.set_traffic(session, endpoint="canary", traffic={f"{CHURN}/1": 90, f"{CHURN}/2": 10})
    assert [d.traffic_percent for d in split.deployments] == [90, 10]
    with pytest.raises(InvalidInputError, match="sum to 100"):
        endpoints.set_traffic(session, endpoint="canary", traffic={f"{CHURN}/1": 90})

    after = endpoints.undeploy_model(session, endpoint="canary", deployment=f"{CHURN}/2", triton=triton)
    assert [(d.version, d.traffic_percent) for d in after.deployments] == [(XGBOOST_VERSION, 100)]
    wait_for(lambda: not triton.is_model_ready(CHURN, TORCH_VERSION), 10, "version 2 to unload")
    assert triton.is_model_ready(CHURN, XGBOOST_VERSION)
    repository = stack.home / "triton" / "models" / triton_model_name(CHURN)
    assert sorted(path.name for path in repository.iterdir() if path.name.isdigit()) == ["1"]

    endpoints.delete_endpoint(session, name="canary", triton=triton)
    wait_for(lambda: not triton.is_model_ready(CHURN, XGBOOST_VERSION), 10, "the model to unload")
    assert endpoints.list_endpoints(session) == []


def test_a_failed_load_reports_tritons_message(session: Session, triton: TritonClient, tmp_path: Path) -> None:
    client = tracking_client()
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{CHURN}/{XGBOOST_VERSION}", dst_path=str(tmp_path)))
    (local / "artifacts" / "xgboost_booster.json").write_text('{"learner": "truncated')
    if not client.search_registered_models(filter_string="name='churn-broken'"):
        client.create_registered_model("churn-broken")
    broken = client.create_model_version("churn-broken", source=str(local))
    endpoints.create_endpoint(session, name="broken")

    info = endpoints.deploy_model(session, endpoint="broken", model="churn-broken", version=int(broken.version),
                                  triton=triton)  # fmt: skip

    [deployment] = info.deployments
    assert deployment.state == endpoints.FAILED
    assert "xgboost" in deployment.message.lower()
    assert info.state == endpoints.FAILED
    live = endpoints.get_endpoint(session, name="broken", triton=triton).deployments[0]
    assert live.state == endpoints.FAILED and live.message
    endpoints.delete_endpoint(session, name="broken", triton=triton)


def test_moving_an_alias_redeploys_the_endpoints_that_follow_it(session: Session, triton: TritonClient) -> None:
    _reset_aliases([CHURN])
    registry.set_model_alias(session, name=CHURN, alias="champion", version=XGBOOST_VERSION, triton=triton)
    endpoints.create_endpoint(session, name="follows")
    endpoints.create_endpoint(session, name="pinned")
    followed = endpoints.deploy_model(session, endpoint="follows", model=CHURN, alias="champion", triton=triton)
    endpoints.deploy_model(session, endpoint="pinned", model=CHURN, version=XGBOOST_VERSION, triton=triton)
    assert [(d.ref, d.version, d.state) for d in followed.deployments] == [(f"{CHURN}@champion", 1, "ready")]
    assert endpoints.alias_followers(session, model=CHURN, alias="champion") == ["follows"]

    change = registry.set_model_alias(session, name=CHURN, alias="champion", version=SMALL_XGBOOST_VERSION,
                                      triton=triton)  # fmt: skip

    assert (change.previous_version, change.version, change.redeployed_endpoints) == (1, 3, ["follows"])
    moved = endpoints.get_endpoint(session, name="follows", triton=triton).deployments[0]
    assert (moved.version, moved.alias, moved.state) == (SMALL_XGBOOST_VERSION, "champion", "ready")
    pinned = endpoints.get_endpoint(session, name="pinned", triton=triton).deployments[0]
    assert (pinned.version, pinned.state) == (XGBOOST_VERSION, "ready")
    # One Triton model serves both versions: the pinned endpoint's and the alias's.
    assert triton.is_model_ready(CHURN, XGBOOST_VERSION) and triton.is_model_ready(CHURN, SMALL_XGBOOST_VERSION)
    # Setting the alias where it already is redeploys nothing.
    same = registry.set_model_alias(session, name=CHURN, alias="champion", version=3, triton=triton)
    assert same.redeployed_endpoints == []
    with pytest.raises(ConflictError, match="follows"):
        registry.delete_model_alias(session, name=CHURN, alias="champion")

    endpoints.undeploy_model(session, endpoint="follows", deployment=f"{CHURN}@champion", triton=triton)
    wait_for(lambda: not triton.is_model_ready(CHURN, SMALL_XGBOOST_VERSION), 10, "version 3 to unload")
    removed = registry.delete_model_alias(session, name=CHURN, alias="champion")
    assert removed.previous_version == SMALL_XGBOOST_VERSION
    for name in ("follows", "pinned"):
        endpoints.delete_endpoint(session, name=name, triton=triton)


def test_a_deploy_while_triton_is_down_waits_for_the_reload_hook(
    session: Session, triton: TritonClient, database_url: str
) -> None:
    endpoints.create_endpoint(session, name="later")
    (dead_port,) = free_ports(1)
    with TritonClient(f"127.0.0.1:{dead_port}", timeout_s=2) as down:
        info = endpoints.deploy_model(session, endpoint="later", model=CHARGES, version=1, triton=down)
        assert [(d.state, d.message) for d in info.deployments] == [("loading", endpoints.WAITING_FOR_TRITON)]
        assert endpoints.get_endpoint(session, name="later", triton=down).deployments[0].state == "unavailable"

    # The supervisor calls the hook named in the settings after every (re)start of tritonserver.
    assert get_settings().triton_reload_hook == "backend.serving.endpoints:reload_deployed_models"
    loaded = endpoints.reload_deployed_models(triton)

    assert loaded == {CHARGES: [1]}
    session.expire_all()
    [deployment] = endpoints.get_endpoint(session, name="later").deployments
    assert (deployment.state, deployment.message, deployment.task) == ("ready", "", "regression")
    assert triton.is_model_ready(CHARGES, 1)
    endpoints.delete_endpoint(session, name="later", triton=triton)


def test_the_request_log_is_written_in_batches(database_url: str) -> None:
    inserts: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO ENDPOINT_REQUESTS"):
            inserts.append(statement)

    engine = get_engine(database_url)
    event.listen(engine, "before_cursor_execute", count)
    request_log = RequestLog(database_url, flush_interval_s=0.2, batch_rows=50)
    request_log.start()
    try:
        for index in range(120):
            request_log.record(
                RequestRecord(
                    endpoint="batched",
                    status_code=200 if index % 10 else 400,
                    latency_ms=1.0 + index % 7,
                    instances=1,
                    model_name=CHURN,
                    model_version=1 + index % 2,
                )
            )
        wait_for(lambda: request_log.rows_written == 120, 10, "the log to be written")
    finally:
        request_log.stop()
        event.remove(engine, "before_cursor_execute", count)

    # One INSERT statement (executemany or multi-row VALUES) per batch: 50 + 50 + 20 rows.
    assert request_log.batches_written == len(inserts) <= 4
    with session_scope(database_url) as db:
        assert count_requests(db, endpoint="batched") == 120
        summary = summarize_requests(db, endpoint="batched")
    assert (summary.requests, summary.errors) == (120, 12)
    assert [(item.version, item.requests) for item in summary.versions] == [(1, 60), (2, 60)]
    assert summary.p50_ms is not None and 1.0 <= summary.p50_ms <= 7.0
