"""Dataset services: immutable, content-hashed versions stored as Parquet, with a stored profile."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

import polars as pl
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.config import Settings, get_settings
from backend.datasets.ingest import file_sha256, read_tabular_file, stage_stream, validate_dataset_name
from backend.datasets.profile import profile_frame
from backend.errors import ConflictError, InvalidInputError, NotFoundError
from backend.models import Dataset, DatasetVersion

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
FILTER_OPERATORS = ("==", "!=", ">", ">=", "<", "<=", "contains")


@dataclass(frozen=True)
class ColumnSchema:
    name: str
    dtype: str


@dataclass(frozen=True)
class DatasetVersionInfo:
    name: str
    version: int
    content_hash: str
    rows: int
    columns: int
    schema: list[ColumnSchema]
    source_filename: str
    source_format: str
    source_bytes: int
    ingest: dict[str, Any]
    created_at: datetime
    # False when an upload matched an existing version's content and nothing new was stored.
    created: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "content_hash": self.content_hash,
            "rows": self.rows,
            "columns": self.columns,
            "schema": [{"name": column.name, "dtype": column.dtype} for column in self.schema],
            "source_filename": self.source_filename,
            "source_format": self.source_format,
            "source_bytes": self.source_bytes,
            "ingest": self.ingest,
            "created_at": self.created_at.isoformat(),
            "created": self.created,
        }


@dataclass(frozen=True)
class DatasetSummary:
    name: str
    description: str
    latest_version: int
    version_count: int
    rows: int
    columns: int
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "latest_version": self.latest_version,
            "version_count": self.version_count,
            "rows": self.rows,
            "columns": self.columns,
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True)
class DatasetPage:
    items: list[DatasetSummary]
    total: int


@dataclass(frozen=True)
class SchemaDiff:
    added: list[ColumnSchema] = field(default_factory=list)
    removed: list[ColumnSchema] = field(default_factory=list)
    # (name, old dtype, new dtype)
    changed: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


@dataclass(frozen=True)
class RowFilter:
    column: str
    operator: str
    value: str


@dataclass(frozen=True)
class RowsPage:
    frame: pl.DataFrame
    total: int
    offset: int


def parse_dataset_ref(ref: str) -> tuple[str, int | None]:
    """``NAME`` or ``NAME:VERSION`` → (name, version or None for the latest)."""
    name, sep, version = ref.partition(":")
    if not sep:
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise InvalidInputError(f"invalid version {version!r} in {ref!r}: expected a positive integer")
    return name, int(version)


def _to_info(row: DatasetVersion, name: str, *, created: bool = True) -> DatasetVersionInfo:
    return DatasetVersionInfo(
        name=name,
        version=row.version,
        content_hash=row.content_hash,
        rows=row.row_count,
        columns=row.column_count,
        schema=[ColumnSchema(**column) for column in row.schema_json],
        source_filename=row.source_filename,
        source_format=row.source_format,
        source_bytes=row.source_bytes,
        ingest=row.ingest_json,
        created_at=row.created_at,
        created=created,
    )


def create_dataset_version(
    session: Session,
    *,
    name: str,
    source_path: Path,
    filename: str | None = None,
    has_header: bool | None = None,
    description: str = "",
    settings: Settings | None = None,
) -> DatasetVersionInfo:
    """Ingest a CSV/Parquet file as the next version of ``name`` (created on first upload).

    Identical content returns the existing version. On any failure nothing is stored: no row,
    no file. Commits its own unit of work because the file and the rows must land together.
    """
    settings = settings or get_settings()
    validate_dataset_name(name)
    source_path = Path(source_path)
    if not source_path.is_file():
        raise InvalidInputError(f"no such file: {source_path}")
    size = source_path.stat().st_size
    if size == 0:
        raise InvalidInputError("the file is empty")
    if size > settings.max_upload_bytes:
        raise InvalidInputError(
            f"the file is {size:,} bytes, over the upload limit of {settings.max_upload_bytes:,} bytes"
        )
    content_hash = file_sha256(source_path)
    dataset = session.scalar(select(Dataset).where(Dataset.name == name))
    if dataset is not None:
        same_bytes = session.scalars(
            select(DatasetVersion)
            .where(DatasetVersion.dataset_id == dataset.id, DatasetVersion.content_hash == content_hash)
            .order_by(DatasetVersion.version)
        )
        # Same bytes read the same way are the same version; a header override re-reads them.
        for existing in same_bytes:
            if has_header in (None, existing.ingest_json.get("has_header")):
                return _to_info(existing, name, created=False)

    settings.ensure_dirs()
    staged = settings.tmp_dir / f"ingest-{uuid.uuid4().hex}.parquet"
    final: Path | None = None
    try:
        result = read_tabular_file(source_path, work_dir=settings.tmp_dir, destination=staged, has_header=has_header)
        frame = pl.read_parquet(staged)
        profile = profile_frame(frame)
        if dataset is None:
            dataset = Dataset(name=name, description=description)
            session.add(dataset)
            session.flush()
        next_version = (
            session.scalar(select(func.max(DatasetVersion.version)).where(DatasetVersion.dataset_id == dataset.id)) or 0
        ) + 1
        relative = Path("datasets") / name / f"v{next_version}-{content_hash[:12]}.parquet"
        final = settings.resolved_home / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, final)
        row = DatasetVersion(
            dataset_id=dataset.id,
            version=next_version,
            content_hash=content_hash,
            storage_path=relative.as_posix(),
            source_filename=filename or source_path.name,
            source_format=result.source_format,
            source_bytes=size,
            row_count=frame.height,
            column_count=frame.width,
            schema_json=[{"name": n, "dtype": str(t)} for n, t in frame.schema.items()],
            ingest_json=result.ingest,
            profile_json=profile,
        )
        session.add(row)
        session.commit()
    except IntegrityError:
        session.rollback()
        _remove(final)
        raise ConflictError(f"dataset {name!r} was changed by another upload at the same time; try again") from None
    except BaseException:
        session.rollback()
        _remove(final)
        raise
    finally:
        staged.unlink(missing_ok=True)
    return _to_info(row, name)


def _remove(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)
        # The folder of a first version that failed would be an orphan too.
        with suppress(OSError):
            path.parent.rmdir()


@contextmanager
def staged_upload(stream: BinaryIO, *, settings: Settings | None = None) -> Iterator[Path]:
    """Stream an upload to a temporary file under the size limit; the file is removed afterwards."""
    settings = settings or get_settings()
    settings.ensure_dirs()
    path = settings.tmp_dir / f"upload-{uuid.uuid4().hex}"
    stage_stream(stream, destination=path, max_bytes=settings.max_upload_bytes)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def upload_dataset(
    session: Session,
    *,
    name: str,
    stream: BinaryIO,
    filename: str,
    has_header: bool | None = None,
    settings: Settings | None = None,
) -> DatasetVersionInfo:
    """Ingest an uploaded stream (the portal's and the REST API's path)."""
    validate_dataset_name(name)
    with staged_upload(stream, settings=settings) as path:
        return create_dataset_version(
            session, name=name, source_path=path, filename=filename, has_header=has_header, settings=settings
        )


def list_datasets(session: Session, *, search: str | None = None, offset: int = 0, limit: int = 50) -> DatasetPage:
    latest = (
        select(
            DatasetVersion.dataset_id,
            func.max(DatasetVersion.version).label("latest"),
            func.count(DatasetVersion.id).label("count"),
        )
        .group_by(DatasetVersion.dataset_id)
        .subquery()
    )
    query = (
        select(Dataset, DatasetVersion, latest.c.count)
        .join(latest, latest.c.dataset_id == Dataset.id)
        .join(
            DatasetVersion,
            (DatasetVersion.dataset_id == Dataset.id) & (DatasetVersion.version == latest.c.latest),
        )
    )
    if search:
        pattern = f"%{search.strip().lower()}%"
        query = query.where(or_(func.lower(Dataset.name).like(pattern), func.lower(Dataset.description).like(pattern)))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.execute(query.order_by(DatasetVersion.created_at.desc()).offset(offset).limit(limit)).all()
    items = [
        DatasetSummary(
            name=dataset.name,
            description=dataset.description,
            latest_version=version.version,
            version_count=count,
            rows=version.row_count,
            columns=version.column_count,
            updated_at=version.created_at,
        )
        for dataset, version, count in rows
    ]
    return DatasetPage(items=items, total=total)


def _get_version_row(session: Session, name: str, version: int | None) -> DatasetVersion:
    dataset = session.scalar(select(Dataset).where(Dataset.name == name))
    if dataset is None:
        raise NotFoundError(f"dataset {name!r} does not exist")
    query = select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id)
    if version is None:
        query = query.order_by(DatasetVersion.version.desc()).limit(1)
    else:
        query = query.where(DatasetVersion.version == version)
    row = session.scalar(query)
    if row is None:
        raise NotFoundError(f"dataset {name!r} has no version {version}")
    return row


def get_dataset_version(session: Session, *, name: str, version: int | None = None) -> DatasetVersionInfo:
    return _to_info(_get_version_row(session, name, version), name)


def list_dataset_versions(session: Session, *, name: str) -> list[DatasetVersionInfo]:
    dataset = session.scalar(select(Dataset).where(Dataset.name == name))
    if dataset is None:
        raise NotFoundError(f"dataset {name!r} does not exist")
    rows = session.scalars(
        select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id).order_by(DatasetVersion.version.desc())
    )
    return [_to_info(row, name) for row in rows]


def get_dataset_profile(session: Session, *, name: str, version: int | None = None) -> dict[str, Any]:
    return _get_version_row(session, name, version).profile_json


def dataset_file_path(
    session: Session, *, name: str, version: int | None = None, settings: Settings | None = None
) -> Path:
    settings = settings or get_settings()
    return settings.resolved_home / _get_version_row(session, name, version).storage_path


def diff_dataset_schemas(session: Session, *, name: str, from_version: int, to_version: int) -> SchemaDiff:
    old = {c.name: c.dtype for c in get_dataset_version(session, name=name, version=from_version).schema}
    new = {c.name: c.dtype for c in get_dataset_version(session, name=name, version=to_version).schema}
    return SchemaDiff(
        added=[ColumnSchema(n, t) for n, t in new.items() if n not in old],
        removed=[ColumnSchema(n, t) for n, t in old.items() if n not in new],
        changed=[(n, old[n], t) for n, t in new.items() if n in old and old[n] != t],
    )


def _filter_expression(schema: pl.Schema, row_filter: RowFilter) -> pl.Expr:
    if row_filter.column not in schema:
        raise InvalidInputError(f"unknown column {row_filter.column!r} in filter")
    if row_filter.operator not in FILTER_OPERATORS:
        raise InvalidInputError(f"unknown filter operator {row_filter.operator!r}; use one of {FILTER_OPERATORS}")
    column = pl.col(row_filter.column)
    if row_filter.operator == "contains":
        return column.cast(pl.String).str.contains(row_filter.value, literal=True)
    dtype = schema[row_filter.column]
    try:
        value = pl.Series([row_filter.value]).cast(dtype, strict=True)[0]
    except (pl.exceptions.PolarsError, ValueError):
        raise InvalidInputError(
            f"filter value {row_filter.value!r} is not a valid {dtype} for column {row_filter.column!r}"
        ) from None
    comparisons = {
        "==": column == value,
        "!=": column != value,
        ">": column > value,
        ">=": column >= value,
        "<": column < value,
        "<=": column <= value,
    }
    return comparisons[row_filter.operator]


def read_dataset_rows(
    session: Session,
    *,
    name: str,
    version: int | None = None,
    offset: int = 0,
    limit: int = 50,
    filters: list[RowFilter] | None = None,
    settings: Settings | None = None,
) -> RowsPage:
    """One page of rows, filtered on the server (lazily, so only the page is materialised)."""
    if offset < 0 or limit < 1:
        raise InvalidInputError("offset must be ≥ 0 and limit ≥ 1")
    frame = pl.scan_parquet(dataset_file_path(session, name=name, version=version, settings=settings))
    schema = frame.collect_schema()
    for row_filter in filters or []:
        frame = frame.filter(_filter_expression(schema, row_filter))
    total = frame.select(pl.len()).collect().item()
    return RowsPage(frame=frame.slice(offset, limit).collect(), total=total, offset=offset)


def escape_formulas(frame: pl.DataFrame) -> pl.DataFrame:
    """Prefix text cells that a spreadsheet would run as a formula with a quote (OWASP CSV injection)."""
    text_columns = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    if not text_columns:
        return frame
    return frame.with_columns(_escape_expression(name) for name in text_columns)


def _escape_expression(name: str) -> pl.Expr:
    column = pl.col(name)
    risky = pl.any_horizontal([column.str.starts_with(prefix) for prefix in FORMULA_PREFIXES])
    return pl.when(risky).then(pl.lit("'") + column).otherwise(column).alias(name)


def export_dataset(
    session: Session,
    *,
    name: str,
    version: int | None = None,
    file_format: Literal["csv", "parquet"] = "csv",
    settings: Settings | None = None,
) -> bytes:
    """The version's content as CSV (formula-escaped) or Parquet bytes, for downloads."""
    path = dataset_file_path(session, name=name, version=version, settings=settings)
    if file_format == "parquet":
        return path.read_bytes()
    if file_format != "csv":
        raise InvalidInputError(f"unknown format {file_format!r}; use csv or parquet")
    buffer = io.BytesIO()
    escape_formulas(pl.read_parquet(path)).write_csv(buffer)
    return buffer.getvalue()


EXAMPLE_DATASET_NAME = "churn"
EXAMPLE_CSV = Path(__file__).resolve().parents[2] / "examples" / "churn.csv"


def load_example_data(session: Session, *, settings: Settings | None = None) -> DatasetVersionInfo:
    """Ingest the bundled synthetic churn data set as dataset ``churn``."""
    if not EXAMPLE_CSV.is_file():
        raise NotFoundError(f"example data missing at {EXAMPLE_CSV}; run `make example-data`")
    return create_dataset_version(
        session, name=EXAMPLE_DATASET_NAME, source_path=EXAMPLE_CSV, filename=EXAMPLE_CSV.name, settings=settings
    )
