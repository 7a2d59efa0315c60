"""The worker process: ``python -m backend.jobs.worker`` (a line of infra/Procfile, so ``make run`` starts it).

Each pass of its loop (every ``worker_poll_seconds``):

1. notices runs that ended and records how, when the job process did not record it itself
   (killed → failed, "job process exited with signal 9 (SIGKILL)");
2. stops runs whose job has a cancel request: SIGTERM to the process group, SIGKILL after
   ``job_cancel_grace_seconds``; the job ends cancelled;
3. heartbeats itself and its running jobs (every ``job_heartbeat_seconds``);
4. recovers running jobs whose worker is gone: on start, then every ``job_stale_seconds / 2``.
   A worker is gone when it shut down, when it ran on this host and its pid is dead, or when its
   jobs have had no heartbeat for ``job_stale_seconds``. What is left of such a job's process on this
   host is killed;
5. fires due cron schedules (``backend.schedules.fire_due_schedules``), queueing their jobs;
6. claims queued jobs up to ``worker_concurrency`` running at once and starts them.

A job cut short by a worker (this one stopping, or one that died) is handled by the interrupt
policy: ``fail`` (the default) ends it failed with "worker stopped while the job was running";
``requeue`` (``--on-interrupt requeue``) puts it back in the queue, up to ``--max-attempts`` runs in
all, then fails it. A job with a pending cancel request ends cancelled either way.

SIGTERM or SIGINT stops the worker cleanly: no new claims, every running job gets SIGTERM, then
SIGKILL after the grace period (at most 3 s here, to finish inside honcho's 5 s), and is ended by
the policy above.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType

from sqlalchemy.orm import Session

from backend.config import Settings, get_settings
from backend.db import migrate, session_scope
from backend.jobs.executor import (
    ExecutionHandle,
    JobExecutor,
    LocalSubprocessExecutor,
    describe_exit,
    kill_orphaned_job_process,
    process_alive,
)
from backend.jobs.queue import (
    INTERRUPT_POLICIES,
    WORKER_STOPPED_REASON,
    InterruptPolicy,
    cancel_requested_ids,
    claim_jobs,
    end_interrupted_job,
    find_interrupted_jobs,
    finish_job,
    heartbeat,
    record_job_started,
    register_worker,
    stop_worker,
)
from backend.jobs.service import JobInfo, JobStatus, get_job, job_log_relpath, resolve_log_path
from backend.models import utcnow
from backend.schedules import fire_due_schedules

logger = logging.getLogger("sextant.worker")
DEFAULT_MAX_ATTEMPTS = 3
# After SIGKILL a process is gone within milliseconds; this only bounds a wedged shutdown.
KILL_WAIT_S = 5.0
# honcho (`make run`) SIGKILLs a process 5 s after its SIGTERM: the worker must have stopped its jobs
# and recorded their end by then, or they stay "running" until the next worker starts.
SHUTDOWN_GRACE_S = 3.0


@dataclass
class _Run:
    job: JobInfo
    handle: ExecutionHandle
    log_file: Path
    stop_sent_at: float | None = None
    killed: bool = False


def append_log_line(log_file: Path, message: str, *, now: datetime | None = None) -> None:
    """A worker note in the job's log, between the job's own lines (both append, so lines never interleave)."""
    stamp = (now or utcnow()).strftime("%Y-%m-%d %H:%M:%S")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a", encoding="utf-8") as log:
        log.write(f"[sextant worker {stamp} UTC] {message}\n")


class Worker:
    def __init__(
        self,
        *,
        settings: Settings | None = None,
        executor: JobExecutor | None = None,
        concurrency: int | None = None,
        on_interrupt: InterruptPolicy = "fail",
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        hostname: str | None = None,
        pid_alive: Callable[[int], bool] = process_alive,
        kill_orphan: Callable[[int, int], bool] = kill_orphaned_job_process,
    ):
        if on_interrupt not in INTERRUPT_POLICIES:
            raise ValueError(f"on_interrupt must be one of {INTERRUPT_POLICIES}, got {on_interrupt!r}")
        self.settings = settings or get_settings()
        self.executor = executor or LocalSubprocessExecutor(settings=self.settings)
        self.concurrency = concurrency or self.settings.worker_concurrency
        self.on_interrupt: InterruptPolicy = on_interrupt
        self.max_attempts = max(1, max_attempts)
        self.hostname = hostname or socket.gethostname()
        self.id = f"{self.hostname}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._clock = clock
        self._monotonic = monotonic
        self._pid_alive = pid_alive
        self._kill_orphan = kill_orphan
        self._runs: dict[int, _Run] = {}
        self._next_heartbeat = 0.0
        self._next_recovery = 0.0
        self._started = False
        self._stopping = False

    @property
    def running_job_ids(self) -> list[int]:
        return sorted(self._runs)

    def _session(self) -> AbstractContextManager[Session]:
        return session_scope(self.settings.resolved_database_url)

    def start(self) -> None:
        """Register this worker and recover jobs that an earlier worker left running."""
        self.settings.logs_dir.mkdir(parents=True, exist_ok=True)
        with self._session() as session:
            register_worker(
                session,
                worker_id=self.id,
                hostname=self.hostname,
                pid=os.getpid(),
                concurrency=self.concurrency,
                now=self._clock(),
            )
        self._started = True
        logger.info("worker %s started: concurrency %d, on interrupt: %s", self.id, self.concurrency, self.on_interrupt)
        self.recover()
        self._next_recovery = self._monotonic() + self.settings.job_stale_seconds / 2

    def recover(self) -> dict[int, JobStatus]:
        """End or requeue running jobs whose worker is gone; returns their new statuses."""
        with self._session() as session:
            interrupted = find_interrupted_jobs(
                session,
                own_worker_id=self.id,
                hostname=self.hostname,
                stale_after=timedelta(seconds=self.settings.job_stale_seconds),
                pid_alive=self._pid_alive,
                now=self._clock(),
            )
        outcome: dict[int, JobStatus] = {}
        for item in interrupted:
            # Kill first: a requeued job must never run twice at once.
            if item.local and item.job.pid and self._kill_orphan(item.job.pid, item.job.id):
                logger.warning("killed process %d left behind by job %d", item.job.pid, item.job.id)
            with self._session() as session:
                status = end_interrupted_job(
                    session, job=item.job, reason=item.reason, policy=self.on_interrupt, max_attempts=self.max_attempts
                )
            if status is None:
                continue
            outcome[item.job.id] = status
            logger.warning("job %d: %s; now %s", item.job.id, item.reason, status)
            if item.job.log_path:
                append_log_line(resolve_log_path(item.job.log_path, self.settings), f"{item.reason}; job {status}")
        return outcome

    def run_once(self) -> None:
        if not self._started:
            self.start()
        self._reap()
        self._stop_cancelled()
        now = self._monotonic()
        if now >= self._next_heartbeat:
            with self._session() as session:
                heartbeat(session, worker_id=self.id, job_ids=list(self._runs), now=self._clock())
            self._next_heartbeat = now + self.settings.job_heartbeat_seconds
        if now >= self._next_recovery:
            self.recover()
            self._next_recovery = now + self.settings.job_stale_seconds / 2
        if not self._stopping:
            self._fire_schedules()
            self._claim_and_start()

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set, then shut down cleanly. A failing pass is logged, not fatal."""
        self.start()
        try:
            while not stop.is_set():
                try:
                    self.run_once()
                except Exception:
                    # The DB may be briefly unreachable; exiting would make honcho stop the whole stack.
                    logger.exception("worker pass failed; retrying")
                stop.wait(self.settings.worker_poll_seconds)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop every running job (SIGTERM, SIGKILL after the grace period) and end it by the interrupt policy."""
        self._stopping = True
        now = self._monotonic()
        for run in self._runs.values():
            if run.stop_sent_at is None:
                self.executor.terminate(run.handle)
                run.stop_sent_at = now
        kill_at = now + min(self.settings.job_cancel_grace_seconds, SHUTDOWN_GRACE_S)
        give_up_at = kill_at + KILL_WAIT_S
        while self._runs and self._monotonic() < give_up_at:
            self._reap(interrupted=True)
            if self._monotonic() >= kill_at:
                for run in self._runs.values():
                    if not run.killed:
                        self.executor.terminate(run.handle, force=True)
                        run.killed = True
            if self._runs:
                time.sleep(0.02)
        if self._runs:
            logger.error("jobs %s did not stop; the next worker recovers them", sorted(self._runs))
        if self._started:
            with self._session() as session:
                stop_worker(session, worker_id=self.id, now=self._clock())
        logger.info("worker %s stopped", self.id)

    def _fire_schedules(self) -> None:
        """Submit the jobs of due cron schedules (backend.schedules), so this pass can claim them."""
        try:
            with self._session() as session:
                fired = fire_due_schedules(session, now=self._clock(), settings=self.settings)
        except Exception:
            # A broken schedule must not keep queued jobs from starting.
            logger.exception("firing schedules failed; retrying next pass")
            return
        for run in fired:
            logger.info("schedule %s: %s job %s", run.schedule_name, run.outcome, run.job_id or "-")

    def _claim_and_start(self) -> None:
        capacity = self.concurrency - len(self._runs)
        if capacity <= 0:
            return
        with self._session() as session:
            claimed = claim_jobs(session, worker_id=self.id, limit=capacity, now=self._clock())
        for job in claimed:
            self._start(job)

    def _start(self, job: JobInfo) -> None:
        log_path = job_log_relpath(job.id)
        log_file = resolve_log_path(log_path, self.settings)
        append_log_line(log_file, f"attempt {job.attempts} of job {job.id} ({job.kind}) starting on worker {self.id}")
        try:
            handle = self.executor.start(job, log_file=log_file)
        except Exception as error:
            reason = f"could not start the job process: {error}"
            append_log_line(log_file, reason)
            with self._session() as session:
                finish_job(session, job_id=job.id, attempt=job.attempts, status=JobStatus.FAILED, error=reason)
            return
        with self._session() as session:
            record_job_started(session, job_id=job.id, worker_id=self.id, pid=handle.pid, log_path=log_path)
        self._runs[job.id] = _Run(job=job, handle=handle, log_file=log_file)
        logger.info("job %d (%s) started: %s", job.id, job.kind, handle.external_id)

    def _reap(self, *, interrupted: bool = False) -> None:
        for job_id, run in list(self._runs.items()):
            returncode = self.executor.poll(run.handle)
            if returncode is None:
                continue
            del self._runs[job_id]
            self._record_exit(run, returncode, interrupted=interrupted)

    def _record_exit(self, run: _Run, returncode: int, *, interrupted: bool) -> None:
        with self._session() as session:
            job = get_job(session, job_id=run.job.id)
            if job.status != JobStatus.RUNNING or job.attempts != run.handle.attempt:
                logger.info("job %d %s (exit status %d)", job.id, job.status, returncode)
                return
            reason = describe_exit(returncode)
            status: JobStatus | None
            if interrupted:
                reason = WORKER_STOPPED_REASON
                status = end_interrupted_job(
                    session, job=job, reason=reason, policy=self.on_interrupt, max_attempts=self.max_attempts
                )
            elif job.cancel_requested:
                status = JobStatus.CANCELLED
                finish_job(session, job_id=job.id, attempt=job.attempts, status=status, error="cancelled by user")
            else:
                status = JobStatus.FAILED
                finish_job(session, job_id=job.id, attempt=job.attempts, status=status, error=reason)
        logger.info("job %d %s: %s", job.id, status, reason)
        append_log_line(run.log_file, f"{describe_exit(returncode)}; job {status}")

    def _stop_cancelled(self) -> None:
        now = self._monotonic()
        waiting = [job_id for job_id, run in self._runs.items() if run.stop_sent_at is None]
        if waiting:
            with self._session() as session:
                to_stop = cancel_requested_ids(session, job_ids=waiting)
            for job_id in sorted(to_stop):
                run = self._runs[job_id]
                self.executor.terminate(run.handle)
                run.stop_sent_at = now
                append_log_line(run.log_file, "cancel requested: sent SIGTERM")
        grace = self.settings.job_cancel_grace_seconds
        for run in self._runs.values():
            if run.stop_sent_at is not None and not run.killed and now - run.stop_sent_at >= grace:
                self.executor.terminate(run.handle, force=True)
                run.killed = True
                append_log_line(run.log_file, f"still running {grace:g} s after SIGTERM: sent SIGKILL")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run Sextant jobs from the queue until stopped.")
    parser.add_argument("--concurrency", type=int, default=None, help="jobs at once (default: worker_concurrency)")
    parser.add_argument(
        "--on-interrupt",
        choices=INTERRUPT_POLICIES,
        default="fail",
        help="what happens to a job whose worker stopped or died while it ran",
    )
    parser.add_argument("--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS, help="runs per job with requeue")
    args = parser.parse_args(argv)
    if args.concurrency is not None and args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    settings.ensure_dirs()
    migrate(settings.resolved_database_url)
    worker = Worker(
        settings=settings, concurrency=args.concurrency, on_interrupt=args.on_interrupt, max_attempts=args.max_attempts
    )
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    worker.run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
