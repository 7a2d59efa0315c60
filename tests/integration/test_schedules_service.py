"""Schedules on SQLite and PostgreSQL with an injected clock: next run, pause/resume, firing, catch-up once vs skip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from backend.errors import ConflictError, NotFoundError
from backend.jobs import get_job, list_jobs
from backend.jobs.worker import Worker
from backend.schedules import (
    create_schedule,
    delete_schedule,
    fire_due_schedules,
    get_schedule,
    list_schedule_runs,
    list_schedules,
    pause_schedule,
    resume_schedule,
)

T0 = datetime(2026, 2, 2, 12, 0, tzinfo=UTC)
SPEC = {"model": "churn-churned@champion", "input": "dataset:churn", "output_dataset": "churn-predictions"}


def nightly(session: Session, *, name: str = "nightly", catch_up: str = "once", **options: object) -> None:
    create_schedule(
        session, name=name, cron="0 2 * * *", kind="batch_predict", spec=SPEC, catch_up=catch_up, now=T0, **options
    )


def test_create_computes_the_next_run_and_refuses_duplicates(session: Session) -> None:
    nightly(session)
    info = get_schedule(session, name="nightly")
    assert info.next_run_at == datetime(2026, 2, 3, 2, 0, tzinfo=UTC)
    assert (info.paused, info.catch_up, info.kind, info.spec) == (False, "once", "batch_predict", SPEC)
    with pytest.raises(ConflictError, match="already exists"):
        nightly(session)
    paris = create_schedule(
        session, name="paris", cron="0 2 * * *", kind="batch_predict", spec=SPEC, timezone="Europe/Paris", now=T0
    )
    assert paris.next_run_at == datetime(2026, 2, 3, 1, 0, tzinfo=UTC)
    assert [item.name for item in list_schedules(session)] == ["nightly", "paris"]


def test_nothing_fires_before_the_due_time(session: Session) -> None:
    nightly(session)
    assert fire_due_schedules(session, now=datetime(2026, 2, 3, 1, 59, tzinfo=UTC)) == []
    assert list_jobs(session).total == 0


def test_an_on_time_firing_queues_one_job_with_the_schedule_named(session: Session) -> None:
    nightly(session)
    due = datetime(2026, 2, 3, 2, 0, tzinfo=UTC)
    [fired] = fire_due_schedules(session, now=due + timedelta(seconds=1))
    assert (fired.outcome, fired.scheduled_for, fired.catch_up, fired.missed_runs) == ("submitted", due, False, 0)
    job = get_job(session, job_id=fired.job_id)
    assert job.kind == "batch_predict" and job.status == "queued"
    assert job.params == SPEC | {
        "schedule": {"id": fired.schedule_id, "name": "nightly", "scheduled_for": due.isoformat(), "catch_up": False}
    }
    info = get_schedule(session, name="nightly")
    assert info.next_run_at == datetime(2026, 2, 4, 2, 0, tzinfo=UTC)
    assert info.last_run_at == due + timedelta(seconds=1)
    # The same moment again: nothing is due any more.
    assert fire_due_schedules(session, now=due + timedelta(seconds=2)) == []
    [run] = list_schedule_runs(session, name="nightly")
    assert (run.job_id, run.job_status, run.outcome) == (fired.job_id, "queued", "submitted")


def test_missed_runs_fire_once_on_catch_up(session: Session) -> None:
    nightly(session)
    # The worker was down from before the first due time until three days later, mid-morning.
    back = datetime(2026, 2, 5, 9, 30, tzinfo=UTC)
    [fired] = fire_due_schedules(session, now=back)
    assert fired.outcome == "submitted" and fired.catch_up and fired.missed_runs == 3
    assert fired.scheduled_for == datetime(2026, 2, 5, 2, 0, tzinfo=UTC)
    assert list_jobs(session).total == 1
    assert get_job(session, job_id=fired.job_id).params["schedule"]["catch_up"] is True
    assert get_schedule(session, name="nightly").next_run_at == datetime(2026, 2, 6, 2, 0, tzinfo=UTC)
    [run] = list_schedule_runs(session, name="nightly")
    assert run.message == "catch-up run for 3 missed runs"


def test_skip_policy_fires_nothing_for_missed_runs(session: Session) -> None:
    nightly(session, catch_up="skip")
    [fired] = fire_due_schedules(session, now=datetime(2026, 2, 5, 9, 30, tzinfo=UTC))
    assert (fired.outcome, fired.job_id, fired.missed_runs) == ("skipped", None, 3)
    assert list_jobs(session).total == 0
    assert get_schedule(session, name="nightly").next_run_at == datetime(2026, 2, 6, 2, 0, tzinfo=UTC)
    assert list_schedule_runs(session, name="nightly")[0].message == "skipped 3 missed runs (catch-up policy: skip)"
    # Back on time at the next due time, it fires again.
    [fired] = fire_due_schedules(session, now=datetime(2026, 2, 6, 2, 0, 30, tzinfo=UTC))
    assert fired.outcome == "submitted" and not fired.catch_up and fired.missed_runs == 0


def test_skip_policy_still_runs_a_due_time_that_is_on_time(session: Session) -> None:
    nightly(session, catch_up="skip")
    # Down for two nights, back 10 s after the third due time: that one is on time, the two before were missed.
    [fired] = fire_due_schedules(session, now=datetime(2026, 2, 5, 2, 0, 10, tzinfo=UTC))
    assert (fired.outcome, fired.catch_up, fired.missed_runs) == ("submitted", False, 2)


def test_the_default_policy_comes_from_settings(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.config import reset_settings

    monkeypatch.setenv("SEXTANT_SCHEDULE_CATCH_UP", "skip")
    reset_settings()
    create_schedule(session, name="default", cron="@hourly", kind="batch_predict", spec=SPEC, now=T0)
    assert get_schedule(session, name="default").catch_up == "skip"


def test_pause_and_resume_skip_the_paused_period(session: Session) -> None:
    nightly(session)
    paused = pause_schedule(session, name="nightly", now=T0)
    assert paused.paused and paused.next_run_at is None
    assert fire_due_schedules(session, now=datetime(2026, 2, 10, 3, 0, tzinfo=UTC)) == []
    resumed = resume_schedule(session, name="nightly", now=datetime(2026, 2, 10, 3, 0, tzinfo=UTC))
    assert not resumed.paused and resumed.next_run_at == datetime(2026, 2, 11, 2, 0, tzinfo=UTC)
    assert fire_due_schedules(session, now=datetime(2026, 2, 10, 3, 0, 5, tzinfo=UTC)) == []
    assert list_jobs(session).total == 0
    # Resuming an active schedule changes nothing.
    assert resume_schedule(session, name="nightly", now=T0).next_run_at == resumed.next_run_at


def test_delete_removes_the_history_but_keeps_the_jobs(session: Session) -> None:
    nightly(session)
    [fired] = fire_due_schedules(session, now=datetime(2026, 2, 3, 2, 0, tzinfo=UTC))
    delete_schedule(session, name="nightly")
    assert list_schedules(session) == []
    with pytest.raises(NotFoundError, match="schedule 'nightly' does not exist"):
        list_schedule_runs(session, name="nightly")
    assert get_job(session, job_id=fired.job_id).status == "queued"


def test_a_spec_the_queue_refuses_is_recorded_as_a_failed_firing(session: Session) -> None:
    create_schedule(session, name="odd", cron="@hourly", kind="no_such_kind", spec=SPEC, now=T0)
    [fired] = fire_due_schedules(session, now=T0 + timedelta(hours=1))
    assert fired.outcome == "failed" and fired.job_id is None
    [run] = list_schedule_runs(session, name="odd")
    assert "not submitted: unknown job kind 'no_such_kind'" in run.message
    assert get_schedule(session, name="odd").next_run_at == T0 + timedelta(hours=2)


def test_the_worker_fires_due_schedules_with_its_clock(session: Session, database_url: str) -> None:
    nightly(session)
    session.commit()
    clock = [datetime(2026, 2, 3, 2, 0, 1, tzinfo=UTC)]
    worker = Worker(concurrency=1, clock=lambda: clock[0])
    # Fire without starting anything: the hook runs on its own, as in every loop pass.
    worker._fire_schedules()
    session.expire_all()
    [job] = list_jobs(session).items
    assert job.params["schedule"]["name"] == "nightly"
    worker._fire_schedules()
    assert list_jobs(session).total == 1
