"""The queue's services on SQLite and PostgreSQL: submit, list, cancel, retry, claim, logs, recovery."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Index, Table
from sqlalchemy.orm import Session

from backend.db import get_engine, session_scope
from backend.errors import ConflictError, InvalidInputError, NotFoundError
from backend.jobs import (
    JobStatus,
    get_job,
    list_jobs,
    read_job_log,
    request_job_cancel,
    retry_job,
    submit_job,
)
from backend.jobs.queue import (
    WORKER_STOPPED_REASON,
    cancel_requested_ids,
    claim_jobs,
    end_interrupted_job,
    find_interrupted_jobs,
    finish_job,
    heartbeat,
    list_workers,
    record_job_started,
    register_worker,
    stop_worker,
)
from backend.jobs.service import resolve_log_path
from backend.models import Base, utcnow
from tests.job_modules import register_test_job_kinds, unregister_test_job_kinds


@pytest.fixture(autouse=True)
def test_kinds() -> Iterator[None]:
    register_test_job_kinds()
    yield
    unregister_test_job_kinds()


def test_migration_matches_the_models(database_url: str) -> None:
    with get_engine(database_url).connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    # Column changes come grouped in lists; table and index changes carry the object itself.
    changes = [change for item in diff for change in (item if isinstance(item, list) else [item])]

    def table_of(change: tuple[Any, ...]) -> str | None:
        subject = change[1]
        if isinstance(subject, Table):
            return subject.name
        if isinstance(subject, Index) and subject.table is not None:
            return subject.table.name
        return change[2] if len(change) > 2 and isinstance(change[2], str) else None

    assert [change for change in changes if table_of(change) in {"jobs", "job_workers"}] == []


def test_submit_get_and_list_with_filters(session: Session) -> None:
    first = submit_job(session, kind="test_echo", params={"message": "a", "nested": {"n": [1, 2]}})
    second = submit_job(session, kind="test_sleep")
    third = submit_job(session, kind="test_echo", params={"message": "c"})

    assert first.status == JobStatus.QUEUED
    assert first.entry_module == "tests.job_modules.echo"
    assert first.started_at is None and first.duration_seconds is None
    assert get_job(session, job_id=first.id).params == {"message": "a", "nested": {"n": [1, 2]}}
    assert second.params == {}

    page = list_jobs(session)
    assert [job.id for job in page.items] == [third.id, second.id, first.id]
    assert page.total == 3
    echo = list_jobs(session, kind="test_echo", limit=1)
    assert [job.id for job in echo.items] == [third.id] and echo.total == 2
    assert list_jobs(session, kind="test_echo", offset=1, limit=1).items[0].id == first.id
    assert list_jobs(session, status="running").total == 0


def test_bad_submissions_and_queries_are_refused(session: Session) -> None:
    with pytest.raises(InvalidInputError, match="unknown job kind 'nope'"):
        submit_job(session, kind="nope", params={})
    with pytest.raises(InvalidInputError, match="plain JSON"):
        submit_job(session, kind="test_echo", params={"when": object()})
    with pytest.raises(InvalidInputError, match="JSON object"):
        submit_job(session, kind="test_echo", params=[1, 2])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="unknown job status 'done'"):
        list_jobs(session, status="done")
    with pytest.raises(NotFoundError, match="job 404 does not exist"):
        get_job(session, job_id=404)
    assert list_jobs(session).total == 0


def test_cancel_a_queued_job_at_once(session: Session) -> None:
    job = submit_job(session, kind="test_echo")
    cancelled = request_job_cancel(session, job_id=job.id)
    assert cancelled.status == JobStatus.CANCELLED
    assert cancelled.finished_at is not None and cancelled.cancel_requested
    with pytest.raises(ConflictError, match="already cancelled"):
        request_job_cancel(session, job_id=job.id)
    session.commit()
    # A cancelled job is never claimed.
    assert claim_jobs(session, worker_id="w1", limit=5) == []
    with pytest.raises(NotFoundError):
        request_job_cancel(session, job_id=job.id + 100)


def test_cancel_a_running_job_flags_it_for_its_worker(session: Session) -> None:
    job = submit_job(session, kind="test_sleep")
    [claimed] = claim_jobs(session, worker_id="w1", limit=1)
    assert claimed.id == job.id
    flagged = request_job_cancel(session, job_id=job.id)
    assert flagged.status == JobStatus.RUNNING and flagged.cancel_requested
    assert cancel_requested_ids(session, job_ids=[job.id]) == {job.id}


def test_claim_takes_the_oldest_jobs_up_to_the_limit(session: Session) -> None:
    ids = [submit_job(session, kind="test_echo", params={"i": i}).id for i in range(3)]
    before = utcnow()
    claimed = claim_jobs(session, worker_id="w1", limit=2)
    assert [job.id for job in claimed] == ids[:2]
    for job in claimed:
        assert job.status == JobStatus.RUNNING and job.worker_id == "w1" and job.attempts == 1
        assert job.started_at is not None and job.started_at >= before - timedelta(seconds=1)
        assert job.heartbeat_at == job.started_at
    assert [job.id for job in claim_jobs(session, worker_id="w2", limit=5)] == ids[2:]
    assert claim_jobs(session, worker_id="w2", limit=5) == []
    assert claim_jobs(session, worker_id="w2", limit=0) == []


def test_concurrent_claimers_never_take_the_same_job(database_url: str) -> None:
    with session_scope(database_url) as session:
        expected = {submit_job(session, kind="test_echo", params={"i": i}).id for i in range(40)}
    claims: dict[str, list[int]] = {}
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def claimer(name: str) -> None:
        try:
            barrier.wait()
            taken: list[int] = []
            with session_scope(database_url) as session:
                while batch := claim_jobs(session, worker_id=name, limit=2):
                    taken += [job.id for job in batch]
            claims[name] = taken
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    everything = [job_id for taken in claims.values() for job_id in taken]
    assert len(everything) == len(set(everything)) == len(expected)
    assert set(everything) == expected
    with session_scope(database_url) as session:
        for name, taken in claims.items():
            assert all(get_job(session, job_id=job_id).worker_id == name for job_id in taken)


def test_finish_is_guarded_by_status_and_attempt(session: Session) -> None:
    job = submit_job(session, kind="test_echo")
    [claimed] = claim_jobs(session, worker_id="w1", limit=1)
    assert not finish_job(session, job_id=job.id, attempt=claimed.attempts + 1, status=JobStatus.SUCCEEDED)
    assert finish_job(session, job_id=job.id, attempt=claimed.attempts, status=JobStatus.SUCCEEDED, result={"a": 1})
    # A second writer (an orphaned process, a worker's exit handler) changes nothing.
    assert not finish_job(session, job_id=job.id, status=JobStatus.FAILED, error="late")
    done = get_job(session, job_id=job.id)
    assert done.status == JobStatus.SUCCEEDED and done.result == {"a": 1} and done.error is None
    assert done.progress == 1.0 and done.duration_seconds is not None
    with pytest.raises(ValueError, match="not a finished status"):
        finish_job(session, job_id=job.id, status=JobStatus.RUNNING)


def test_retry_resubmits_a_finished_job(session: Session) -> None:
    job = submit_job(session, kind="test_fail", params={"user_error": False})
    with pytest.raises(ConflictError, match="still queued"):
        retry_job(session, job_id=job.id)
    claim_jobs(session, worker_id="w1", limit=1)
    finish_job(session, job_id=job.id, status=JobStatus.FAILED, error="boom")
    again = retry_job(session, job_id=job.id)
    assert again.id != job.id and again.status == JobStatus.QUEUED
    assert (again.kind, again.params, again.retry_of) == ("test_fail", {"user_error": False}, job.id)
    with pytest.raises(NotFoundError):
        retry_job(session, job_id=999)


def test_log_is_read_in_chunks_from_an_offset(session: Session, sextant_home: Path) -> None:
    job = submit_job(session, kind="test_echo")
    assert read_job_log(session, job_id=job.id).text == ""
    claim_jobs(session, worker_id="w1", limit=1)
    record_job_started(session, job_id=job.id, worker_id="w1", pid=None, log_path="logs/jobs/x.log")
    path = resolve_log_path("logs/jobs/x.log")
    assert path == sextant_home.resolve() / "logs" / "jobs" / "x.log"
    assert read_job_log(session, job_id=job.id).text == ""  # not written yet
    path.parent.mkdir(parents=True)
    path.write_bytes("first line\nprix: 5 €\n".encode())
    head = read_job_log(session, job_id=job.id, max_bytes=17)
    # "€" is three bytes; the chunk stops before it rather than splitting it.
    assert head.text == "first line\nprix: " and head.next_offset == 17 and not head.job_finished
    rest = read_job_log(session, job_id=job.id, offset=head.next_offset)
    assert rest.text == "5 €\n"
    with path.open("a") as log:
        log.write("more\n")
    assert read_job_log(session, job_id=job.id, offset=rest.next_offset).text == "more\n"
    with pytest.raises(InvalidInputError):
        read_job_log(session, job_id=job.id, offset=-1)


def test_heartbeats_and_worker_registry(session: Session) -> None:
    start = utcnow() - timedelta(minutes=5)
    register_worker(session, worker_id="w1", hostname="h", pid=1, concurrency=2, now=start)
    job = submit_job(session, kind="test_sleep")
    claim_jobs(session, worker_id="w1", limit=1, now=start)
    later = start + timedelta(minutes=1)
    heartbeat(session, worker_id="w1", job_ids=[job.id], now=later)
    assert get_job(session, job_id=job.id).heartbeat_at == later
    [worker] = list_workers(session)
    assert worker.heartbeat_at == later and worker.is_alive(now=later, stale_after=timedelta(seconds=30))
    assert not worker.is_alive(now=later + timedelta(minutes=1), stale_after=timedelta(seconds=30))
    stop_worker(session, worker_id="w1")
    assert list_workers(session) == []
    assert len(list_workers(session, include_stopped=True)) == 1


def test_recovery_finds_jobs_of_gone_workers(session: Session) -> None:
    now = utcnow()
    register_worker(session, worker_id="dead-local", hostname="here", pid=101, concurrency=1, now=now)
    register_worker(session, worker_id="alive-local", hostname="here", pid=102, concurrency=1, now=now)
    register_worker(session, worker_id="silent-remote", hostname="there", pid=101, concurrency=1, now=now)
    jobs = {}
    for owner in ("dead-local", "alive-local", "silent-remote", "me"):
        submit_job(session, kind="test_sleep")
        [jobs[owner]] = claim_jobs(session, worker_id=owner, limit=1, now=now)
    stale = timedelta(seconds=30)

    def find(at: object) -> dict[int, str]:
        found = find_interrupted_jobs(
            session, own_worker_id="me", hostname="here", stale_after=stale, pid_alive=lambda pid: pid == 102, now=at
        )
        return {item.job.id: item.reason for item in found}

    fresh = find(now + timedelta(seconds=1))
    assert list(fresh) == [jobs["dead-local"].id]
    assert fresh[jobs["dead-local"].id] == f"{WORKER_STOPPED_REASON} (worker dead-local is gone)"
    later = find(now + timedelta(seconds=31))
    # Silence makes every other worker's job stale; this worker's own jobs are never "interrupted".
    assert set(later) == {jobs["dead-local"].id, jobs["alive-local"].id, jobs["silent-remote"].id}
    assert later[jobs["silent-remote"].id] == f"{WORKER_STOPPED_REASON} (no heartbeat for 31 s)"


def test_interrupted_jobs_fail_or_requeue_up_to_max_attempts(session: Session) -> None:
    failing = submit_job(session, kind="test_sleep")
    requeued = submit_job(session, kind="test_sleep")
    cancelled = submit_job(session, kind="test_sleep")
    claimed = {job.id: job for job in claim_jobs(session, worker_id="gone", limit=3)}
    request_job_cancel(session, job_id=cancelled.id)

    def end(job_id: int, policy: str, max_attempts: int = 2) -> str | None:
        job = get_job(session, job_id=job_id)
        return end_interrupted_job(session, job=job, reason="gone", policy=policy, max_attempts=max_attempts)  # type: ignore[arg-type]

    assert end(failing.id, "fail") == JobStatus.FAILED
    assert get_job(session, job_id=failing.id).error == "gone"
    assert end(cancelled.id, "requeue") == JobStatus.CANCELLED

    assert end(requeued.id, "requeue") == JobStatus.QUEUED
    back = get_job(session, job_id=requeued.id)
    assert back.worker_id is None and back.attempts == claimed[requeued.id].attempts == 1
    session.commit()
    [second] = claim_jobs(session, worker_id="w2", limit=1)
    assert second.id == requeued.id and second.attempts == 2
    assert end(requeued.id, "requeue") == JobStatus.FAILED
    assert get_job(session, job_id=requeued.id).error == "gone; gave up after 2 attempts"
    # Already ended: nothing left to do.
    assert end(failing.id, "fail") is None
