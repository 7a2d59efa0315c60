"""Cron schedules: stored in the DB, fired by the worker (``fire_due_schedules`` once per loop pass).

A schedule submits a job of its ``kind`` with its ``spec`` as the parameters (plus a ``schedule``
entry naming it and the due time). What the spec means is the kind's business: batch prediction
validates it before creating the schedule (``backend.batch.create_batch_schedule``) and resolves
"the latest version of dataset X" or ``MODEL@ALIAS`` when the job runs, not when it is fired.

Timing:

- ``next_run_at`` is the first cron time strictly after creation (or resume); after each firing,
  the first one strictly after the moment the worker fired it.
- A due time at most ``schedule_misfire_grace_seconds`` old when the worker sees it is on time and
  fires a run. Older due times were *missed* (no worker ran): with the ``once`` policy (default)
  one catch-up run is fired for the latest of them; with ``skip`` none, and the history says how
  many were skipped. Either way a schedule never fires more than one run per pass.
- Pausing stops firing; resuming starts from the next cron time after the resume (the paused
  period is not caught up).

Every function takes the current time as ``now`` (tests inject a clock). Several workers may fire
at once: due schedules are claimed with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL and under the
database write lock on SQLite, so each due time fires once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter
from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.config import Settings, get_settings
from backend.errors import ConflictError, InvalidInputError, NotFoundError, SextantError
from backend.jobs.service import submit_job
from backend.models import Job, Schedule, ScheduleRun, utcnow

CATCH_UP_POLICIES = ("once", "skip")
MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# Due times counted one by one when working out how many runs were missed; beyond, the count is capped.
MAX_COUNTED_MISSES = 10_000
SUBMITTED, SKIPPED, FAILED = "submitted", "skipped", "failed"


@dataclass(frozen=True)
class ScheduleInfo:
    id: int
    name: str
    kind: str
    cron: str
    timezone: str
    spec: dict[str, Any]
    catch_up: str
    paused: bool
    next_run_at: datetime | None
    last_run_at: datetime | None
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment else None

        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "cron": self.cron,
            "timezone": self.timezone,
            "spec": self.spec,
            "catch_up": self.catch_up,
            "paused": self.paused,
            "next_run_at": iso(self.next_run_at),
            "last_run_at": iso(self.last_run_at),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


@dataclass(frozen=True)
class ScheduleRunInfo:
    id: int
    schedule_id: int
    job_id: int | None
    # The job's status now (None when no job was submitted or it was deleted).
    job_status: str | None
    outcome: str
    scheduled_for: datetime
    fired_at: datetime
    catch_up: bool
    missed_runs: int
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "schedule_id": self.schedule_id,
            "job_id": self.job_id,
            "job_status": self.job_status,
            "outcome": self.outcome,
            "scheduled_for": self.scheduled_for.isoformat(),
            "fired_at": self.fired_at.isoformat(),
            "catch_up": self.catch_up,
            "missed_runs": self.missed_runs,
            "message": self.message,
        }


@dataclass(frozen=True)
class FiredRun:
    """What one pass of ``fire_due_schedules`` did for one schedule."""

    schedule_id: int
    schedule_name: str
    outcome: str
    job_id: int | None
    scheduled_for: datetime
    catch_up: bool
    missed_runs: int


def _to_info(row: Schedule) -> ScheduleInfo:
    return ScheduleInfo(
        id=row.id,
        name=row.name,
        kind=row.kind,
        cron=row.cron,
        timezone=row.timezone,
        spec=dict(row.spec or {}),
        catch_up=row.catch_up,
        paused=bool(row.paused),
        next_run_at=row.next_run_at,
        last_run_at=row.last_run_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def validate_schedule_name(name: str) -> str:
    name = (name or "").strip()
    if not NAME_PATTERN.match(name):
        raise InvalidInputError(
            f"schedule name {name!r} is invalid: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def validate_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInputError(f"unknown time zone {name!r}: use an IANA name such as UTC or Europe/Paris") from None
    return name


def validate_catch_up(policy: str) -> str:
    if policy not in CATCH_UP_POLICIES:
        raise InvalidInputError(f"catch-up policy must be one of {', '.join(CATCH_UP_POLICIES)}, not {policy!r}")
    return policy


def validate_cron(expression: str, *, timezone: str = "UTC", now: datetime | None = None) -> str:
    """A five-field cron expression (minute hour day-of-month month day-of-week) or a macro such as @daily."""
    text = " ".join((expression or "").split())
    if not text:
        raise InvalidInputError("the cron expression is empty")
    fields = text.split(" ")
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise InvalidInputError(f"unknown cron macro {text!r}; use one of {', '.join(MACROS)}")
        text = text.lower()
    elif len(fields) != 5:
        raise InvalidInputError(
            f"cron expression {text!r} has {len(fields)} fields; expected 5: minute hour day-of-month month "
            "day-of-week (e.g. '0 2 * * *' for 02:00 every day)"
        )
    try:
        next_run_time(text, after=now or utcnow(), timezone=timezone)
    except CroniterBadDateError:
        raise InvalidInputError(f"cron expression {text!r} never matches a date (e.g. 31 February)") from None
    except (CroniterBadCronError, CroniterError, ValueError, KeyError) as error:
        raise InvalidInputError(f"invalid cron expression {text!r}: {error}") from None
    return text


def next_run_time(cron: str, *, after: datetime, timezone: str = "UTC") -> datetime:
    """The first time ``cron`` matches strictly after ``after``, in UTC (the expression read in ``timezone``)."""
    start = _aware(after).astimezone(ZoneInfo(timezone))
    return croniter(cron, start).get_next(datetime).astimezone(UTC)


def upcoming_run_times(cron: str, *, after: datetime, timezone: str = "UTC", count: int = 5) -> list[datetime]:
    times = []
    moment = after
    for _ in range(count):
        moment = next_run_time(cron, after=moment, timezone=timezone)
        times.append(moment)
    return times


def _latest_due(cron: str, *, first_due: datetime, now: datetime, timezone: str) -> tuple[datetime, int]:
    """The latest cron time in [first_due, now] and how many cron times that interval holds."""
    zone = ZoneInfo(timezone)
    latest, count = first_due, 1
    iterator = croniter(cron, first_due.astimezone(zone))
    while count < MAX_COUNTED_MISSES:
        candidate = iterator.get_next(datetime).astimezone(UTC)
        if candidate > now:
            return latest, count
        latest, count = candidate, count + 1
    # A long outage: jump straight to the last due time (strictly-before of a moment just after now).
    latest = croniter(cron, (now + timedelta(microseconds=1)).astimezone(zone)).get_prev(datetime).astimezone(UTC)
    return latest, count


def create_schedule(
    session: Session,
    *,
    name: str,
    cron: str,
    kind: str,
    spec: dict[str, Any],
    timezone: str = "UTC",
    catch_up: str | None = None,
    paused: bool = False,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> ScheduleInfo:
    """Store a schedule; ``spec`` must already be valid for ``kind`` (its caller checks it)."""
    settings = settings or get_settings()
    now = _aware(now or utcnow())
    name = validate_schedule_name(name)
    timezone = validate_timezone(timezone)
    cron = validate_cron(cron, timezone=timezone, now=now)
    catch_up = validate_catch_up(catch_up or settings.schedule_catch_up)
    if session.scalar(select(Schedule.id).where(Schedule.name == name)) is not None:
        raise ConflictError(f"a schedule named {name!r} already exists")
    row = Schedule(
        name=name,
        kind=kind,
        cron=cron,
        timezone=timezone,
        spec=dict(spec),
        catch_up=catch_up,
        paused=paused,
        next_run_at=None if paused else next_run_time(cron, after=now, timezone=timezone),
        last_run_at=None,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise ConflictError(f"a schedule named {name!r} was created at the same time; try again") from None
    return _to_info(row)


def _get_row(session: Session, name: str) -> Schedule:
    row = session.scalar(select(Schedule).where(Schedule.name == name).execution_options(populate_existing=True))
    if row is None:
        raise NotFoundError(f"schedule {name!r} does not exist")
    return row


def get_schedule(session: Session, *, name: str) -> ScheduleInfo:
    return _to_info(_get_row(session, name))


def list_schedules(session: Session, *, kind: str | None = None) -> list[ScheduleInfo]:
    query = select(Schedule).order_by(Schedule.name)
    if kind is not None:
        query = query.where(Schedule.kind == kind)
    return [_to_info(row) for row in session.scalars(query)]


def pause_schedule(session: Session, *, name: str, now: datetime | None = None) -> ScheduleInfo:
    row = _get_row(session, name)
    row.paused = True
    row.next_run_at = None
    row.updated_at = _aware(now or utcnow())
    session.flush()
    return _to_info(row)


def resume_schedule(session: Session, *, name: str, now: datetime | None = None) -> ScheduleInfo:
    """Fire again from the next cron time after ``now``; runs due while paused are not caught up."""
    now = _aware(now or utcnow())
    row = _get_row(session, name)
    if row.paused:
        row.paused = False
        row.next_run_at = next_run_time(row.cron, after=now, timezone=row.timezone)
        row.updated_at = now
        session.flush()
    return _to_info(row)


def delete_schedule(session: Session, *, name: str) -> None:
    """Delete the schedule and its run history; the jobs it fired stay."""
    row = _get_row(session, name)
    session.execute(delete(ScheduleRun).where(ScheduleRun.schedule_id == row.id))
    session.delete(row)
    session.flush()


def list_schedule_runs(session: Session, *, name: str, limit: int = 20) -> list[ScheduleRunInfo]:
    """The schedule's firings, newest first, with the current status of each job."""
    row = _get_row(session, name)
    rows = session.execute(
        select(ScheduleRun, Job.status)
        .outerjoin(Job, Job.id == ScheduleRun.job_id)
        .where(ScheduleRun.schedule_id == row.id)
        .order_by(ScheduleRun.id.desc())
        .limit(limit)
    ).all()
    return [
        ScheduleRunInfo(
            id=run.id,
            schedule_id=run.schedule_id,
            job_id=run.job_id,
            job_status=status,
            outcome=run.outcome,
            scheduled_for=run.scheduled_for,
            fired_at=run.fired_at,
            catch_up=bool(run.catch_up),
            missed_runs=run.missed_runs,
            message=run.message,
        )
        for run, status in rows
    ]


def count_schedule_runs(session: Session, *, name: str) -> int:
    row = _get_row(session, name)
    return session.scalar(select(func.count(ScheduleRun.id)).where(ScheduleRun.schedule_id == row.id)) or 0


def _due(now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (Schedule.paused.is_(False), Schedule.next_run_at.is_not(None), Schedule.next_run_at <= now)


def _claim_due(session: Session, now: datetime) -> list[Schedule]:
    query = select(Schedule).where(*_due(now)).order_by(Schedule.next_run_at, Schedule.id)
    if session.get_bind().dialect.name == "sqlite":
        session.connection().exec_driver_sql("BEGIN IMMEDIATE")
    else:
        query = query.with_for_update(skip_locked=True)
    return list(session.scalars(query.execution_options(populate_existing=True)))


def fire_due_schedules(
    session: Session, *, now: datetime | None = None, settings: Settings | None = None
) -> list[FiredRun]:
    """Submit one job for every due schedule (or skip missed runs by policy); commits its own transaction.

    Cheap when nothing is due (one indexed query), so the worker calls it on every pass.
    """
    settings = settings or get_settings()
    now = _aware(now or utcnow())
    grace = timedelta(seconds=settings.schedule_misfire_grace_seconds)
    # Pending work in the session must not ride along with the claim (same pattern as claim_jobs).
    session.commit()
    # Most passes find nothing due: a plain read, so the worker does not take SQLite's write lock every second.
    if session.scalar(select(Schedule.id).where(*_due(now)).limit(1)) is None:
        session.commit()
        return []
    fired: list[FiredRun] = []
    try:
        for row in _claim_due(session, now):
            first_due = row.next_run_at
            assert first_due is not None
            latest, due_count = _latest_due(row.cron, first_due=first_due, now=now, timezone=row.timezone)
            on_time = now - latest <= grace
            missed = due_count - 1 if on_time else due_count
            catch_up = not on_time
            if catch_up and row.catch_up == "skip":
                outcome, job_id = SKIPPED, None
                message = f"skipped {missed} missed run{'s' if missed != 1 else ''} (catch-up policy: skip)"
            else:
                outcome, job_id, message = _submit(session, row, scheduled_for=latest, catch_up=catch_up)
                if catch_up:
                    message = f"catch-up run for {missed} missed run{'s' if missed != 1 else ''}" + (
                        f"; {message}" if message else ""
                    )
            session.add(
                ScheduleRun(
                    schedule_id=row.id,
                    job_id=job_id,
                    outcome=outcome,
                    scheduled_for=latest,
                    fired_at=now,
                    catch_up=catch_up and outcome == SUBMITTED,
                    missed_runs=missed,
                    message=message,
                )
            )
            row.next_run_at = next_run_time(row.cron, after=now, timezone=row.timezone)
            if outcome == SUBMITTED:
                row.last_run_at = now
            fired.append(
                FiredRun(
                    schedule_id=row.id,
                    schedule_name=row.name,
                    outcome=outcome,
                    job_id=job_id,
                    scheduled_for=latest,
                    catch_up=catch_up and outcome == SUBMITTED,
                    missed_runs=missed,
                )
            )
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return fired


def _submit(session: Session, row: Schedule, *, scheduled_for: datetime, catch_up: bool) -> tuple[str, int | None, str]:
    params = dict(row.spec or {})
    params["schedule"] = {
        "id": row.id,
        "name": row.name,
        "scheduled_for": scheduled_for.isoformat(),
        "catch_up": catch_up,
    }
    try:
        # The queue refuses a bad kind or params before writing anything, so the pass goes on.
        job = submit_job(session, kind=row.kind, params=params)
    except SextantError as error:
        return FAILED, None, f"not submitted: {error}"
    return SUBMITTED, job.id, ""
