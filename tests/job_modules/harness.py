"""Helpers the job tests share: fast worker settings, submitting, and driving a worker until a condition holds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from backend.config import Settings, get_settings, reset_settings
from backend.db import session_scope
from backend.jobs import JobInfo, get_job, submit_job
from backend.jobs.worker import Worker

FAST_SETTINGS = {
    "SEXTANT_WORKER_POLL_SECONDS": "0.05",
    "SEXTANT_JOB_HEARTBEAT_SECONDS": "0.2",
    "SEXTANT_JOB_STALE_SECONDS": "3",
    "SEXTANT_JOB_CANCEL_GRACE_SECONDS": "0.5",
}
TIMEOUT_S = 20.0


def use_fast_settings(monkeypatch: pytest.MonkeyPatch, **overrides: str) -> Settings:
    """Short intervals for this test (the environment reaches the job and worker processes too)."""
    for name, value in (FAST_SETTINGS | overrides).items():
        monkeypatch.setenv(name, value)
    reset_settings()
    return get_settings()


def submit(kind: str, params: dict[str, Any] | None = None) -> JobInfo:
    with session_scope() as session:
        return submit_job(session, kind=kind, params=params or {})


def current(job_id: int) -> JobInfo:
    with session_scope() as session:
        return get_job(session, job_id=job_id)


def wait_for(
    condition: Callable[[], bool], *, step: Callable[[], None] | None = None, timeout: float = TIMEOUT_S
) -> None:
    """Poll ``condition`` (running ``step``, e.g. a worker pass, before each check) until it holds."""
    deadline = time.monotonic() + timeout
    while True:
        if step is not None:
            step()
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:.0f} s")
        time.sleep(0.02)


def drive(worker: Worker, condition: Callable[[], bool], *, timeout: float = TIMEOUT_S) -> None:
    wait_for(condition, step=worker.run_once, timeout=timeout)


def running_with_pid(job_id: int) -> Callable[[], bool]:
    def check() -> bool:
        job = current(job_id)
        return job.status == "running" and job.pid is not None

    return check


def finished(*job_ids: int) -> Callable[[], bool]:
    return lambda: all(current(job_id).is_finished for job_id in job_ids)
