"""``sextant batch-predict`` and ``sextant schedules``: batch scoring and its cron schedules from the shell."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Annotated, Any, NoReturn

import typer

from backend import batch, schedules
from backend.batch.spec import ColumnsChoice
from backend.config import get_settings
from backend.db import migrate, session_scope
from backend.errors import SextantError
from backend.jobs import JobStatus, get_job
from backend.jobs.queue import list_workers
from backend.models import utcnow

WAIT_POLL_SECONDS = 1.0
# A job still queued after this long with no live worker gets a hint: nothing will run it.
NO_WORKER_HINT_AFTER_S = 5.0

schedules_app = typer.Typer(help="Cron schedules of batch prediction jobs, fired by the worker.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object")]
ModelOption = Annotated[str, typer.Option("--model", help="MODEL@ALIAS or MODEL/VERSION from the registry")]
FormatOption = Annotated[
    str | None, typer.Option("--format", help="parquet or csv (default: from the output file's suffix)")
]
DatasetOption = Annotated[
    str | None, typer.Option("--dataset", help="output dataset name (default: <input>-predictions)")
]
AllColumnsOption = Annotated[
    bool, typer.Option("--all-columns", help="copy every input column to the output, not only the id columns")
]
IdColumnOption = Annotated[
    list[str] | None, typer.Option("--id-column", help="input column to keep beside the predictions (repeatable)")
]


def _emit(payload: dict[str, Any], as_json: bool, text: str) -> None:
    typer.echo(json.dumps(payload, default=str) if as_json else text)


def _fail(error: SextantError, as_json: bool = False) -> NoReturn:
    if as_json:
        typer.echo(json.dumps({"error": str(error)}))
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=1)


def _columns(all_columns: bool) -> ColumnsChoice:
    return "all" if all_columns else "ids"


def _worker_alive() -> bool:
    settings = get_settings()
    with session_scope() as session:
        workers = list_workers(session)
    stale = timedelta(seconds=settings.job_stale_seconds)
    return any(worker.is_alive(now=utcnow(), stale_after=stale) for worker in workers)


def wait_for_batch_job(job_id: int, *, show_progress: bool = True) -> batch.BatchJobInfo:
    """Poll until the job ends, printing its progress lines to stderr as they change."""
    started = time.monotonic()
    last_message = ""
    hinted = False
    while True:
        with session_scope() as session:
            info = batch.batch_job_info(get_job(session, job_id=job_id))
        message = info.job.progress_message
        if show_progress and message and message != last_message:
            typer.echo(f"job {job_id}: {message}", err=True)
            last_message = message
        if info.job.is_finished:
            return info
        if (
            not hinted
            and info.status == JobStatus.QUEUED
            and time.monotonic() - started > NO_WORKER_HINT_AFTER_S
            and not _worker_alive()
        ):
            typer.echo(
                "no worker is running, so the job waits in the queue: start one with `sextant up` "
                "or `python -m backend.jobs.worker`",
                err=True,
            )
            hinted = True
        time.sleep(WAIT_POLL_SECONDS)


def _summary(info: batch.BatchJobInfo) -> str:
    result = info.job.result or {}
    if info.status != JobStatus.SUCCEEDED:
        return f"job {info.id}: {info.status}" + (f"\nerror: {info.job.error}" if info.job.error else "")
    lines = [
        f"job {info.id}: succeeded — {result.get('rows', 0):,} rows in {result.get('scoring_seconds', 0):.1f} s "
        f"({result.get('rows_per_second', 0):,.0f} rows/s) with {result.get('model_name')} "
        f"v{result.get('model_version')}",
        f"output dataset: {result.get('output_dataset')}:{result.get('output_version')}"
        + ("" if result.get("output_created", True) else " (same content as an existing version)"),
    ]
    if result.get("output_path"):
        lines.append(f"output file: {result['output_path']} ({result.get('output_format')})")
    return "\n".join(lines)


def batch_predict_command(
    model: ModelOption,
    input: Annotated[str, typer.Option("--input", help="dataset:NAME[:VERSION] or a CSV / Parquet file")],
    output: Annotated[str, typer.Option("--output", help="file to write; may hold {job_id}, {date}, {time}")],
    file_format: FormatOption = None,
    dataset: DatasetOption = None,
    all_columns: AllColumnsOption = False,
    id_column: IdColumnOption = None,
    wait: Annotated[bool, typer.Option("--wait", help="wait for the job, printing its progress")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Score a dataset version or a file with a registered model on Triton; the output is also a dataset version."""
    try:
        migrate()
        with session_scope() as session:
            info = batch.submit_batch_prediction(
                session,
                model=model,
                input=input,
                output_dataset=dataset,
                output_path=output,
                output_format=file_format,
                columns=_columns(all_columns),
                id_columns=id_column,
            )
    except SextantError as error:
        _fail(error, as_json)
    params = info.job.params
    pinned = f"{params['model']} (v{params['model_version']})" if "@" in params["model"] else params["model"]
    if not wait:
        _emit(
            {"job_id": info.id, "kind": info.job.kind, "status": info.status, **params},
            as_json,
            f"queued job {info.id} (batch_predict): {pinned} on {params['input']} → {output}; "
            f"follow it with `sextant jobs logs {info.id} --follow`",
        )
        return
    if not as_json:
        typer.echo(f"queued job {info.id} (batch_predict): {pinned} on {params['input']}; waiting…", err=True)
    try:
        finished = wait_for_batch_job(info.id)
    except KeyboardInterrupt:
        typer.echo(f"stopped waiting; job {info.id} goes on (`sextant jobs cancel {info.id}` stops it)", err=True)
        raise typer.Exit(code=130) from None
    _emit(finished.as_dict(), as_json, _summary(finished))
    if finished.status != JobStatus.SUCCEEDED:
        raise typer.Exit(code=1)


def _when(moment: Any) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else "-"


def _schedule_line(item: schedules.ScheduleInfo) -> str:
    state = "paused" if item.paused else "active"
    return (
        f"{item.name:24} {item.cron:16} {item.timezone:14} {state:7} {_when(item.next_run_at):21} "
        f"{item.spec.get('model', '')} on {item.spec.get('input', '')} → {item.spec.get('output_dataset', '')}"
    )


@schedules_app.command("create")
def schedules_create(
    name: Annotated[str, typer.Argument(help="schedule name")],
    cron: Annotated[str, typer.Option("--cron", help="'MIN HOUR DAY MONTH WEEKDAY', e.g. '0 2 * * *', or @daily")],
    model: ModelOption,
    input: Annotated[
        str, typer.Option("--input", help="dataset:NAME (its latest version at each run), dataset:NAME:V or a file")
    ],
    output: Annotated[
        str | None, typer.Option("--output", help="file written at each run; may hold {job_id}, {date}, {time}")
    ] = None,
    file_format: FormatOption = None,
    dataset: DatasetOption = None,
    all_columns: AllColumnsOption = False,
    id_column: IdColumnOption = None,
    timezone: Annotated[str, typer.Option("--timezone", help="IANA zone the cron is read in")] = "UTC",
    catch_up: Annotated[
        str | None, typer.Option("--catch-up", help="once or skip: runs missed while no worker ran")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a schedule: each due time, the worker queues a batch job (checked now, resolved at each run)."""
    try:
        migrate()
        with session_scope() as session:
            item = batch.create_batch_schedule(
                session,
                name=name,
                cron=cron,
                model=model,
                input=input,
                output_dataset=dataset,
                output_path=output,
                output_format=file_format,
                columns=_columns(all_columns),
                id_columns=id_column,
                timezone=timezone,
                catch_up=catch_up,
            )
    except SextantError as error:
        _fail(error, as_json)
    _emit(item.as_dict(), as_json, f"created schedule {item.name}; next run {_when(item.next_run_at)}")


@schedules_app.command("list")
def schedules_list(as_json: JsonFlag = False) -> None:
    """List schedules with their next run."""
    migrate()
    with session_scope() as session:
        items = schedules.list_schedules(session)
    header = f"{'NAME':24} {'CRON':16} {'TIMEZONE':14} {'STATE':7} {'NEXT RUN':21} WHAT"
    _emit(
        {"schedules": [item.as_dict() for item in items]},
        as_json,
        "\n".join([header, *(_schedule_line(item) for item in items)]) if items else "no schedules",
    )


@schedules_app.command("show")
def schedules_show(name: Annotated[str, typer.Argument(help="schedule name")], as_json: JsonFlag = False) -> None:
    """Show a schedule, its next runs and the jobs it fired."""
    try:
        migrate()
        with session_scope() as session:
            item = schedules.get_schedule(session, name=name)
            runs = schedules.list_schedule_runs(session, name=name)
    except SextantError as error:
        _fail(error, as_json)
    upcoming = [] if item.paused else schedules.upcoming_run_times(item.cron, after=utcnow(), timezone=item.timezone)
    lines = [
        _schedule_line(item),
        f"catch-up: {item.catch_up}; last run {_when(item.last_run_at)}",
        "next runs: " + (", ".join(_when(moment) for moment in upcoming) or "- (paused)"),
        "history:" if runs else "history: none yet",
        *(
            f"  {_when(run.scheduled_for)}  {run.outcome:9} job {run.job_id or '-'} {run.job_status or ''}"
            + (f"  ({run.message})" if run.message else "")
            for run in runs
        ),
    ]
    payload = item.as_dict() | {
        "upcoming": [moment.isoformat() for moment in upcoming],
        "runs": [run.as_dict() for run in runs],
    }
    _emit(payload, as_json, "\n".join(lines))


def _change(name: str, as_json: bool, action: str) -> None:
    try:
        migrate()
        with session_scope() as session:
            if action == "pause":
                item = schedules.pause_schedule(session, name=name)
            elif action == "resume":
                item = schedules.resume_schedule(session, name=name)
            else:
                schedules.delete_schedule(session, name=name)
                _emit({"name": name, "deleted": True}, as_json, f"deleted schedule {name}")
                return
    except SextantError as error:
        _fail(error, as_json)
    state = "paused" if item.paused else f"active; next run {_when(item.next_run_at)}"
    _emit(item.as_dict(), as_json, f"schedule {item.name}: {state}")


@schedules_app.command("pause")
def schedules_pause(name: Annotated[str, typer.Argument(help="schedule name")], as_json: JsonFlag = False) -> None:
    """Stop firing a schedule until it is resumed."""
    _change(name, as_json, "pause")


@schedules_app.command("resume")
def schedules_resume(name: Annotated[str, typer.Argument(help="schedule name")], as_json: JsonFlag = False) -> None:
    """Fire a paused schedule again, from its next cron time (the paused period is not caught up)."""
    _change(name, as_json, "resume")


@schedules_app.command("delete")
def schedules_delete(name: Annotated[str, typer.Argument(help="schedule name")], as_json: JsonFlag = False) -> None:
    """Delete a schedule and its run history (the jobs it fired stay)."""
    _change(name, as_json, "delete")
