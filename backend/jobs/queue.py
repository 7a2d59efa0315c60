"""The worker's side of the queue: atomic claims, heartbeats, guarded state changes, recovery.

Every state change of a running job is a conditional UPDATE (``status = 'running'`` and, from the job
process, ``attempts = <its attempt>``), so whoever ends a job first wins and a late writer (an orphaned
process, a worker that lost its job to recovery) changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend.jobs.service import FINISHED_STATUSES, JobInfo, JobStatus, to_job_info
from backend.models import Job, JobWorker, utcnow

InterruptPolicy = Literal["fail", "requeue"]
INTERRUPT_POLICIES: tuple[InterruptPolicy, ...] = ("fail", "requeue")
WORKER_STOPPED_REASON = "worker stopped while the job was running"
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    hostname: str
    pid: int
    concurrency: int
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None

    def is_alive(self, *, now: datetime, stale_after: timedelta) -> bool:
        return self.stopped_at is None and now - self.heartbeat_at <= stale_after


@dataclass(frozen=True)
class InterruptedJob:
    job: JobInfo
    reason: str
    # The job's process ran on this host, so this worker can (and must) stop what is left of it.
    local: bool


def _to_worker_info(row: JobWorker) -> WorkerInfo:
    return WorkerInfo(
        id=row.id,
        hostname=row.hostname,
        pid=row.pid,
        concurrency=row.concurrency,
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at,
        stopped_at=row.stopped_at,
    )


def register_worker(
    session: Session, *, worker_id: str, hostname: str, pid: int, concurrency: int, now: datetime | None = None
) -> WorkerInfo:
    now = now or utcnow()
    row = JobWorker(id=worker_id, hostname=hostname, pid=pid, concurrency=concurrency, started_at=now, heartbeat_at=now)
    session.add(row)
    session.flush()
    return _to_worker_info(row)


def heartbeat(session: Session, *, worker_id: str, job_ids: Collection[int], now: datetime | None = None) -> None:
    """Mark the worker and the jobs it is running as alive."""
    now = now or utcnow()
    session.execute(update(JobWorker).where(JobWorker.id == worker_id).values(heartbeat_at=now))
    if job_ids:
        session.execute(
            update(Job)
            .where(Job.id.in_(list(job_ids)), Job.status == JobStatus.RUNNING, Job.worker_id == worker_id)
            .values(heartbeat_at=now)
            .execution_options(synchronize_session=False)
        )


def stop_worker(session: Session, *, worker_id: str, now: datetime | None = None) -> None:
    session.execute(update(JobWorker).where(JobWorker.id == worker_id).values(stopped_at=now or utcnow()))


def list_workers(session: Session, *, include_stopped: bool = False) -> list[WorkerInfo]:
    query = select(JobWorker).order_by(JobWorker.started_at.desc())
    if not include_stopped:
        query = query.where(JobWorker.stopped_at.is_(None))
    return [_to_worker_info(row) for row in session.scalars(query)]


def claim_jobs(session: Session, *, worker_id: str, limit: int, now: datetime | None = None) -> list[JobInfo]:
    """Atomically move up to ``limit`` of the oldest queued jobs to running, owned by ``worker_id``.

    Runs in its own transaction: pending work in ``session`` is committed first, and the claim is
    committed before returning. PostgreSQL skips rows other claimers hold (``FOR UPDATE SKIP LOCKED``);
    SQLite takes the database write lock up front (``BEGIN IMMEDIATE``), so claimers queue instead.
    """
    if limit < 1:
        return []
    now = now or utcnow()
    session.commit()
    query = select(Job.id).where(Job.status == JobStatus.QUEUED).order_by(Job.id).limit(limit)
    if session.get_bind().dialect.name == "sqlite":
        session.connection().exec_driver_sql("BEGIN IMMEDIATE")
    else:
        query = query.with_for_update(skip_locked=True)
    try:
        ids = list(session.scalars(query))
        if not ids:
            session.commit()
            return []
        session.execute(
            update(Job)
            .where(Job.id.in_(ids), Job.status == JobStatus.QUEUED)
            .values(
                status=JobStatus.RUNNING,
                worker_id=worker_id,
                started_at=now,
                heartbeat_at=now,
                attempts=Job.attempts + 1,
                pid=None,
            )
            .execution_options(synchronize_session=False)
        )
        rows = session.scalars(
            select(Job)
            .where(Job.id.in_(ids), Job.status == JobStatus.RUNNING, Job.worker_id == worker_id)
            .order_by(Job.id)
            .execution_options(populate_existing=True)
        ).all()
        claimed = [to_job_info(row) for row in rows]
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return claimed


def record_job_started(session: Session, *, job_id: int, worker_id: str, pid: int | None, log_path: str) -> None:
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.worker_id == worker_id)
        .values(pid=pid, log_path=log_path)
        .execution_options(synchronize_session=False)
    )


def cancel_requested_ids(session: Session, *, job_ids: Collection[int]) -> set[int]:
    if not job_ids:
        return set()
    query = select(Job.id).where(
        Job.id.in_(list(job_ids)), Job.status == JobStatus.RUNNING, Job.cancel_requested.is_(True)
    )
    return set(session.scalars(query))


def finish_job(
    session: Session,
    *,
    job_id: int,
    status: JobStatus,
    attempt: int | None = None,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    now: datetime | None = None,
) -> bool:
    """End a running job; False (and nothing changed) when it had already ended or moved on to a new attempt."""
    if status not in FINISHED_STATUSES:
        raise ValueError(f"{status!r} is not a finished status")
    conditions = [Job.id == job_id, Job.status == JobStatus.RUNNING]
    if attempt is not None:
        conditions.append(Job.attempts == attempt)
    values: dict[str, Any] = {
        "status": status,
        "finished_at": now or utcnow(),
        "result": result,
        "error": error[:MAX_ERROR_CHARS] if error else None,
    }
    if status == JobStatus.SUCCEEDED:
        values["progress"] = 1.0
    outcome = session.execute(
        update(Job).where(*conditions).values(**values).execution_options(synchronize_session=False)
    )
    return bool(outcome.rowcount)


def requeue_job(session: Session, *, job_id: int, attempt: int, reason: str) -> bool:
    """Put a running job back in the queue for another attempt (its log keeps growing across attempts)."""
    outcome = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.attempts == attempt)
        .values(
            status=JobStatus.QUEUED,
            worker_id=None,
            pid=None,
            heartbeat_at=None,
            progress=None,
            progress_message=f"requeued: {reason}",
        )
        .execution_options(synchronize_session=False)
    )
    return bool(outcome.rowcount)


def update_job_progress(session: Session, *, job_id: int, attempt: int, fraction: float, message: str) -> bool:
    outcome = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.attempts == attempt)
        .values(progress=fraction, progress_message=message[:MAX_ERROR_CHARS])
        .execution_options(synchronize_session=False)
    )
    return bool(outcome.rowcount)


def interruption_reason(
    *,
    job: JobInfo,
    owner: WorkerInfo | None,
    now: datetime,
    stale_after: timedelta,
    hostname: str,
    pid_alive: Callable[[int], bool],
) -> str | None:
    """Why a running job has nobody looking after it any more, or None while its worker is alive."""
    if owner is not None and owner.stopped_at is not None:
        return f"{WORKER_STOPPED_REASON} (worker {owner.id} shut down)"
    if owner is not None and owner.hostname == hostname and not pid_alive(owner.pid):
        return f"{WORKER_STOPPED_REASON} (worker {owner.id} is gone)"
    last_sign_of_life = job.heartbeat_at or job.started_at
    if last_sign_of_life is None or now - last_sign_of_life > stale_after:
        silent = (
            ""
            if last_sign_of_life is None
            else f" (no heartbeat for {int((now - last_sign_of_life).total_seconds())} s)"
        )
        return f"{WORKER_STOPPED_REASON}{silent}"
    return None


def find_interrupted_jobs(
    session: Session,
    *,
    own_worker_id: str,
    hostname: str,
    stale_after: timedelta,
    pid_alive: Callable[[int], bool],
    now: datetime | None = None,
) -> list[InterruptedJob]:
    """Running jobs of other workers that are gone or silent for longer than ``stale_after``."""
    now = now or utcnow()
    rows = session.execute(
        select(Job, JobWorker)
        .outerjoin(JobWorker, JobWorker.id == Job.worker_id)
        .where(Job.status == JobStatus.RUNNING, (Job.worker_id != own_worker_id) | Job.worker_id.is_(None))
        .order_by(Job.id)
    ).all()
    interrupted = []
    for job_row, worker_row in rows:
        job = to_job_info(job_row)
        owner = _to_worker_info(worker_row) if worker_row is not None else None
        reason = interruption_reason(
            job=job, owner=owner, now=now, stale_after=stale_after, hostname=hostname, pid_alive=pid_alive
        )
        if reason:
            local = owner is not None and owner.hostname == hostname
            interrupted.append(InterruptedJob(job=job, reason=reason, local=local))
    return interrupted


def end_interrupted_job(
    session: Session, *, job: JobInfo, reason: str, policy: InterruptPolicy, max_attempts: int
) -> JobStatus | None:
    """Fail or requeue a job whose run was cut short; returns its new status (None if it had already moved on)."""
    if job.cancel_requested:
        done = finish_job(
            session, job_id=job.id, attempt=job.attempts, status=JobStatus.CANCELLED, error="cancelled by user"
        )
        return JobStatus.CANCELLED if done else None
    if policy == "requeue" and job.attempts < max_attempts:
        return JobStatus.QUEUED if requeue_job(session, job_id=job.id, attempt=job.attempts, reason=reason) else None
    if policy == "requeue":
        reason = f"{reason}; gave up after {job.attempts} attempts"
    failed = finish_job(session, job_id=job.id, attempt=job.attempts, status=JobStatus.FAILED, error=reason)
    return JobStatus.FAILED if failed else None
