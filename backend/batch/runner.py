"""Running one batch prediction: private Triton model, streamed scoring, publish on success, cleanup always.

1. Plan again (``plan_batch_prediction``): the alias, the latest dataset version, the file and the
   output folder are checked as they are now.
2. Write the model version into the Triton repository under a private name
   (``batch-<job>-<token>-<model>``) with ``max_batch_size = batch_request_rows`` and load it, so
   no endpoint is needed and an endpoint serving the same model is never reloaded.
3. Stream the input with polars (``collect_batches``: bounded memory) in chunks of
   ``batch_chunk_rows``; each chunk goes to Triton over gRPC as binary tensors in requests of
   ``batch_request_rows`` rows, ``batch_in_flight`` at a time, while the next chunk is read and
   converted and the previous one written.
4. Write the kept columns and the predictions to temporary files; on success hash and profile the
   Parquet, then (SIGTERM ignored from here) register it as a dataset version with its lineage,
   commit, and rename the user's file into place.
5. Always: unload the private model, delete its folder, delete the temporary files. A cancelled or
   failed job registers nothing and leaves no file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from backend.batch.files import (
    ChunkWriter,
    dataset_temp_path,
    feature_arrays,
    inactive_job_ids,
    job_id_of,
    new_token,
    output_chunk,
    output_temp_path,
    remove_stale_temp_files,
)
from backend.batch.plan import BatchPlan, ResolvedModel, plan_batch_prediction
from backend.batch.progress import RowProgress, format_row_progress
from backend.batch.publish import StagedOutput, publish_output, stage_output
from backend.batch.spec import BatchSpec, parse_batch_spec
from backend.config import Settings, get_settings
from backend.datasets import DatasetVersionInfo
from backend.db import session_scope
from backend.errors import ConflictError, InvalidInputError
from backend.lineage import dataset_version_ref, file_ref, model_version_ref, record_execution
from backend.models import utcnow
from backend.serving.client import TritonClient
from backend.serving.errors import ServingError
from backend.serving.repository import (
    STAGING_DIR,
    ServingOptions,
    WrittenVersion,
    triton_model_name,
    write_model_version,
)

log = logging.getLogger("sextant.batch")
ProgressCallback = Callable[[float, str], None]
StopCallback = Callable[[], bool]
PRIVATE_PREFIX = "batch-"
PUBLISH_ATTEMPTS = 3
# Chunks scored at once: one in Triton while the next is read and the previous written.
PIPELINE_DEPTH = 2
EXECUTION_TYPE = "batch_predict"


class BatchCancelled(Exception):
    """The job was asked to stop; nothing was published."""


@dataclass(frozen=True)
class BatchResult:
    rows: int
    rows_per_second: float
    scoring_seconds: float
    total_seconds: float
    model_name: str
    model_version: int
    model_alias: str | None
    input: str
    input_dataset: str | None
    input_dataset_version: int | None
    output_dataset: str
    output_version: int
    # False: the output's content equalled an existing version, which was reused.
    output_created: bool
    output_path: str | None
    output_format: str
    output_columns: list[str]
    lineage_execution_id: int
    triton_model: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def private_model_name(token: str, registry_name: str) -> str:
    """A Triton name no endpoint uses: ``batch-<job>-<token>-<model>``; the job id leads, for cleanup."""
    return f"{PRIVATE_PREFIX}{token}-{triton_model_name(registry_name)}"[:200].rstrip("-._")


def _no_progress(_fraction: float, _message: str) -> None:
    return None


def _never_stop() -> bool:
    return False


@contextlib.contextmanager
def _ignoring_sigterm() -> Iterator[None]:
    """Once publishing starts the job finishes it: a cancel arriving now must not leave half a publish."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def export_private_model(model: ResolvedModel, *, name: str, repository: Path, settings: Settings) -> WrittenVersion:
    """Download the version's MLflow artifacts and write them into the repository under ``name``."""
    import mlflow.artifacts

    from backend.tracking import tracking_client

    source = tracking_client(settings).get_model_version_download_uri(model.name, str(model.version))
    options = ServingOptions(
        max_batch_size=settings.batch_request_rows,
        max_queue_delay_us=0,
        instance_count=settings.batch_instance_count,
        instance_kind=settings.triton_instance_kind,
    )
    staging = repository / STAGING_DIR
    staging.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=staging) as download:
        local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=download)
        return write_model_version(
            repository=repository, registry_name=name, version=model.version, model_dir=Path(local), options=options
        )


def remove_private_model(client: TritonClient, *, name: str, repository: Path) -> None:
    try:
        # Not waiting: Triton drains the stubs in the background (≈ 3 s here), the job has no need to.
        client.unload_model(name, wait=False)
    except ServingError as error:
        log.warning("could not unload %s from Triton: %s", name, error)
    shutil.rmtree(repository / name, ignore_errors=True)


def remove_stale_private_models(
    client: TritonClient, *, repository: Path, keep: str, job_id: int | None = None
) -> list[str]:
    """Private models of finished jobs killed before their own cleanup ran, and of earlier attempts of ``job_id``."""
    if not repository.is_dir():
        return []
    owners = {
        folder.name: job_id_of(folder.name)
        for folder in repository.iterdir()
        if folder.is_dir() and folder.name.startswith(PRIVATE_PREFIX) and folder.name != keep
    }
    with session_scope() as session:
        stale = inactive_job_ids(session, sorted({job for job in owners.values() if job is not None}))
    if job_id is not None:
        stale.add(job_id)
    removed = [name for name, job in owners.items() if job in stale]
    for name in removed:
        remove_private_model(client, name=name, repository=repository)
    return removed


def _scheduled_moment(spec: BatchSpec) -> datetime:
    if spec.schedule and spec.schedule.get("scheduled_for"):
        return datetime.fromisoformat(spec.schedule["scheduled_for"])
    return utcnow()


def _count_rows(plan: BatchPlan) -> int:
    if plan.input.rows is not None:
        return plan.input.rows
    try:
        return plan.input.scan().select(pl.len()).collect().item()
    except pl.exceptions.PolarsError as error:
        raise InvalidInputError(f"cannot read {plan.input.ref}: {str(error).splitlines()[0]}") from None


def _read_options(plan: BatchPlan) -> tuple[list[str], dict[str, Any]]:
    wanted = {feature.name for feature in plan.model.features} | set(plan.keep_columns)
    columns = [name for name in plan.input.schema if name in wanted]
    # CSV: read every feature as the model's type, so a late odd value fails loudly instead of shifting types.
    overrides = {feature.name: feature.polars_dtype for feature in plan.model.features}
    return columns, overrides if plan.input.file_format == "csv" else {}


def _score(
    plan: BatchPlan,
    *,
    client: TritonClient,
    triton_name: str,
    classes: list[Any] | None,
    writers: list[ChunkWriter],
    total: int,
    progress: ProgressCallback,
    should_stop: StopCallback,
    settings: Settings,
) -> tuple[int, float]:
    """Stream, score and write every row; returns (rows, seconds)."""
    columns, overrides = _read_options(plan)
    batches = plan.input.scan(overrides or None).select(columns).collect_batches(chunk_size=settings.batch_chunk_rows)
    started = time.monotonic()
    done = 0
    offset = 0
    pending: deque[tuple[Future[dict[str, np.ndarray]], pl.DataFrame, int]] = deque()

    def write_oldest() -> None:
        nonlocal done
        future, kept, row_offset = pending.popleft()
        predictions = future.result()
        frame = output_chunk(kept, predictions, classes=classes, row_offset=row_offset if plan.add_row_number else None)
        for writer in writers:
            writer.write(frame)
        done += frame.height
        elapsed = max(time.monotonic() - started, 1e-9)
        report = RowProgress(rows_done=done, rows_total=max(total, done), rows_per_second=done / elapsed)
        progress(report.fraction, format_row_progress(report))

    pool = ThreadPoolExecutor(max_workers=PIPELINE_DEPTH, thread_name_prefix="batch-infer")
    try:
        try:
            for chunk in batches:
                if should_stop():
                    raise BatchCancelled(f"cancelled after {done:,} of {total:,} rows")
                arrays = feature_arrays(chunk, plan.model.features)
                future = pool.submit(
                    client.infer,
                    triton_name,
                    plan.model.version,
                    arrays,
                    chunk_rows=settings.batch_request_rows,
                    max_in_flight=settings.batch_in_flight,
                )
                pending.append((future, chunk.select(plan.keep_columns), offset))
                offset += chunk.height
                if len(pending) >= PIPELINE_DEPTH:
                    write_oldest()
        except pl.exceptions.PolarsError as error:
            raise InvalidInputError(
                f"cannot read {plan.input.ref} after {offset:,} rows: {str(error).splitlines()[0]}"
            ) from None
        while pending:
            write_oldest()
    finally:
        # Requests already sent finish on their own (seconds); nothing queued behind them starts.
        pool.shutdown(wait=True, cancel_futures=True)
    if done == 0:
        raise InvalidInputError(f"the input {plan.input.ref} has no rows")
    return done, time.monotonic() - started


def run_batch_prediction(
    params: dict[str, Any] | BatchSpec,
    *,
    job_id: int | None = None,
    progress: ProgressCallback | None = None,
    should_stop: StopCallback | None = None,
    settings: Settings | None = None,
    client: TritonClient | None = None,
) -> BatchResult:
    """Run one batch prediction (see the module doc); raises ``BatchCancelled`` when ``should_stop``."""
    settings = settings or get_settings()
    settings.ensure_dirs()
    progress = progress or _no_progress
    should_stop = should_stop or _never_stop
    started = time.monotonic()
    spec = parse_batch_spec(params)
    progress(0.0, "checking the model, the input and the output")
    with session_scope() as session:
        plan = plan_batch_prediction(session, spec, job_id=job_id, moment=_scheduled_moment(spec), settings=settings)
        remove_stale_temp_files(session, settings=settings, output_path=plan.output_path, job_id=job_id)
    token = new_token(job_id)
    triton_name = private_model_name(token, plan.model.name)
    repository = settings.triton_models_dir
    own_client = client is None
    client = client or TritonClient.from_settings(settings)
    writers = [ChunkWriter(dataset_temp_path(settings, token), "parquet")]
    if plan.output_path is not None:
        writers.append(ChunkWriter(output_temp_path(plan.output_path, token), plan.output_format))
    written = False
    try:
        remove_stale_private_models(client, repository=repository, keep=triton_name, job_id=job_id)
        progress(0.0, f"loading {plan.model.label} into Triton as {triton_name}")
        # From here a folder may exist, even half-written: cleanup must look for it.
        written = True
        written_version = export_private_model(plan.model, name=triton_name, repository=repository, settings=settings)
        client.load_model(triton_name)
        if plan.input.rows is None:
            progress(0.0, f"counting the rows of {plan.input.ref}")
        total = _count_rows(plan)
        progress(0.0, format_row_progress(RowProgress(rows_done=0, rows_total=total, rows_per_second=0)))
        rows, seconds = _score(
            plan,
            client=client,
            triton_name=triton_name,
            classes=written_version.spec.classes,
            writers=writers,
            total=total,
            progress=progress,
            should_stop=should_stop,
            settings=settings,
        )
        for writer in writers:
            writer.close()
        if should_stop():
            raise BatchCancelled(f"cancelled after scoring all {rows:,} rows, before publishing")
        progress(1.0, f"{format_row_progress(RowProgress(rows, rows, rows / seconds))} · publishing")
        staged = stage_output(writers[0].path, settings=settings)
        with _ignoring_sigterm():
            info, execution_id = _publish(
                plan, staged=staged, job_id=job_id, rows=rows, seconds=seconds, settings=settings
            )
            if plan.output_path is not None:
                os.replace(writers[1].path, plan.output_path)
    finally:
        for writer in writers:
            writer.discard()
        if written:
            remove_private_model(client, name=triton_name, repository=repository)
        if own_client:
            client.close()
    result = BatchResult(
        rows=rows,
        rows_per_second=rows / seconds if seconds > 0 else float(rows),
        scoring_seconds=seconds,
        total_seconds=time.monotonic() - started,
        model_name=plan.model.name,
        model_version=plan.model.version,
        model_alias=plan.model.alias,
        input=plan.input.ref,
        input_dataset=plan.input.dataset,
        input_dataset_version=plan.input.version,
        output_dataset=info.name,
        output_version=info.version,
        output_created=info.created,
        output_path=str(plan.output_path) if plan.output_path else None,
        output_format=plan.output_format,
        output_columns=plan.output_columns,
        lineage_execution_id=execution_id,
        triton_model=triton_name,
    )
    progress(1.0, format_row_progress(RowProgress(rows, rows, result.rows_per_second)))
    return result


def _publish(
    plan: BatchPlan, *, staged: StagedOutput, job_id: int | None, rows: int, seconds: float, settings: Settings
) -> tuple[DatasetVersionInfo, int]:
    """Register the output and its lineage in one transaction (retried when a concurrent job took the version)."""
    inputs = [model_version_ref(plan.model.name, plan.model.version)]
    if plan.input.dataset is not None and plan.input.version is not None:
        inputs.append(dataset_version_ref(plan.input.dataset, plan.input.version))
    else:
        inputs.append(file_ref(plan.input.path, format=plan.input.file_format))
    outputs = (
        [] if plan.output_path is None else [file_ref(plan.output_path, type="batch_output", format=plan.output_format)]
    )
    description = f"Predictions of {plan.model.name} on {plan.input.dataset or plan.input.path.name}"
    source = plan.output_path.name if plan.output_path else f"batch-job-{job_id if job_id is not None else 'local'}"
    ingest = {"format": "parquet", "batch_job_id": job_id, "model": plan.model.uri, "input": plan.input.ref}
    attempt = 1
    while True:
        moved: Path | None = None
        try:
            with session_scope() as session:
                info, moved = publish_output(
                    session,
                    staged=staged,
                    name=plan.output_dataset,
                    description=description,
                    source_filename=source,
                    ingest=ingest,
                    settings=settings,
                )
                execution = record_execution(
                    session,
                    type=EXECUTION_TYPE,
                    name=f"batch prediction job {job_id}" if job_id is not None else "batch prediction",
                    job_id=job_id,
                    inputs=inputs,
                    outputs=[dataset_version_ref(info.name, info.version, rows=rows), *outputs],
                    properties={
                        "model": plan.spec.model,
                        "rows": rows,
                        "seconds": round(seconds, 3),
                        "schedule": (plan.spec.schedule or {}).get("name"),
                    },
                )
            return info, execution.id
        except BaseException as error:
            if moved is not None:
                moved.unlink(missing_ok=True)
            if not isinstance(error, ConflictError) or attempt == PUBLISH_ATTEMPTS:
                raise
            attempt += 1
