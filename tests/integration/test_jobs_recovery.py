"""``python -m backend.jobs.worker`` as a real process: SIGTERM stops it cleanly, and after ``kill -9`` the
next worker leaves no job running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.config import Settings
from backend.db import session_scope
from backend.jobs import JobStatus, list_jobs
from backend.jobs.executor import process_alive
from backend.jobs.queue import WORKER_STOPPED_REASON, list_workers
from backend.jobs.worker import Worker
from tests.job_modules import register_test_job_kinds, unregister_test_job_kinds
from tests.job_modules.harness import current, drive, finished, running_with_pid, submit, use_fast_settings, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    register_test_job_kinds()
    yield use_fast_settings(monkeypatch)
    unregister_test_job_kinds()


@pytest.fixture
def worker_process(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    # The environment (SEXTANT_DATABASE_URL, fast intervals) was set by the fixtures above.
    process = subprocess.Popen(
        [sys.executable, "-m", "backend.jobs.worker", "--concurrency", "2"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    yield process
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)
    if process.stderr:
        process.stderr.close()


@pytest.mark.parametrize("policy", ["fail", "requeue"])
def test_after_kill_9_of_the_worker_the_next_worker_leaves_no_job_running(
    worker_process: subprocess.Popen[bytes], settings: Settings, policy: str
) -> None:
    job = submit("test_sleep", {"ticks": 30, "interval": 0.05})
    wait_for(running_with_pid(job.id))
    orphan = current(job.id).pid
    assert orphan is not None

    worker_process.send_signal(signal.SIGKILL)
    worker_process.wait(timeout=10)
    # Nobody looks after the job now, yet its process lives on.
    assert current(job.id).status == JobStatus.RUNNING and process_alive(orphan)

    successor = Worker(settings=settings, on_interrupt=policy)  # type: ignore[arg-type]
    successor.start()
    try:
        recovered = current(job.id)
        wait_for(lambda: not process_alive(orphan), timeout=5)
        if policy == "fail":
            assert recovered.status == JobStatus.FAILED
            assert recovered.error is not None and recovered.error.startswith(WORKER_STOPPED_REASON)
            assert "is gone" in recovered.error
        else:
            assert recovered.status == JobStatus.QUEUED and recovered.attempts == 1
            drive(successor, finished(job.id))
            again = current(job.id)
            assert again.status == JobStatus.SUCCEEDED and again.attempts == 2
        with session_scope() as session:
            assert list_jobs(session, status="running").total == 0
    finally:
        successor.shutdown()


def test_sigterm_stops_the_worker_and_its_jobs_cleanly(worker_process: subprocess.Popen[bytes]) -> None:
    job = submit("test_sleep")
    wait_for(running_with_pid(job.id))
    pid = current(job.id).pid
    assert pid is not None

    worker_process.send_signal(signal.SIGTERM)
    assert worker_process.wait(timeout=10) == 0

    done = current(job.id)
    assert done.status == JobStatus.FAILED and done.error == WORKER_STOPPED_REASON
    assert not process_alive(pid)
    with session_scope() as session:
        assert list_workers(session) == []
        assert len(list_workers(session, include_stopped=True)) == 1
    assert worker_process.stderr is not None
    assert b"received SIGTERM: stopping" in worker_process.stderr.read()


def test_orphan_from_another_host_is_failed_after_its_heartbeat_goes_stale(
    worker_process: subprocess.Popen[bytes], settings: Settings
) -> None:
    job = submit("test_sleep")
    wait_for(running_with_pid(job.id))
    pid = current(job.id).pid
    assert pid is not None
    worker_process.send_signal(signal.SIGKILL)
    worker_process.wait(timeout=10)
    try:
        # A worker on "another host" cannot check the pid; only the silence tells it the owner is gone.
        observer = Worker(settings=settings.model_copy(update={"job_stale_seconds": 1.0}), hostname="elsewhere")
        observer.start()
        assert current(job.id).status == JobStatus.RUNNING
        drive(observer, lambda: current(job.id).status == JobStatus.FAILED, timeout=10)
        assert "no heartbeat for" in (current(job.id).error or "")
        # Nor can it kill a process over there; the orphan's own late writes are refused instead.
        assert process_alive(pid)
        observer.shutdown()
    finally:
        os.killpg(pid, signal.SIGKILL)
