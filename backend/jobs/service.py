"""Job services for every surface (page, CLI, REST): submit, inspect, list, cancel, retry, read logs.

The functions take a Session first and flush but do not commit (the caller's ``session_scope`` does);
they return frozen dataclasses, never ORM rows.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from backend.config import Settings, get_settings
from backend.errors import ConflictError, InvalidInputError, NotFoundError
from backend.jobs.registry import resolve_entry_module
from backend.models import Job, utcnow

MAX_PARAMS_BYTES = 1024**2
DEFAULT_LOG_CHUNK_BYTES = 1024**2


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


@dataclass(frozen=True)
class JobInfo:
    id: int
    kind: str
    status: str
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    progress: float | None
    progress_message: str
    cancel_requested: bool
    attempts: int
    retry_of: int | None
    entry_module: str
    pid: int | None
    worker_id: str | None
    log_path: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def duration_seconds(self) -> float | None:
        """Run time so far (running) or in total (finished); None before it starts."""
        if self.started_at is None:
            return None
        end = self.finished_at or utcnow()
        return max(0.0, (end - self.started_at).total_seconds())

    def as_dict(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment else None

        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "params": self.params,
            "result": self.result,
            "error": self.error,
            "progress": self.progress,
            "progress_message": self.progress_message,
            "cancel_requested": self.cancel_requested,
            "attempts": self.attempts,
            "retry_of": self.retry_of,
            "entry_module": self.entry_module,
            "pid": self.pid,
            "worker_id": self.worker_id,
            "log_path": self.log_path,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "heartbeat_at": iso(self.heartbeat_at),
            "duration_seconds": self.duration_seconds,
        }


@dataclass(frozen=True)
class JobPage:
    items: list[JobInfo]
    total: int


@dataclass(frozen=True)
class JobLogChunk:
    text: str
    # Pass back as ``offset`` to read only what was written since.
    next_offset: int
    status: str

    @property
    def job_finished(self) -> bool:
        return self.status in FINISHED_STATUSES


def to_job_info(row: Job) -> JobInfo:
    return JobInfo(
        id=row.id,
        kind=row.kind,
        status=row.status,
        params=dict(row.params or {}),
        result=row.result,
        error=row.error,
        progress=row.progress,
        progress_message=row.progress_message or "",
        cancel_requested=bool(row.cancel_requested),
        attempts=row.attempts or 0,
        retry_of=row.retry_of,
        entry_module=row.entry_module,
        pid=row.pid,
        worker_id=row.worker_id,
        log_path=row.log_path,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        heartbeat_at=row.heartbeat_at,
    )


def job_log_relpath(job_id: int) -> str:
    return f"logs/jobs/job-{job_id}.log"


def resolve_log_path(log_path: str, settings: Settings | None = None) -> Path:
    path = Path(log_path)
    return path if path.is_absolute() else (settings or get_settings()).resolved_home / path


def _validate_params(params: dict[str, Any] | None) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidInputError("job parameters must be a JSON object")
    try:
        encoded = json.dumps(params, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(f"job parameters must be plain JSON: {error}") from None
    if len(encoded) > MAX_PARAMS_BYTES:
        raise InvalidInputError(f"job parameters are {len(encoded):,} bytes; the limit is {MAX_PARAMS_BYTES:,}")
    return json.loads(encoded)


def _get_row(session: Session, job_id: int) -> Job:
    row = session.get(Job, job_id, populate_existing=True)
    if row is None:
        raise NotFoundError(f"job {job_id} does not exist")
    return row


def submit_job(
    session: Session, *, kind: str, params: dict[str, Any] | None = None, retry_of: int | None = None
) -> JobInfo:
    """Queue a job of a registered kind; a worker picks it up. Unknown kinds and non-JSON params are refused."""
    row = Job(
        kind=kind,
        entry_module=resolve_entry_module(kind),
        status=JobStatus.QUEUED,
        params=_validate_params(params),
        progress_message="",
        cancel_requested=False,
        attempts=0,
        retry_of=retry_of,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return to_job_info(row)


def get_job(session: Session, *, job_id: int) -> JobInfo:
    return to_job_info(_get_row(session, job_id))


def list_jobs(
    session: Session,
    *,
    kind: str | None = None,
    status: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> JobPage:
    """Newest first, paginated on the server."""
    if status is not None and status not in set(JobStatus):
        raise InvalidInputError(f"unknown job status {status!r}; expected one of {', '.join(JobStatus)}")
    if offset < 0 or not 1 <= limit <= 1000:
        raise InvalidInputError("offset must be ≥ 0 and limit between 1 and 1000")
    query = select(Job)
    if kind:
        query = query.where(Job.kind == kind)
    if status:
        query = query.where(Job.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Job.id.desc()).offset(offset).limit(limit)).all()
    return JobPage(items=[to_job_info(row) for row in rows], total=total)


def request_job_cancel(session: Session, *, job_id: int) -> JobInfo:
    """A queued job is cancelled at once; a running one is flagged and its worker stops it."""
    now = utcnow()
    # Conditional updates, so a worker claiming the job at the same moment cannot be overridden.
    queued = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.CANCELLED, cancel_requested=True, finished_at=now, error="cancelled before it started")
        .execution_options(synchronize_session=False)
    )
    if not queued.rowcount:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        )
    row = _get_row(session, job_id)
    if row.status in FINISHED_STATUSES and not queued.rowcount:
        raise ConflictError(f"job {job_id} already {row.status}; there is nothing to cancel")
    return to_job_info(row)


def retry_job(session: Session, *, job_id: int) -> JobInfo:
    """Submit a finished job's kind and parameters again, as a new job."""
    row = _get_row(session, job_id)
    if row.status not in FINISHED_STATUSES:
        raise ConflictError(f"job {job_id} is still {row.status}; only a finished job can be retried")
    return submit_job(session, kind=row.kind, params=row.params, retry_of=row.id)


def complete_utf8_prefix(data: bytes) -> bytes:
    """Drop a multi-byte character cut off at the end, so the next read starts on its first byte."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return data
        if byte >= 0xC0:
            needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return data if back >= needed else data[:-back]
    return data


def read_job_log(
    session: Session,
    *,
    job_id: int,
    offset: int = 0,
    max_bytes: int = DEFAULT_LOG_CHUNK_BYTES,
    settings: Settings | None = None,
) -> JobLogChunk:
    """The job's log from byte ``offset``; call again with ``next_offset`` to tail it while it runs."""
    if offset < 0 or max_bytes < 1:
        raise InvalidInputError("offset must be ≥ 0 and max_bytes ≥ 1")
    row = _get_row(session, job_id)
    if not row.log_path:
        return JobLogChunk(text="", next_offset=offset, status=row.status)
    path = resolve_log_path(row.log_path, settings)
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read(max_bytes)
    except FileNotFoundError:
        return JobLogChunk(text="", next_offset=offset, status=row.status)
    data = complete_utf8_prefix(data)
    return JobLogChunk(text=data.decode("utf-8", errors="replace"), next_offset=offset + len(data), status=row.status)


def validate_fraction(fraction: float) -> float:
    """Progress is a fraction in [0, 1]; out-of-range values are clamped, NaN is a bug in the caller."""
    value = float(fraction)
    if math.isnan(value):
        raise ValueError("progress must be a number between 0 and 1, got NaN")
    return min(1.0, max(0.0, value))
