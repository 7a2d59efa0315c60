"""A batch job's files: temporary outputs written chunk by chunk, and what to do with a chunk's columns.

Outputs are written under temporary names and renamed into place only when the job publishes:
the dataset's Parquet in ``<home>/tmp/batch-<job>-<token>.parquet`` and the user's file beside its
final path as ``.<name>.batch-<job>-<token>.tmp`` (same folder, so the rename is atomic). A job
killed outright (SIGKILL) cannot remove its own; the next batch job removes those of finished jobs.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.batch.plan import FeatureSpec
from backend.batch.spec import PREDICTION_COLUMN, PROBABILITY_PREFIX, ROW_NUMBER_COLUMN, OutputFormat
from backend.config import Settings
from backend.jobs.service import JobStatus
from backend.models import Job

LOCAL = "local"
_TEMP_NAME = re.compile(r"batch-(?P<job>\d+|local)-[0-9a-f]{8}")
ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)


def new_token(job_id: int | None) -> str:
    return f"{job_id if job_id is not None else LOCAL}-{uuid.uuid4().hex[:8]}"


def dataset_temp_path(settings: Settings, token: str) -> Path:
    return settings.tmp_dir / f"batch-{token}.parquet"


def output_temp_path(path: Path, token: str) -> Path:
    return path.parent / f".{path.name}.batch-{token}.tmp"


def job_id_of(name: str) -> int | None:
    """The job id in a temporary file's or private model's name; None for in-process runs."""
    match = _TEMP_NAME.search(name)
    if match is None or match["job"] == LOCAL:
        return None
    return int(match["job"])


def inactive_job_ids(session: Session, job_ids: Sequence[int]) -> set[int]:
    """The jobs among ``job_ids`` that are finished or gone: their leftovers are safe to remove."""
    if not job_ids:
        return set()
    active = set(session.scalars(select(Job.id).where(Job.id.in_(list(job_ids)), Job.status.in_(ACTIVE_STATUSES))))
    return set(job_ids) - active


def remove_stale_temp_files(
    session: Session, *, settings: Settings, output_path: Path | None, job_id: int | None = None
) -> list[Path]:
    """Temporary outputs of finished jobs, and of earlier attempts of ``job_id`` (the job starting now)."""
    candidates = list(settings.tmp_dir.glob("batch-*.parquet")) if settings.tmp_dir.is_dir() else []
    if output_path is not None:
        candidates += list(output_path.parent.glob(f".{output_path.name}.batch-*.tmp"))
    owners = {path: job_id_of(path.name) for path in candidates}
    stale = inactive_job_ids(session, sorted({job for job in owners.values() if job is not None}))
    if job_id is not None:
        stale.add(job_id)
    removed = []
    for path, job in owners.items():
        if job in stale:
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def feature_arrays(chunk: pl.DataFrame, features: Sequence[FeatureSpec]) -> dict[str, np.ndarray]:
    """One array per model input, as Triton takes it: numbers as float64 (missing = NaN), text as objects."""
    arrays = {}
    for feature in features:
        column = chunk.get_column(feature.name)
        if feature.type == "string":
            arrays[feature.name] = column.cast(pl.String).to_numpy()
        else:
            arrays[feature.name] = column.cast(pl.Float64, strict=False).to_numpy()
    return arrays


def output_chunk(
    kept: pl.DataFrame,
    predictions: dict[str, np.ndarray],
    *,
    classes: Sequence[object] | None,
    row_offset: int | None,
) -> pl.DataFrame:
    """Kept input columns (or a row number), then ``prediction`` and one ``probability_<class>`` per class."""
    labels = predictions[PREDICTION_COLUMN]
    # A frame without columns has no height: count the predictions.
    rows = len(labels)
    columns: list[pl.Series] = []
    if row_offset is not None:
        columns.append(pl.Series(ROW_NUMBER_COLUMN, np.arange(row_offset, row_offset + rows, dtype=np.int64)))
    if labels.dtype == object:
        columns.append(pl.Series(PREDICTION_COLUMN, labels, dtype=pl.String))
    else:
        columns.append(pl.Series(PREDICTION_COLUMN, labels))
    probabilities = predictions.get("probabilities")
    if probabilities is not None and classes:
        for index, label in enumerate(classes):
            columns.append(pl.Series(f"{PROBABILITY_PREFIX}{label}", probabilities[:, index].astype(np.float64)))
    return kept.hstack(columns) if kept.width else pl.DataFrame(columns)


class ChunkWriter:
    """Appends frames of one schema to a Parquet or CSV file, keeping only the current chunk in memory."""

    def __init__(self, path: Path, file_format: OutputFormat):
        self.path = path
        self.file_format = file_format
        self.rows = 0
        self._parquet: pq.ParquetWriter | None = None
        self._csv: IO[bytes] | None = None

    def write(self, frame: pl.DataFrame) -> None:
        if self.file_format == "parquet":
            # Oldest Arrow layout (large_string, not string_view): readable by any Parquet reader.
            table = frame.to_arrow(compat_level=pl.CompatLevel.oldest())
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, table.schema, compression="zstd")
            self._parquet.write_table(table)
        else:
            if self._csv is None:
                self._csv = self.path.open("wb")
                frame.write_csv(self._csv, include_header=True)
            else:
                frame.write_csv(self._csv, include_header=False)
        self.rows += frame.height

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
        if self._csv is not None:
            self._csv.close()
            self._csv = None

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
        self.path.unlink(missing_ok=True)
