"""MLflow helpers: where runs are tracked, experiments, UI links and batched logging.

Jobs write to ``Settings.resolved_mlflow_tracking_uri`` (a SQLite store under SEXTANT_HOME by
default, the same store the ``make run`` tracking server serves). Metrics and params always go out
through ``MlflowClient.log_batch``: one call per up-to-1000 values, never one call per point.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import mlflow
from mlflow import MlflowClient
from mlflow.entities import LifecycleStage, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.utils.validation import MAX_ENTITIES_PER_BATCH, MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

from backend.config import Settings, get_settings

REMOTE_SCHEMES = ("http://", "https://", "databricks")
# Live curves reach the store at least this often during long trainings; short ones send one batch.
DEFAULT_FLUSH_INTERVAL_S = 10.0


def is_remote_tracking_uri(uri: str) -> bool:
    return uri.startswith(REMOTE_SCHEMES)


def configure_tracking(settings: Settings | None = None) -> str:
    """Point MLflow's tracking and registry at Sextant's store (creating its folders) and return the URI."""
    settings = settings or get_settings()
    uri = settings.resolved_mlflow_tracking_uri
    if not is_remote_tracking_uri(uri):
        settings.mlflow_artifacts_dir.mkdir(parents=True, exist_ok=True)
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def tracking_client(settings: Settings | None = None) -> MlflowClient:
    uri = configure_tracking(settings)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _artifact_folder_name(experiment: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", experiment).strip("-.") or "experiment"


def get_or_create_experiment(name: str, *, client: MlflowClient | None = None, settings: Settings | None = None) -> str:
    """The id of experiment ``name``, created (or restored from MLflow's trash) when needed."""
    settings = settings or get_settings()
    client = client or tracking_client(settings)
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == LifecycleStage.DELETED:
            client.restore_experiment(existing.experiment_id)
        return existing.experiment_id
    artifact_location = None
    if not is_remote_tracking_uri(settings.resolved_mlflow_tracking_uri):
        # A local store has no server to choose the artifact root: keep artifacts in the workspace,
        # where the tracking server started by `make run` serves them too.
        artifact_location = (settings.mlflow_artifacts_dir / _artifact_folder_name(name)).as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
        # Another job created it between our lookup and our create.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def run_url(experiment_id: str, run_id: str, *, settings: Settings | None = None) -> str:
    """The run's page in MLflow's own UI (the tracking server of `make run`)."""
    settings = settings or get_settings()
    return f"{settings.mlflow_ui_url}/#/experiments/{experiment_id}/runs/{run_id}"


def experiment_url(experiment_id: str, *, settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    return f"{settings.mlflow_ui_url}/#/experiments/{experiment_id}"


def model_version_url(name: str, version: int | str, *, settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    return f"{settings.mlflow_ui_url}/#/models/{quote(name, safe='')}/versions/{version}"


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_PARAM_VAL_LENGTH else text[: MAX_PARAM_VAL_LENGTH - 1] + "…"


class BatchLogger:
    """Buffers one run's metrics, params and tags and sends them with ``log_batch``.

    A call carries at most 1000 entities (≤ 100 of them params or tags), MLflow's limits. The buffer
    goes out when it is full, when ``flush_interval_s`` has passed since the last send (so long
    trainings show live curves), and on ``flush()``. ``calls`` counts the ``log_batch`` calls made.
    """

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        *,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.client = client
        self.run_id = run_id
        self.flush_interval_s = flush_interval_s
        self.calls = 0
        self._clock = clock
        self._last_flush = clock()
        self._metrics: list[Metric] = []
        self._params: list[Param] = []
        self._tags: list[RunTag] = []

    def log_metric(self, key: str, value: float, *, step: int = 0, timestamp_ms: int | None = None) -> None:
        self._metrics.append(Metric(key, float(value), timestamp_ms or int(time.time() * 1000), step))
        self._maybe_flush()

    def log_metrics(self, metrics: Mapping[str, float], *, step: int = 0) -> None:
        now = int(time.time() * 1000)
        self._metrics.extend(Metric(key, float(value), now, step) for key, value in metrics.items())
        self._maybe_flush()

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._params.extend(Param(key, _param_value(value)) for key, value in params.items())
        self._maybe_flush()

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._tags.extend(RunTag(key, str(value)) for key, value in tags.items())
        self._maybe_flush()

    @property
    def pending(self) -> int:
        return len(self._metrics) + len(self._params) + len(self._tags)

    def _maybe_flush(self) -> None:
        if self._clock() - self._last_flush >= self.flush_interval_s:
            self.flush()
            return
        # Full batches go out at once; the remainder waits to fill the next one.
        while (
            self.pending >= MAX_ENTITIES_PER_BATCH
            or len(self._params) >= MAX_PARAMS_TAGS_PER_BATCH
            or len(self._tags) >= MAX_PARAMS_TAGS_PER_BATCH
        ):
            self._send_batch()

    def _send_batch(self) -> None:
        params = self._params[:MAX_PARAMS_TAGS_PER_BATCH]
        tags = self._tags[:MAX_PARAMS_TAGS_PER_BATCH]
        metrics = self._metrics[: MAX_ENTITIES_PER_BATCH - len(params) - len(tags)]
        self.client.log_batch(self.run_id, metrics=metrics, params=params, tags=tags, synchronous=True)
        self.calls += 1
        del self._params[: len(params)], self._tags[: len(tags)], self._metrics[: len(metrics)]

    def flush(self) -> None:
        while self.pending:
            self._send_batch()
        self._last_flush = self._clock()
