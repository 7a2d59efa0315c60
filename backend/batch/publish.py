"""Registering a batch job's Parquet output as the next version of a dataset, without re-ingesting it.

``create_dataset_version`` re-reads and re-validates an uploaded file whole (and caps its size at the
upload limit); a batch output is already clean Parquet written by us, so it is hashed and profiled
once and moved into the dataset store under the same layout and rules: content-hashed, immutable,
identical content returns the existing version.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.config import Settings, get_settings
from backend.datasets import DatasetVersionInfo, get_dataset_version, validate_dataset_name
from backend.datasets.ingest import file_sha256
from backend.datasets.profile import profile_frame
from backend.errors import ConflictError
from backend.models import Dataset, DatasetVersion, utcnow


@dataclass(frozen=True)
class StagedOutput:
    """A finished Parquet output, hashed and profiled, not yet registered."""

    path: Path
    content_hash: str
    rows: int
    bytes: int
    schema: list[dict[str, str]]
    profile: dict[str, Any]


def stage_output(path: Path, *, settings: Settings | None = None) -> StagedOutput:
    """Hash and profile the output (whole up to ``batch_profile_max_rows``, else an even sample)."""
    settings = settings or get_settings()
    frame = pl.scan_parquet(path)
    schema = frame.collect_schema()
    rows = frame.select(pl.len()).collect().item()
    limit = settings.batch_profile_max_rows
    if rows <= limit:
        profile = profile_frame(frame.collect())
    else:
        sample = frame.gather_every(-(-rows // limit)).collect(engine="streaming")
        profile = profile_frame(sample) | {"rows": rows, "sampled_rows": sample.height}
    return StagedOutput(
        path=path,
        content_hash=file_sha256(path),
        rows=rows,
        bytes=path.stat().st_size,
        schema=[{"name": name, "dtype": str(dtype)} for name, dtype in schema.items()],
        profile=profile,
    )


def publish_output(
    session: Session,
    *,
    staged: StagedOutput,
    name: str,
    description: str,
    source_filename: str,
    ingest: dict[str, Any],
    settings: Settings | None = None,
) -> tuple[DatasetVersionInfo, Path | None]:
    """Add the version row and move the file into the dataset store; the caller commits.

    Returns the version and the file's new path (None when identical content was already a version
    and the staged file was left where it is). On a failed commit the caller removes that path.
    """
    settings = settings or get_settings()
    validate_dataset_name(name)
    dataset = session.scalar(select(Dataset).where(Dataset.name == name))
    if dataset is not None:
        existing = session.scalar(
            select(DatasetVersion.version).where(
                DatasetVersion.dataset_id == dataset.id, DatasetVersion.content_hash == staged.content_hash
            )
        )
        if existing is not None:
            info = get_dataset_version(session, name=name, version=existing)
            return replace(info, created=False), None
    else:
        dataset = Dataset(name=name, description=description, created_at=utcnow())
        session.add(dataset)
        session.flush()
    version = (
        session.scalar(select(func.max(DatasetVersion.version)).where(DatasetVersion.dataset_id == dataset.id)) or 0
    ) + 1
    relative = Path("datasets") / name / f"v{version}-{staged.content_hash[:12]}.parquet"
    row = DatasetVersion(
        dataset_id=dataset.id,
        version=version,
        content_hash=staged.content_hash,
        storage_path=relative.as_posix(),
        source_filename=source_filename,
        source_format="parquet",
        source_bytes=staged.bytes,
        row_count=staged.rows,
        column_count=len(staged.schema),
        schema_json=staged.schema,
        ingest_json=ingest,
        profile_json=staged.profile,
        created_at=utcnow(),
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise ConflictError(f"dataset {name!r} got a new version at the same time; try again") from None
    final = settings.resolved_home / relative
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged.path, final)
    return get_dataset_version(session, name=name, version=version), final
