"""Batch prediction services for the page, the CLI and the REST API: submit, list, preview, download, schedule."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl
from sqlalchemy.orm import Session

from backend.batch.plan import plan_batch_prediction
from backend.batch.progress import parse_row_progress
from backend.batch.spec import (
    BatchSpec,
    ColumnsChoice,
    default_output_dataset,
    output_format_for,
    parse_batch_spec,
    parse_input_ref,
)
from backend.config import Settings, get_settings
from backend.datasets import export_dataset, read_dataset_rows
from backend.errors import InvalidInputError, NotFoundError
from backend.jobs.service import JobInfo, JobStatus, get_job, list_jobs, submit_job
from backend.schedules import ScheduleInfo, create_schedule

BATCH_JOB_KIND = "batch_predict"


@dataclass(frozen=True)
class BatchJobInfo:
    """A batch job with its request and, as far as known, its progress and output."""

    job: JobInfo
    model: str
    input: str
    output_dataset: str
    output_format: str
    output_path: str | None
    schedule_name: str | None
    rows_done: int | None
    rows_total: int | None
    rows_per_second: float | None
    # The published dataset version (succeeded jobs only).
    output_version: int | None

    @property
    def id(self) -> int:
        return self.job.id

    @property
    def status(self) -> str:
        return self.job.status

    @property
    def output_ref(self) -> str | None:
        return f"dataset:{self.output_dataset}:{self.output_version}" if self.output_version else None

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.job.as_dict(),
            "model": self.model,
            "input": self.input,
            "output_dataset": self.output_dataset,
            "output_format": self.output_format,
            "output_path": self.output_path,
            "output_version": self.output_version,
            "schedule": self.schedule_name,
            "rows_done": self.rows_done,
            "rows_total": self.rows_total,
            "rows_per_second": self.rows_per_second,
        }


@dataclass(frozen=True)
class BatchJobPage:
    items: list[BatchJobInfo]
    total: int


@dataclass(frozen=True)
class ModelChoice:
    """A registered model as the launch form offers it."""

    name: str
    versions: list[int]
    aliases: dict[str, int]

    @property
    def refs(self) -> list[str]:
        by_alias = [f"{self.name}@{alias}" for alias in sorted(self.aliases)]
        return by_alias + [f"{self.name}/{version}" for version in sorted(self.versions, reverse=True)]


def batch_job_info(job: JobInfo) -> BatchJobInfo:
    params = job.params
    result = job.result or {}
    progress = parse_row_progress(job.progress_message)
    rows_done = result.get("rows", progress.rows_done if progress else None)
    return BatchJobInfo(
        job=job,
        model=str(params.get("model", "")),
        input=str(params.get("input", "")),
        output_dataset=str(result.get("output_dataset") or params.get("output_dataset", "")),
        output_format=str(params.get("output_format", "parquet")),
        output_path=result.get("output_path") or params.get("output_path"),
        schedule_name=(params.get("schedule") or {}).get("name"),
        rows_done=rows_done,
        rows_total=result.get("rows", progress.rows_total if progress else None),
        rows_per_second=result.get("rows_per_second", progress.rows_per_second if progress else None),
        output_version=result.get("output_version") if job.status == JobStatus.SUCCEEDED else None,
    )


def build_batch_spec(
    *,
    model: str,
    input: str,
    output_dataset: str | None = None,
    output_path: str | None = None,
    output_format: str | None = None,
    columns: ColumnsChoice = "ids",
    id_columns: list[str] | None = None,
) -> BatchSpec:
    """The request as the forms and the CLI give it, with defaults filled (output dataset and format)."""
    path = (output_path or "").strip() or None
    return parse_batch_spec(
        {
            "model": model,
            "input": input,
            "output_dataset": (output_dataset or "").strip() or default_output_dataset(parse_input_ref(input)),
            "output_path": path,
            "output_format": output_format_for(path, output_format),
            "columns": columns,
            "id_columns": [name.strip() for name in id_columns if name.strip()] if id_columns else None,
        }
    )


def submit_batch_prediction(
    session: Session,
    *,
    model: str,
    input: str,
    output_dataset: str | None = None,
    output_path: str | None = None,
    output_format: str | None = None,
    columns: ColumnsChoice = "ids",
    id_columns: list[str] | None = None,
    settings: Settings | None = None,
) -> BatchJobInfo:
    """Check the request now (bad input fails here, with the reason) and queue the job.

    The model version an alias names and the latest dataset version are pinned in the job, so the
    job scores exactly what was checked even if the alias moves before it runs.
    """
    spec = build_batch_spec(
        model=model,
        input=input,
        output_dataset=output_dataset,
        output_path=output_path,
        output_format=output_format,
        columns=columns,
        id_columns=id_columns,
    )
    plan = plan_batch_prediction(session, spec, settings=settings or get_settings())
    pinned = spec.model_copy(
        update={"model_version": plan.model.version, "input": plan.input.ref if plan.input.dataset else spec.input}
    )
    return batch_job_info(submit_job(session, kind=BATCH_JOB_KIND, params=pinned.params()))


def get_batch_job(session: Session, *, job_id: int) -> BatchJobInfo:
    job = get_job(session, job_id=job_id)
    if job.kind != BATCH_JOB_KIND:
        raise NotFoundError(f"job {job_id} is a {job.kind} job, not a batch prediction")
    return batch_job_info(job)


def list_batch_jobs(session: Session, *, status: str | None = None, offset: int = 0, limit: int = 20) -> BatchJobPage:
    """Newest first, paginated on the server."""
    page = list_jobs(session, kind=BATCH_JOB_KIND, status=status, offset=offset, limit=limit)
    return BatchJobPage(items=[batch_job_info(job) for job in page.items], total=page.total)


def _output_of(session: Session, job_id: int) -> BatchJobInfo:
    info = get_batch_job(session, job_id=job_id)
    if info.output_version is None:
        raise InvalidInputError(f"batch job {job_id} is {info.status}: it has no output")
    return info


def preview_batch_output(
    session: Session, *, job_id: int, limit: int = 20, settings: Settings | None = None
) -> pl.DataFrame:
    info = _output_of(session, job_id)
    return read_dataset_rows(
        session, name=info.output_dataset, version=info.output_version, limit=limit, settings=settings
    ).frame


def export_batch_output(
    session: Session, *, job_id: int, file_format: str = "csv", settings: Settings | None = None
) -> bytes:
    """The job's output as downloadable bytes (CSV cells that look like formulas are escaped)."""
    info = _output_of(session, job_id)
    if file_format not in ("csv", "parquet"):
        raise InvalidInputError(f"unknown format {file_format!r}; use csv or parquet")
    return export_dataset(
        session,
        name=info.output_dataset,
        version=info.output_version,
        file_format=file_format,  # type: ignore[arg-type]
        settings=settings,
    )


def create_batch_schedule(
    session: Session,
    *,
    name: str,
    cron: str,
    model: str,
    input: str,
    output_dataset: str | None = None,
    output_path: str | None = None,
    output_format: str | None = None,
    columns: ColumnsChoice = "ids",
    id_columns: list[str] | None = None,
    timezone: str = "UTC",
    catch_up: str | None = None,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> ScheduleInfo:
    """A cron schedule of batch jobs; checked like a job now, resolved again (alias, latest version) at every run.

    ``input`` as ``dataset:NAME`` scores the latest version of NAME each time; ``MODEL@ALIAS``
    scores whatever version the alias names then (e.g. ``@champion``).
    """
    settings = settings or get_settings()
    spec = build_batch_spec(
        model=model,
        input=input,
        output_dataset=output_dataset,
        output_path=output_path,
        output_format=output_format,
        columns=columns,
        id_columns=id_columns,
    )
    plan_batch_prediction(session, spec, settings=settings, moment=now)
    return create_schedule(
        session,
        name=name,
        cron=cron,
        kind=BATCH_JOB_KIND,
        spec=spec.params(),
        timezone=timezone,
        catch_up=catch_up,
        now=now,
        settings=settings,
    )


def list_model_choices(*, settings: Settings | None = None) -> list[ModelChoice]:
    """Registered models with their versions and aliases, for the launch form."""
    from backend.tracking import tracking_client

    client = tracking_client(settings or get_settings())
    choices = []
    for registered in client.search_registered_models(max_results=1000):
        versions = client.search_model_versions(f"name = '{registered.name.replace(chr(39), '')}'")
        choices.append(
            ModelChoice(
                name=registered.name,
                versions=sorted(int(version.version) for version in versions),
                aliases={alias: int(version) for alias, version in (registered.aliases or {}).items()},
            )
        )
    return sorted(choices, key=lambda choice: choice.name)
