"""Experiments: browse MLflow runs page by page on the server, compare runs, read Optuna studies.

Everything goes through MLflow's search API with ``max_results`` + ``page_token`` and
``order_by``, so a page costs the same with 10 runs or 10,000 in an experiment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import optuna
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException
from sqlalchemy import Engine, create_engine, text

from backend.config import Settings
from backend.errors import InvalidInputError, NotFoundError
from backend.tracking import tracking_client

PARENT_RUN_TAG = "mlflow.parentRunId"
SORTABLE_ATTRIBUTES = ("start_time", "end_time", "run_name", "status")
MAX_COMPARED_RUNS = 20


@dataclass(frozen=True)
class ExperimentSummary:
    experiment_id: str
    name: str
    last_update: datetime | None


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    run_name: str
    status: str
    start_time: datetime | None
    duration_s: float | None
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]

    @property
    def parent_run_id(self) -> str | None:
        return self.tags.get(PARENT_RUN_TAG)


@dataclass(frozen=True)
class RunsPage:
    runs: list[RunSummary]
    next_page_token: str | None
    metric_keys: list[str]
    param_keys: list[str]
    # Known when the store answers counts (SQL stores); None through a tracking server.
    total: int | None = None


@dataclass(frozen=True)
class RunComparison:
    runs: list[RunSummary]
    # Rows are parameter names, columns run names; only the rows whose values differ unless asked.
    params: pd.DataFrame
    metrics: pd.DataFrame
    varying_params: list[str] = field(default_factory=list)


def mlflow_client(settings: Settings | None = None) -> MlflowClient:
    return tracking_client(settings)


def _time(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if ms else None


def _to_summary(run: Run) -> RunSummary:
    info = run.info
    duration = (info.end_time - info.start_time) / 1000 if info.end_time and info.start_time else None
    return RunSummary(
        run_id=info.run_id,
        run_name=info.run_name or info.run_id[:8],
        status=info.status,
        start_time=_time(info.start_time),
        duration_s=duration,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        tags={k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.") or k == PARENT_RUN_TAG},
    )


def list_experiments(client: MlflowClient) -> list[ExperimentSummary]:
    experiments = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, order_by=["last_update_time DESC"])
    return [
        ExperimentSummary(e.experiment_id, e.name, _time(e.last_update_time))
        for e in experiments
        if e.name != "Default" or _has_runs(client, e.experiment_id)
    ]


def _has_runs(client: MlflowClient, experiment_id: str) -> bool:
    return bool(client.search_runs([experiment_id], max_results=1))


def sort_clause(sort_by: str, descending: bool) -> str:
    """``metrics.<k>``, ``params.<k>`` or a run attribute, validated so a bad key is a clear error."""
    prefix, _, key = sort_by.partition(".")
    if sort_by in SORTABLE_ATTRIBUTES:
        column = f"attributes.{sort_by}"
    elif prefix in ("metrics", "params") and key:
        column = f"{prefix}.`{key}`"
    else:
        raise InvalidInputError(f"cannot sort by {sort_by!r}: use a run attribute, metrics.<name> or params.<name>")
    return f"{column} {'DESC' if descending else 'ASC'}"


def search_runs_page(
    client: MlflowClient,
    *,
    experiment_id: str,
    sort_by: str = "start_time",
    descending: bool = True,
    page_size: int = 50,
    page_token: str | None = None,
    top_level_only: bool = False,
    filter_string: str = "",
) -> RunsPage:
    if not 1 <= page_size <= 1000:
        raise InvalidInputError("page size must be between 1 and 1000")
    order = sort_clause(sort_by, descending)
    if not filter_string and is_database_uri(client.tracking_uri):
        if page_token is not None and not page_token.isdigit():
            raise InvalidInputError(f"invalid page token {page_token!r}")
        return _search_runs_page_sql(
            client,
            experiment_id=experiment_id,
            sort_by=sort_by,
            descending=descending,
            page_size=page_size,
            offset=int(page_token or 0),
            top_level_only=top_level_only,
        )
    filters = [filter_string] if filter_string else []
    if top_level_only:
        # Tuning trials are nested runs; hiding them keeps the table about whole jobs.
        filters.append(f"tags.`{PARENT_RUN_TAG}` IS NULL")
    try:
        result = client.search_runs(
            [experiment_id],
            filter_string=" and ".join(filters),
            max_results=page_size,
            order_by=[order],
            page_token=page_token,
        )
    except MlflowException as error:
        raise InvalidInputError(f"MLflow refused the search: {error.message}") from None
    return _page([_to_summary(run) for run in result], next_page_token=result.token or None, total=None)


def _page(runs: list[RunSummary], *, next_page_token: str | None, total: int | None) -> RunsPage:
    return RunsPage(
        runs=runs,
        next_page_token=next_page_token,
        metric_keys=sorted({k for r in runs for k in r.metrics}),
        param_keys=sorted({k for r in runs for k in r.params}),
        total=total,
    )


def is_database_uri(uri: str) -> bool:
    return uri.startswith(("sqlite:", "postgresql", "mysql"))


_store_engines: dict[str, Engine] = {}


def _store_engine(uri: str) -> Engine:
    if uri not in _store_engines:
        _store_engines[uri] = create_engine(uri)
    return _store_engines[uri]


def _search_runs_page_sql(
    client: MlflowClient,
    *,
    experiment_id: str,
    sort_by: str,
    descending: bool,
    page_size: int,
    offset: int,
    top_level_only: bool,
) -> RunsPage:
    """Order and count in one indexed SQL query on the tracking store, then fetch just the page.

    MLflow's own search sorts with a SELECT DISTINCT over whole run rows: on SQLite with 10,000
    runs a metric-sorted page took 3.6 s (bench/experiments_runs.py); this path takes
    milliseconds. It reads MLflow's long-stable ``runs`` / ``latest_metrics`` / ``params`` / ``tags``
    tables; stores without SQL (a tracking server URL) use MLflow's search instead.
    """
    direction = "DESC" if descending else "ASC"
    joins, key = "", None
    prefix, _, name = sort_by.partition(".")
    if sort_by in SORTABLE_ATTRIBUTES:
        column = {"run_name": "r.name"}.get(sort_by, f"r.{sort_by}")
    elif prefix == "metrics":
        # MLflow stores NaN as 0.0 with is_nan set: sort it with the missing values, at the end.
        joins, key = "LEFT JOIN latest_metrics s ON s.run_uuid = r.run_uuid AND s.key = :key", name
        column = "(CASE WHEN s.is_nan THEN NULL ELSE s.value END)"
    else:
        joins, column, key = "LEFT JOIN params s ON s.run_uuid = r.run_uuid AND s.key = :key", "s.value", name
    where = "r.experiment_id = :experiment AND r.lifecycle_stage = 'active'"
    if top_level_only:
        where += f" AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = '{PARENT_RUN_TAG}')"
    query = (
        f"SELECT r.run_uuid FROM runs r {joins} WHERE {where} "
        f"ORDER BY ({column} IS NULL), {column} {direction}, r.start_time DESC, r.run_uuid LIMIT :limit OFFSET :offset"
    )
    parameters = {"experiment": int(experiment_id), "key": key, "limit": page_size, "offset": offset}
    with _store_engine(client.tracking_uri).connect() as connection:
        total = connection.execute(text(f"SELECT COUNT(*) FROM runs r WHERE {where}"), parameters).scalar_one()
        run_ids = [row[0] for row in connection.execute(text(query), parameters)]
    runs = _fetch_runs(client, experiment_id, run_ids)
    next_offset = offset + page_size
    return _page(runs, next_page_token=str(next_offset) if next_offset < total else None, total=total)


def _fetch_runs(client: MlflowClient, experiment_id: str, run_ids: list[str]) -> list[RunSummary]:
    if not run_ids:
        return []
    quoted = ", ".join(f"'{run_id}'" for run_id in run_ids)
    found = client.search_runs(
        [experiment_id], filter_string=f"attributes.run_id IN ({quoted})", max_results=len(run_ids)
    )
    by_id = {run.info.run_id: _to_summary(run) for run in found}
    return [by_id[run_id] for run_id in run_ids if run_id in by_id]


def get_runs(client: MlflowClient, *, run_ids: list[str]) -> list[RunSummary]:
    runs = []
    for run_id in run_ids:
        try:
            runs.append(_to_summary(client.get_run(run_id)))
        except MlflowException:
            raise NotFoundError(f"run {run_id!r} does not exist") from None
    return runs


def compare_runs(client: MlflowClient, *, run_ids: list[str], only_differences: bool = True) -> RunComparison:
    if not run_ids:
        raise InvalidInputError("choose at least one run to compare")
    if len(run_ids) > MAX_COMPARED_RUNS:
        raise InvalidInputError(f"compare at most {MAX_COMPARED_RUNS} runs at once")
    runs = get_runs(client, run_ids=run_ids)
    labels = _unique_labels(runs)
    params = pd.DataFrame({label: run.params for label, run in zip(labels, runs, strict=True)}).sort_index()
    metrics = pd.DataFrame({label: run.metrics for label, run in zip(labels, runs, strict=True)}).sort_index()
    varying = [name for name, row in params.iterrows() if row.astype(str).nunique(dropna=False) > 1]
    if only_differences and len(runs) > 1:
        params = params.loc[varying]
    return RunComparison(runs=runs, params=params, metrics=metrics, varying_params=varying)


def _unique_labels(runs: list[RunSummary]) -> list[str]:
    names = [run.run_name for run in runs]
    return [
        name if names.count(name) == 1 else f"{name} ({run.run_id[:6]})" for name, run in zip(names, runs, strict=True)
    ]


def metric_histories(client: MlflowClient, *, run_ids: list[str], metric_key: str) -> pd.DataFrame:
    """Long-form (run, step, value) rows for overlaid curves."""
    runs = get_runs(client, run_ids=run_ids)
    labels = _unique_labels(runs)
    rows = [
        {"run": label, "step": point.step, "value": point.value}
        for label, run in zip(labels, runs, strict=True)
        for point in client.get_metric_history(run.run_id, metric_key)
    ]
    return pd.DataFrame(rows, columns=["run", "step", "value"])


def parallel_coordinates_frame(runs: list[RunSummary], *, metric_key: str) -> pd.DataFrame:
    """Per run: the parameters that vary across ``runs`` (numeric ones as numbers) and the metric."""
    param_keys = sorted({k for r in runs for k in r.params})
    varying = [k for k in param_keys if len({r.params.get(k) for r in runs}) > 1]
    rows = []
    for run in runs:
        if metric_key not in run.metrics:
            continue
        row: dict[str, Any] = {"run": run.run_name, metric_key: run.metrics[metric_key]}
        for key in varying:
            row[key] = _as_number(run.params.get(key))
        rows.append(row)
    return pd.DataFrame(rows, columns=["run", *varying, metric_key])


def _as_number(value: str | None) -> float | str | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    return number if math.isfinite(number) else value


def child_runs(client: MlflowClient, *, parent_run_id: str, experiment_id: str) -> list[RunSummary]:
    result = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}'",
        max_results=1000,
        order_by=["attributes.start_time ASC"],
    )
    return [_to_summary(run) for run in result]


@dataclass(frozen=True)
class StudySummary:
    # (trial number, objective value, best so far)
    history: pd.DataFrame
    importances: pd.DataFrame
    direction: str


def study_from_trials(trials: list[RunSummary], *, objective_key: str, direction: str) -> StudySummary:
    """Rebuild an Optuna study from nested trial runs to chart its history and parameter importances."""
    if direction not in ("minimize", "maximize"):
        raise InvalidInputError("direction must be minimize or maximize")
    scored = [t for t in trials if objective_key in t.metrics]
    study = optuna.create_study(direction=direction)
    param_keys = sorted({k for t in scored for k in t.params})
    distributions = _distributions(scored, param_keys)
    for trial in scored:
        present = {k: d for k, d in distributions.items() if k in trial.params}
        params = {
            k: trial.params[k]
            if isinstance(d, optuna.distributions.CategoricalDistribution)
            else float(trial.params[k])
            for k, d in present.items()
        }
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=present, value=trial.metrics[objective_key])
        )
    values = [t.metrics[objective_key] for t in scored]
    best = pd.Series(values).cummin() if direction == "minimize" else pd.Series(values).cummax()
    history = pd.DataFrame({"trial": range(len(values)), "value": values, "best": best})
    importances = pd.DataFrame(columns=["parameter", "importance"])
    if len(scored) >= 2 and distributions:
        try:
            scores = optuna.importance.get_param_importances(study)
            importances = pd.DataFrame({"parameter": list(scores), "importance": list(scores.values())})
        except (RuntimeError, ValueError):
            # Importances need parameters that vary; a study too small to tell has none.
            pass
    return StudySummary(history=history, importances=importances, direction=direction)


def _distributions(trials: list[RunSummary], param_keys: list[str]) -> dict[str, optuna.distributions.BaseDistribution]:
    distributions: dict[str, optuna.distributions.BaseDistribution] = {}
    for key in param_keys:
        values = [_as_number(t.params[key]) for t in trials if key in t.params]
        if len(set(map(str, values))) < 2:
            continue
        if all(isinstance(v, float) for v in values):
            low, high = min(values), max(values)
            distributions[key] = optuna.distributions.FloatDistribution(low, high)
        else:
            distributions[key] = optuna.distributions.CategoricalDistribution(sorted({str(v) for v in values}))
    return distributions


LOWER_IS_BETTER = ("loss", "rmse", "mae", "mse", "error")


def metric_direction(metric_key: str) -> str:
    """Whether a metric is minimised (losses, errors) or maximised (AUC, accuracy, R², ...)."""
    return "minimize" if any(word in metric_key.lower() for word in LOWER_IS_BETTER) else "maximize"


CURVE_METRICS = ("validation_loss", "train_loss")


def preferred_curve_metric(metric_keys: list[str]) -> str:
    """The metric whose curve says most: the per-iteration losses trainers log, else the first key."""
    for key in (*CURVE_METRICS, *(k for k in metric_keys if "loss" in k and not k.startswith("test_"))):
        if key in metric_keys:
            return key
    return metric_keys[0]
