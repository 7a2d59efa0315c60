"""Everything at a glance: the figures the Dashboard page shows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.jobs import JobInfo, list_jobs
from backend.models import Dataset, DatasetVersion, Job
from backend.serving.endpoints import EndpointInfo, list_endpoints
from backend.serving.request_log import summarize_requests


@dataclass(frozen=True)
class RecentVersion:
    name: str
    version: int
    rows: int
    columns: int
    created_at: datetime


@dataclass(frozen=True)
class EndpointHealth:
    name: str
    # "model vN (traffic%)" per deployment, and the worst state among them.
    serving: str
    state: str
    requests_last_hour: int
    errors_last_hour: int
    p50_ms: float | None


@dataclass(frozen=True)
class WorkspaceOverview:
    dataset_count: int
    version_count: int
    total_rows: int
    stored_source_bytes: int
    recent_versions: list[RecentVersion]
    # Job counts by status ("queued", "running", ...) and the newest jobs.
    job_counts: dict[str, int]
    recent_jobs: list[JobInfo]
    endpoints: list[EndpointHealth]


def get_workspace_overview(session: Session, *, recent: int = 8) -> WorkspaceOverview:
    dataset_count = session.scalar(select(func.count()).select_from(Dataset)) or 0
    version_count, source_bytes = session.execute(
        select(func.count(DatasetVersion.id), func.coalesce(func.sum(DatasetVersion.source_bytes), 0))
    ).one()
    latest = (
        select(DatasetVersion.dataset_id, func.max(DatasetVersion.version).label("latest"))
        .group_by(DatasetVersion.dataset_id)
        .subquery()
    )
    total_rows = session.scalar(
        select(func.coalesce(func.sum(DatasetVersion.row_count), 0)).join(
            latest,
            (latest.c.dataset_id == DatasetVersion.dataset_id) & (latest.c.latest == DatasetVersion.version),
        )
    )
    rows = session.execute(
        select(Dataset.name, DatasetVersion)
        .join(DatasetVersion, DatasetVersion.dataset_id == Dataset.id)
        .order_by(DatasetVersion.created_at.desc(), DatasetVersion.id.desc())
        .limit(recent)
    ).all()
    job_counts = dict(session.execute(select(Job.status, func.count(Job.id)).group_by(Job.status)).tuples().all())
    return WorkspaceOverview(
        dataset_count=dataset_count,
        version_count=version_count,
        total_rows=int(total_rows or 0),
        stored_source_bytes=int(source_bytes),
        recent_versions=[RecentVersion(name, v.version, v.row_count, v.column_count, v.created_at) for name, v in rows],
        job_counts=job_counts,
        recent_jobs=list_jobs(session, limit=recent).items,
        endpoints=[_endpoint_health(session, endpoint) for endpoint in list_endpoints(session)],
    )


STATE_ORDER = ("failed", "loading", "ready")


def _endpoint_health(session: Session, endpoint: EndpointInfo) -> EndpointHealth:
    summary = summarize_requests(session, endpoint=endpoint.name)
    states = [d.state for d in endpoint.deployments]
    worst = next((state for state in STATE_ORDER if state in states), "empty")
    return EndpointHealth(
        name=endpoint.name,
        serving=", ".join(f"{d.model} v{d.version} ({d.traffic_percent}%)" for d in endpoint.deployments) or "nothing",
        state=worst,
        requests_last_hour=summary.requests,
        errors_last_hour=summary.errors,
        p50_ms=summary.p50_ms,
    )
