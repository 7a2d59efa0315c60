"""The runtime every job entry module uses: parse ``--job-id``, run ``main(ctx)``, record the outcome.

An entry module (``jobs/train.py``, ...) is written as::

    from backend.jobs.runtime import JobCancelled, JobContext, run_job

    def main(ctx: JobContext) -> dict:
        ctx.log.info("training on %s", ctx.params["dataset"])   # or print(); both go to the job's log
        for epoch in range(epochs):
            if ctx.cancel_requested():        # optional: stop at a clean point
                raise JobCancelled(f"stopped after epoch {epoch}")
            ...
            ctx.progress((epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs}")
        return {"mlflow_run_id": run_id}      # JSON-serialisable; stored as the job's result

    if __name__ == "__main__":
        run_job(main)

The worker runs it as ``python -m jobs.train --job-id N`` with the job already claimed (status
``running``) and stdout + stderr redirected to the job's log file. The contract:

- ``ctx.job_id``, ``ctx.kind``, ``ctx.params`` (a copy of the submitted JSON object),
  ``ctx.attempt`` (1 on the first run, higher when the job was requeued), ``ctx.settings``,
  ``ctx.log`` (a ``logging`` logger writing to stdout).
- ``ctx.progress(fraction, message="")``: fraction in [0, 1] (clamped), written to the DB at most
  once a second (the last value is never lost); cheap to call often.
- ``ctx.cancel_requested() -> bool``: True once the user asked to cancel (or the job was taken
  away from this process); a DB read at most every 0.5 s, so cheap in a loop. Checking it is
  optional: on cancel the worker sends SIGTERM, which the runtime turns into a ``JobTerminated``
  exception in the main thread (``finally`` blocks run), and SIGKILL after
  ``job_cancel_grace_seconds``.
- ``main`` returns a dict (or None for ``{}``) → the job ``succeeded`` with that result (NumPy
  scalars become numbers, NaN and infinities null).
  It raises ``JobCancelled`` → ``cancelled``. Any other exception → ``failed``: the traceback goes to
  the log and a one-line reason to the job's ``error`` (a ``SextantError``'s message as it is, so
  raise ``InvalidInputError("target column 'x' is constant")`` for problems the user can fix).
- Exit status: 0 after recording succeeded/cancelled, 1 after recording failed, 2 when the job
  cannot be loaded; a process stopped by SIGTERM re-raises it, so the worker sees the signal.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import logging
import math
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn

from backend.config import Settings, get_settings
from backend.db import session_scope
from backend.errors import ConflictError, SextantError
from backend.jobs.queue import finish_job, update_job_progress
from backend.jobs.service import JobInfo, JobStatus, get_job, validate_fraction

PROGRESS_INTERVAL_S = 1.0
CANCEL_CHECK_INTERVAL_S = 0.5
MAX_REASON_CHARS = 500

JobMain = Callable[["JobContext"], dict[str, Any] | None]


class JobCancelled(Exception):
    """Raise from ``main`` to end the job as cancelled."""


class JobTerminated(BaseException):
    """SIGTERM arrived (cancel or worker shutdown). A BaseException, so ``except Exception`` lets it through."""


class Throttle:
    """Lets an action through at most once per ``interval`` seconds; the first call always passes."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic):
        self._interval = interval
        self._clock = clock
        self._last: float | None = None

    def ready(self) -> bool:
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            return False
        self._last = now
        return True


class JobContext:
    """What a job's ``main`` gets: its parameters, progress reporting, cancellation and a logger."""

    def __init__(
        self,
        *,
        job: JobInfo,
        settings: Settings | None = None,
        clock: Callable[[], float] = time.monotonic,
        progress_interval: float = PROGRESS_INTERVAL_S,
        cancel_check_interval: float = CANCEL_CHECK_INTERVAL_S,
    ):
        self.job_id = job.id
        self.kind = job.kind
        self.params: dict[str, Any] = copy.deepcopy(job.params)
        self.attempt = job.attempts
        self.settings = settings or get_settings()
        self.log = logging.getLogger(f"sextant.job.{job.kind}")
        self._progress_throttle = Throttle(progress_interval, clock)
        self._cancel_throttle = Throttle(cancel_check_interval, clock)
        self._pending_progress: tuple[float, str] | None = None
        self._cancelled = False

    def progress(self, fraction: float, message: str = "") -> None:
        self._pending_progress = (validate_fraction(fraction), message)
        if self._pending_progress[0] >= 1.0 or self._progress_throttle.ready():
            self.flush_progress()

    def flush_progress(self) -> None:
        if self._pending_progress is None:
            return
        fraction, message = self._pending_progress
        self._pending_progress = None
        with session_scope() as session:
            update_job_progress(session, job_id=self.job_id, attempt=self.attempt, fraction=fraction, message=message)

    def cancel_requested(self) -> bool:
        if self._cancelled or not self._cancel_throttle.ready():
            return self._cancelled
        with session_scope() as session:
            job = get_job(session, job_id=self.job_id)
        # A job taken away from this process (recovered, requeued) must stop as if cancelled.
        self._cancelled = job.cancel_requested or job.status != JobStatus.RUNNING or job.attempts != self.attempt
        return self._cancelled

    def raise_if_cancelled(self) -> None:
        if self.cancel_requested():
            raise JobCancelled("cancelled by user")


def summarize_exception(error: BaseException) -> str:
    """One readable line for the job's ``error``; the full traceback is in the log."""
    if isinstance(error, SextantError):
        text = str(error)
    elif isinstance(error, SystemExit):
        text = f"job exited early with status {error.code}"
    else:
        detail = str(error).strip()
        text = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
    lines = [line for line in text.splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def _parse_args(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description="Run one Sextant job (started by the worker).")
    parser.add_argument("--job-id", type=int, required=True)
    return parser.parse_args(argv).job_id


def _load_job(job_id: int) -> JobInfo:
    with session_scope() as session:
        job = get_job(session, job_id=job_id)
    if job.status != JobStatus.RUNNING:
        raise ConflictError(f"job {job_id} is {job.status}, not running: jobs are started by the worker")
    return job


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise JobTerminated


def _finish(
    ctx: JobContext, status: JobStatus, *, result: dict[str, Any] | None = None, error: str | None = None
) -> None:
    with session_scope() as session:
        recorded = finish_job(
            session, job_id=ctx.job_id, attempt=ctx.attempt, status=status, result=result, error=error
        )
    if recorded:
        ctx.log.info("job %s %s", ctx.job_id, status)
    else:
        ctx.log.warning(
            "job %s had already ended elsewhere; this run's outcome (%s) was not recorded", ctx.job_id, status
        )


def _json_default(value: Any) -> Any:
    # NumPy scalars (float32 metrics, int64 counts) know their Python value.
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return str(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def validated_result(result: Any) -> dict[str, Any]:
    """The job's return value as plain JSON (NaN and infinities become null: PostgreSQL's JSON refuses them)."""
    if result is None:
        return {}
    if not isinstance(result, dict):
        raise TypeError(f"the job returned a {type(result).__name__}, expected a dict")
    return _finite(json.loads(json.dumps(result, default=_json_default)))


def run_job(main: JobMain, argv: list[str] | None = None) -> NoReturn:
    """Entry point of a job module: ``if __name__ == "__main__": run_job(main)``."""
    job_id = _parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    try:
        job = _load_job(job_id)
    except SextantError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    ctx = JobContext(job=job)
    ctx.log.info("job %s (%s) attempt %s started, pid %s", job.id, job.kind, job.attempts, os.getpid())
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        result = validated_result(main(ctx))
    except JobTerminated:
        ctx.log.warning("job %s stopped by SIGTERM", job.id)
        sys.stdout.flush()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        sys.exit(143)
    except JobCancelled as cancelled:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        ctx.flush_progress()
        _finish(ctx, JobStatus.CANCELLED, error=str(cancelled) or "cancelled by user")
        sys.exit(0)
    except (Exception, SystemExit) as error:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        traceback.print_exc()
        sys.stderr.flush()
        ctx.flush_progress()
        _finish(ctx, JobStatus.FAILED, error=summarize_exception(error))
        sys.exit(1)
    # Past this point the outcome is known: a late SIGTERM must not cut the final write short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ctx.flush_progress()
    _finish(ctx, JobStatus.SUCCEEDED, result=result)
    sys.exit(0)
