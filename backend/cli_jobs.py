"""``sextant jobs``: list, inspect, tail, cancel and retry background jobs. ``--json`` prints one JSON object."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, NoReturn

import typer

from backend import jobs
from backend.config import get_settings
from backend.db import migrate, session_scope
from backend.errors import SextantError

jobs_app = typer.Typer(help="List, inspect, tail, cancel and retry background jobs.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object")]
JobId = Annotated[int, typer.Argument(help="job id", min=1)]


def _emit(payload: dict[str, Any], as_json: bool, text: str) -> None:
    typer.echo(json.dumps(payload, default=str) if as_json else text)


def _fail(error: SextantError, as_json: bool = False) -> NoReturn:
    if as_json:
        typer.echo(json.dumps({"error": str(error)}))
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=1)


def _duration(job: jobs.JobInfo) -> str:
    seconds = job.duration_seconds
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def _progress(job: jobs.JobInfo) -> str:
    return "-" if job.progress is None else f"{job.progress:.0%}"


def _describe(job: jobs.JobInfo) -> str:
    lines = [
        f"job {job.id}  {job.kind}  {job.status}" + ("  (cancel requested)" if job.cancel_requested else ""),
        f"created {job.created_at:%Y-%m-%d %H:%M:%S} UTC, duration {_duration(job)}, attempts {job.attempts}",
        f"progress {_progress(job)} {job.progress_message}".rstrip(),
        f"params {json.dumps(job.params, sort_keys=True)}",
    ]
    if job.retry_of:
        lines.append(f"retry of job {job.retry_of}")
    if job.result is not None:
        lines.append(f"result {json.dumps(job.result, sort_keys=True)}")
    if job.error:
        lines.append(f"error: {job.error}")
    if job.log_path:
        lines.append(f"log: sextant jobs logs {job.id}")
    return "\n".join(lines)


@jobs_app.command("list")
def jobs_list(
    status: Annotated[
        str | None, typer.Option("--status", help="queued, running, succeeded, failed or cancelled")
    ] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="only jobs of this kind")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="newest N jobs")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """List jobs, newest first."""
    try:
        migrate()
        with session_scope() as session:
            page = jobs.list_jobs(session, kind=kind, status=status, limit=limit)
    except SextantError as error:
        _fail(error, as_json)
    lines = [f"{'ID':>6}  {'KIND':12} {'STATUS':10} {'PROGRESS':>8} {'DURATION':>9}  CREATED"]
    lines += [
        f"{job.id:>6}  {job.kind:12} {job.status:10} {_progress(job):>8} {_duration(job):>9}  "
        f"{job.created_at:%Y-%m-%d %H:%M}"
        for job in page.items
    ]
    if page.total > len(page.items):
        lines.append(f"… {page.total - len(page.items)} older jobs not shown (--limit)")
    _emit({"jobs": [job.as_dict() for job in page.items], "total": page.total}, as_json, "\n".join(lines))


@jobs_app.command("show")
def jobs_show(job_id: JobId, as_json: JsonFlag = False) -> None:
    """Show one job: status, progress, parameters, result or error."""
    try:
        migrate()
        with session_scope() as session:
            job = jobs.get_job(session, job_id=job_id)
    except SextantError as error:
        _fail(error, as_json)
    _emit(job.as_dict(), as_json, _describe(job))


@jobs_app.command("logs")
def jobs_logs(
    job_id: JobId,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing until the job ends")] = False,
) -> None:
    """Print a job's log; with --follow, stream it live until the job ends."""
    interval = min(1.0, get_settings().worker_poll_seconds)
    offset = 0
    try:
        migrate()
        while True:
            with session_scope() as session:
                chunk = jobs.read_job_log(session, job_id=job_id, offset=offset)
            if chunk.text:
                typer.echo(chunk.text, nl=False)
            offset = chunk.next_offset
            # One more read after the job ends picks up its last lines.
            if not follow or (chunk.job_finished and not chunk.text):
                return
            if not chunk.text:
                time.sleep(interval)
    except SextantError as error:
        _fail(error)
    except KeyboardInterrupt:
        raise typer.Exit(code=130) from None


@jobs_app.command("cancel")
def jobs_cancel(job_id: JobId, as_json: JsonFlag = False) -> None:
    """Cancel a job: a queued one at once, a running one is stopped by its worker."""
    try:
        migrate()
        with session_scope() as session:
            job = jobs.request_job_cancel(session, job_id=job_id)
    except SextantError as error:
        _fail(error, as_json)
    text = (
        f"job {job.id} cancelled"
        if job.status == jobs.JobStatus.CANCELLED
        else f"cancel requested for job {job.id} ({job.status}); its worker stops it"
    )
    _emit(job.as_dict(), as_json, text)


@jobs_app.command("retry")
def jobs_retry(job_id: JobId, as_json: JsonFlag = False) -> None:
    """Submit a finished job's kind and parameters again, as a new job."""
    try:
        migrate()
        with session_scope() as session:
            job = jobs.retry_job(session, job_id=job_id)
    except SextantError as error:
        _fail(error, as_json)
    _emit(job.as_dict(), as_json, f"submitted job {job.id} ({job.kind}), a retry of job {job_id}")
