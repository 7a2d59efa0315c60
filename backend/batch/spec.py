"""What a batch prediction job is asked to do (its JSON parameters) and the pure checks on it."""

from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from backend.datasets.ingest import validate_dataset_name
from backend.errors import InvalidInputError

OutputFormat = Literal["parquet", "csv"]
ColumnsChoice = Literal["ids", "all"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("parquet", "csv")
COLUMN_CHOICES: tuple[ColumnsChoice, ...] = ("ids", "all")
DATASET_PREFIX = "dataset:"
# Placeholders an output path may hold, filled when the job runs (schedules write one file per run).
PATH_FIELDS = ("job_id", "date", "time")
PREDICTION_COLUMN = "prediction"
PROBABILITY_PREFIX = "probability_"
ROW_NUMBER_COLUMN = "row_number"
# customer_id, order-id, uuid, userId, ...: the columns that tie a prediction back to its row.
_ID_NAME = re.compile(r"(^|[^A-Za-z0-9])(id|Id|ID|uuid|UUID|guid|GUID)$|[a-z0-9](Id|ID|Uuid|UUID)$")


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias else f"{self.name}/{self.version}"


@dataclass(frozen=True)
class InputRef:
    """``dataset:NAME[:VERSION]`` (no version: the latest when the job runs) or a CSV / Parquet file."""

    dataset: str | None = None
    version: int | None = None
    path: Path | None = None

    @property
    def is_dataset(self) -> bool:
        return self.dataset is not None

    def __str__(self) -> str:
        if self.dataset is not None:
            return f"{DATASET_PREFIX}{self.dataset}" + (f":{self.version}" if self.version else "")
        return str(self.path)


def parse_model_ref(ref: str) -> ModelRef:
    """``MODEL@ALIAS`` or ``MODEL/VERSION`` (MLflow's ``models:/`` prefix is accepted too)."""
    text = (ref or "").strip().removeprefix("models:/")
    if "@" in text:
        name, _, alias = text.rpartition("@")
        if name and alias and re.fullmatch(r"[A-Za-z0-9_-]+", alias):
            return ModelRef(name=name, alias=alias)
    else:
        name, _, version = text.rpartition("/")
        if name and version.isdigit() and int(version) >= 1:
            return ModelRef(name=name, version=int(version))
    raise InvalidInputError(f"model {ref!r} is not MODEL@ALIAS or MODEL/VERSION (e.g. churn-churned@champion)")


def parse_input_ref(ref: str) -> InputRef:
    text = (ref or "").strip()
    if not text:
        raise InvalidInputError("the input is empty: give dataset:NAME[:VERSION] or the path of a CSV / Parquet file")
    if text.startswith(DATASET_PREFIX):
        name, _, version = text.removeprefix(DATASET_PREFIX).partition(":")
        validate_dataset_name(name)
        if version and (not version.isdigit() or int(version) < 1):
            raise InvalidInputError(f"invalid dataset version {version!r} in {text!r}: expected a positive integer")
        return InputRef(dataset=name, version=int(version) if version else None)
    return InputRef(path=Path(text.removeprefix("file://")).expanduser())


def output_format_for(path: str | None, requested: str | None) -> OutputFormat:
    """The format asked for, else the one the output file's suffix names, else Parquet."""
    if requested:
        if requested not in OUTPUT_FORMATS:
            raise InvalidInputError(f"output format must be parquet or csv, not {requested!r}")
        return requested  # type: ignore[return-value]
    suffix = Path(path).suffix.lower() if path else ""
    return "csv" if suffix in (".csv", ".txt") else "parquet"


def validate_path_template(template: str) -> str:
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise InvalidInputError(f"output path {template!r} is not a valid template: {error}") from None
    unknown = [name for name in fields if name not in PATH_FIELDS]
    if unknown:
        raise InvalidInputError(
            f"output path {template!r} uses unknown placeholder(s) {', '.join(unknown)}; "
            f"use {', '.join('{' + name + '}' for name in PATH_FIELDS)}"
        )
    return template


def render_output_path(template: str, *, job_id: int | None, moment: datetime) -> Path:
    return Path(
        template.format(
            job_id=job_id if job_id is not None else "local",
            date=moment.strftime("%Y-%m-%d"),
            time=moment.strftime("%H%M%S"),
        )
    ).expanduser()


def check_output_path(path: Path) -> Path:
    """Refuse an output file that cannot be written: its folder is missing, not a folder, or read-only."""
    path = Path(os.path.abspath(path))
    if path.is_dir():
        raise InvalidInputError(f"output path {path} is a folder; give a file name (e.g. {path}/scores.parquet)")
    folder = path.parent
    if not folder.exists():
        raise InvalidInputError(f"output folder {folder} does not exist")
    if not folder.is_dir():
        raise InvalidInputError(f"output folder {folder} is not a folder")
    probe = folder / f".sextant-write-check-{os.getpid()}"
    try:
        probe.write_bytes(b"")
    except OSError as error:
        raise InvalidInputError(f"output folder {folder} is not writable: {error.strerror}") from None
    probe.unlink(missing_ok=True)
    return path


def default_output_dataset(input_ref: InputRef) -> str:
    base = input_ref.dataset if input_ref.dataset is not None else Path(str(input_ref.path)).stem
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", base or "batch").strip("-._") or "batch"
    return f"{slug[:85]}-predictions"


def detect_id_columns(columns: list[str]) -> list[str]:
    return [name for name in columns if _ID_NAME.search(name)]


class BatchSpec(BaseModel):
    """A batch job's parameters as stored on the job row (and in a schedule's spec)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    input: str
    output_dataset: str
    # A file to write besides the dataset version; may hold {job_id}, {date} and {time}.
    output_path: str | None = None
    output_format: OutputFormat = "parquet"
    columns: ColumnsChoice = "ids"
    id_columns: list[str] | None = None
    # Pinned at submit time for one-off jobs; a schedule's jobs resolve MODEL@ALIAS when they run.
    model_version: int | None = None
    # Set by the schedule that fired the job.
    schedule: dict[str, Any] | None = None

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        parse_model_ref(value)
        return value.strip()

    @field_validator("input")
    @classmethod
    def _input(cls, value: str) -> str:
        parse_input_ref(value)
        return value.strip()

    @field_validator("output_dataset")
    @classmethod
    def _dataset_name(cls, value: str) -> str:
        return validate_dataset_name(value)

    @field_validator("output_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return validate_path_template(value.strip())

    @property
    def model_ref(self) -> ModelRef:
        return parse_model_ref(self.model)

    @property
    def input_ref(self) -> InputRef:
        return parse_input_ref(self.input)

    def params(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def parse_batch_spec(params: dict[str, Any] | BatchSpec) -> BatchSpec:
    if isinstance(params, BatchSpec):
        return params
    try:
        spec = BatchSpec.model_validate(params)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "spec"
        message = str(first.get("ctx", {}).get("error") or first["msg"])
        raise InvalidInputError(f"invalid batch prediction request: {where}: {message}") from None
    return spec
