"""The worker running real job processes, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from backend.config import Settings
from backend.db import session_scope
from backend.jobs import JobStatus, list_jobs, read_job_log, request_job_cancel
from backend.jobs.executor import process_alive
from backend.jobs.queue import WORKER_STOPPED_REASON, list_workers
from backend.jobs.worker import Worker
from tests.job_modules import register_test_job_kinds, unregister_test_job_kinds
from tests.job_modules.harness import (
    current,
    drive,
    finished,
    running_with_pid,
    submit,
    use_fast_settings,
    wait_for,
)

WorkerFactory = Callable[..., Worker]


@pytest.fixture
def settings(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    register_test_job_kinds()
    yield use_fast_settings(monkeypatch)
    unregister_test_job_kinds()


@pytest.fixture
def make_worker(settings: Settings) -> Iterator[WorkerFactory]:
    workers: list[Worker] = []

    def make(**options: Any) -> Worker:
        worker = Worker(settings=settings, **options)
        worker.start()
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.shutdown()


def test_job_succeeds_with_its_result_progress_and_log(make_worker: WorkerFactory) -> None:
    worker = make_worker()
    job = submit("test_echo", {"message": "hello"})
    drive(worker, finished(job.id))

    done = current(job.id)
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert done.result is not None and done.result["echo"] == {"message": "hello"} and done.result["attempt"] == 1
    assert done.result["pid"] == done.pid
    assert done.progress == 1.0 and done.error is None
    assert done.worker_id == worker.id and done.heartbeat_at is not None
    assert done.duration_seconds is not None and done.duration_seconds > 0
    with session_scope() as session:
        log = read_job_log(session, job_id=job.id).text
    assert "echo job" in log and "says hello" in log
    assert f"attempt 1 of job {job.id} (test_echo) starting" in log
    # The worker reaps the process and leaves the job's own record alone.
    drive(worker, lambda: worker.running_job_ids == [])
    assert current(job.id) == done


def test_failing_job_ends_failed_with_a_readable_error(make_worker: WorkerFactory) -> None:
    worker = make_worker()
    user_error = submit("test_fail", {"user_error": True})
    crash = submit("test_fail", {"user_error": False})
    drive(worker, finished(user_error.id, crash.id))

    first, second = current(user_error.id), current(crash.id)
    assert first.status == second.status == JobStatus.FAILED
    assert first.error == "target column 'churned' is constant: nothing to learn"
    assert second.error == "ZeroDivisionError: division by zero"
    assert first.result is None
    with session_scope() as session:
        log = read_job_log(session, job_id=crash.id).text
    assert "checking the target column" in log
    assert "Traceback (most recent call last)" in log and 'raise ZeroDivisionError("division by zero")' in log


def test_concurrency_limit_is_respected(make_worker: WorkerFactory) -> None:
    worker = make_worker(concurrency=2)
    ids = [submit("test_sleep", {"ticks": 8, "interval": 0.05}).id for _ in range(4)]
    most_running = 0

    def all_done_within_limit() -> bool:
        nonlocal most_running
        with session_scope() as session:
            running = list_jobs(session, status="running").total
        assert running <= 2 and len(worker.running_job_ids) <= 2
        most_running = max(most_running, running)
        return all(current(job_id).is_finished for job_id in ids)

    worker.run_once()
    with session_scope() as session:
        assert [job.id for job in list_jobs(session, status="running").items] == ids[1::-1]
        assert list_jobs(session, status="queued").total == 2
    drive(worker, all_done_within_limit)
    assert most_running == 2
    assert [current(job_id).status for job_id in ids] == [JobStatus.SUCCEEDED] * 4


def test_cancel_stops_a_running_job(make_worker: WorkerFactory) -> None:
    worker = make_worker()
    job = submit("test_sleep")
    # Running its main, so the runtime's SIGTERM handler is in place.
    drive(worker, lambda: "tick 1" in _log(job.id))
    pid = current(job.id).pid
    assert pid is not None

    with session_scope() as session:
        request_job_cancel(session, job_id=job.id)
    drive(worker, finished(job.id))

    done = current(job.id)
    assert done.status == JobStatus.CANCELLED and done.error == "cancelled by user"
    assert not process_alive(pid)
    with session_scope() as session:
        log = read_job_log(session, job_id=job.id).text
    assert "cancel requested: sent SIGTERM" in log and "stopped by SIGTERM" in log
    assert "exited with signal 15 (SIGTERM); job cancelled" in log


def test_cancel_escalates_to_sigkill_after_the_grace_period(make_worker: WorkerFactory) -> None:
    worker = make_worker()
    job = submit("test_sleep", {"ignore_sigterm": True})
    drive(worker, lambda: "tick 1" in _log(job.id))
    with session_scope() as session:
        request_job_cancel(session, job_id=job.id)
    drive(worker, finished(job.id))

    assert current(job.id).status == JobStatus.CANCELLED
    log = _log(job.id)
    assert "still running 0.5 s after SIGTERM: sent SIGKILL" in log
    assert "exited with signal 9 (SIGKILL); job cancelled" in log


def test_a_job_can_stop_itself_cleanly_on_cancel(make_worker: WorkerFactory) -> None:
    worker = make_worker()
    job = submit("test_sleep", {"cooperative": True, "interval": 0.1})
    drive(worker, lambda: "tick 1" in _log(job.id))
    with session_scope() as session:
        request_job_cancel(session, job_id=job.id)
    # Without worker passes nobody sends a signal: the job must notice the request itself.
    wait_for(finished(job.id))
    done = current(job.id)
    assert done.status == JobStatus.CANCELLED and done.error is not None
    assert done.error.startswith("stopped cleanly after tick")
    drive(worker, lambda: worker.running_job_ids == [])


def test_killed_job_process_ends_failed_with_the_signal(make_worker: WorkerFactory) -> None:
    worker = make_worker()
    job = submit("test_sleep")
    drive(worker, running_with_pid(job.id))
    pid = current(job.id).pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    drive(worker, finished(job.id))

    done = current(job.id)
    assert done.status == JobStatus.FAILED
    assert done.error == "job process exited with signal 9 (SIGKILL)"
    assert "job process exited with signal 9 (SIGKILL); job failed" in _log(job.id)


def test_log_and_progress_are_live_while_the_job_runs(make_worker: WorkerFactory) -> None:
    worker = make_worker()
    job = submit("test_sleep", {"ticks": 400, "interval": 0.02})
    drive(worker, lambda: "tick 2" in _log(job.id))

    with session_scope() as session:
        head = read_job_log(session, job_id=job.id)
    assert current(job.id).status == JobStatus.RUNNING and not head.job_finished
    drive(worker, lambda: "tick 6" in _log(job.id, head.next_offset))
    with session_scope() as session:
        tail = read_job_log(session, job_id=job.id, offset=head.next_offset)
    # Tailing from the offset returns only new lines.
    assert "tick 0\n" in head.text and "tick 0\n" not in tail.text
    running = current(job.id)
    assert running.progress is not None and 0 < running.progress < 1
    assert running.progress_message.startswith("tick ")
    with session_scope() as session:
        request_job_cancel(session, job_id=job.id)
    drive(worker, finished(job.id))


def test_worker_shutdown_fails_its_running_jobs(make_worker: WorkerFactory) -> None:
    worker = make_worker()
    job = submit("test_sleep")
    drive(worker, running_with_pid(job.id))
    pid = current(job.id).pid
    assert pid is not None
    worker.shutdown()

    done = current(job.id)
    assert done.status == JobStatus.FAILED and done.error == WORKER_STOPPED_REASON
    assert not process_alive(pid)
    with session_scope() as session:
        assert list_workers(session) == []


def test_worker_shutdown_can_requeue_and_the_job_runs_again(make_worker: WorkerFactory) -> None:
    first = make_worker(on_interrupt="requeue")
    job = submit("test_sleep", {"ticks": 3, "interval": 0.3})
    drive(first, running_with_pid(job.id))
    first.shutdown()
    assert current(job.id).status == JobStatus.QUEUED and current(job.id).attempts == 1

    second = make_worker(on_interrupt="requeue")
    drive(second, finished(job.id))
    done = current(job.id)
    assert done.status == JobStatus.SUCCEEDED and done.attempts == 2 and done.worker_id == second.id
    log = _log(job.id)
    assert "attempt 1 of job" in log and "attempt 2 of job" in log


def _log(job_id: int, offset: int = 0) -> str:
    with session_scope() as session:
        return read_job_log(session, job_id=job_id, offset=offset).text
