"""Resolving a batch request before any scoring: the model version, the input, the output; bad input fails here.

``plan_batch_prediction`` runs twice: when the job is submitted (so the page and the CLI refuse a bad
request at once) and again when the job starts (an alias may have moved, a dataset gained a version,
a file changed). Its errors name what is wrong: the missing feature columns, the unreadable file,
the output folder that cannot be written, the unknown model, version or alias.
"""

from __future__ import annotations

import codecs
import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy.orm import Session

from backend.batch.spec import (
    PREDICTION_COLUMN,
    PROBABILITY_PREFIX,
    ROW_NUMBER_COLUMN,
    BatchSpec,
    InputRef,
    ModelRef,
    OutputFormat,
    check_output_path,
    detect_id_columns,
    render_output_path,
)
from backend.config import Settings, get_settings
from backend.datasets import dataset_file_path, get_dataset_version
from backend.errors import InvalidInputError, NotFoundError
from backend.models import utcnow

PARQUET_MAGIC = b"PAR1"
SNIFF_BYTES = 64 * 1024
CSV_DELIMITERS = ",;\t|"
INFER_SCHEMA_ROWS = 10_000
NUMERIC_TYPES = frozenset({"long", "integer", "double", "float"})
TEXT_DTYPES = (pl.String, pl.Categorical, pl.Enum)
MAX_LISTED_NAMES = 20


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    # The column's type in the model's MLflow signature: long, double, boolean or string.
    type: str

    @property
    def is_numeric(self) -> bool:
        return self.type in NUMERIC_TYPES

    @property
    def polars_dtype(self) -> type[pl.DataType]:
        if self.type == "boolean":
            return pl.Boolean
        return pl.Float64 if self.is_numeric else pl.String


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    version: int
    alias: str | None
    features: tuple[FeatureSpec, ...]
    # The signature's outputs: prediction, then probability_<class> for classifiers.
    outputs: tuple[str, ...]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}" + (f" (@{self.alias})" if self.alias else "")


@dataclass(frozen=True)
class CsvOptions:
    separator: str
    quote_char: str


@dataclass(frozen=True)
class ResolvedInput:
    path: Path
    file_format: OutputFormat
    schema: dict[str, pl.DataType]
    # Known up front for dataset versions and Parquet files; a CSV file is counted when the job runs.
    rows: int | None
    dataset: str | None = None
    version: int | None = None
    csv: CsvOptions | None = None

    @property
    def ref(self) -> str:
        return f"dataset:{self.dataset}:{self.version}" if self.dataset is not None else str(self.path)

    def scan(self, schema_overrides: dict[str, Any] | None = None) -> pl.LazyFrame:
        if self.file_format == "parquet":
            return pl.scan_parquet(self.path)
        assert self.csv is not None
        return pl.scan_csv(
            self.path,
            separator=self.csv.separator,
            quote_char=self.csv.quote_char,
            encoding="utf8-lossy",
            infer_schema_length=INFER_SCHEMA_ROWS,
            schema_overrides=schema_overrides,
        )


@dataclass(frozen=True)
class BatchPlan:
    spec: BatchSpec
    model: ResolvedModel
    input: ResolvedInput
    # Input columns copied into the output, in input order.
    keep_columns: tuple[str, ...]
    # No id column to tie predictions to rows: the output numbers them instead.
    add_row_number: bool
    output_dataset: str
    output_path: Path | None
    output_format: OutputFormat

    @property
    def output_columns(self) -> list[str]:
        leading = [ROW_NUMBER_COLUMN] if self.add_row_number else []
        return [*leading, *self.keep_columns, *self.model.outputs]


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED_NAMES])
    return shown + (f" and {len(names) - MAX_LISTED_NAMES} more" if len(names) > MAX_LISTED_NAMES else "")


def resolve_model(
    ref: ModelRef, *, pinned_version: int | None = None, settings: Settings | None = None
) -> ResolvedModel:
    """Find the version ``ref`` names in the MLflow registry and read its signature (MLmodel only)."""
    import mlflow.models
    from mlflow.exceptions import MlflowException

    from backend.tracking import tracking_client

    client = tracking_client(settings or get_settings())
    try:
        registered = client.get_registered_model(ref.name)
    except MlflowException:
        known = [model.name for model in client.search_registered_models(max_results=MAX_LISTED_NAMES)]
        hint = f"; registered models: {_names(known)}" if known else "; no model is registered yet"
        raise NotFoundError(f"no registered model named {ref.name!r}{hint}") from None
    aliases = {alias: int(version) for alias, version in (registered.aliases or {}).items()}
    if pinned_version is not None:
        version = pinned_version
    elif ref.alias is not None:
        if ref.alias not in aliases:
            listed = ", ".join(f"@{alias} (v{version})" for alias, version in sorted(aliases.items()))
            raise NotFoundError(
                f"model {ref.name!r} has no alias {ref.alias!r}"
                + (f"; its aliases: {listed}" if listed else "; it has no aliases")
            )
        version = aliases[ref.alias]
    else:
        assert ref.version is not None
        version = ref.version
    try:
        client.get_model_version(ref.name, str(version))
    except MlflowException:
        versions = sorted(
            int(item.version) for item in client.search_model_versions(f"name = '{ref.name.replace(chr(39), '')}'")
        )
        raise NotFoundError(
            f"model {ref.name!r} has no version {version}; versions: {', '.join(map(str, versions)) or 'none'}"
        ) from None
    try:
        info = mlflow.models.get_model_info(f"models:/{ref.name}/{version}")
    except (MlflowException, OSError) as error:
        raise NotFoundError(f"cannot read {ref.name} version {version} from MLflow: {error}") from None
    signature = info.signature
    if signature is None or signature.inputs is None or not signature.inputs.has_input_names():
        raise InvalidInputError(f"{ref.name} version {version} has no column signature; it cannot be batch-scored")
    features = tuple(FeatureSpec(column["name"], column["type"]) for column in signature.inputs.to_dict())
    outputs = tuple(column["name"] for column in (signature.outputs.to_dict() if signature.outputs else []))
    return ResolvedModel(
        name=ref.name,
        version=version,
        alias=ref.alias,
        features=features,
        outputs=outputs or (PREDICTION_COLUMN,),
    )


def _sniff_csv(path: Path) -> CsvOptions:
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InvalidInputError(f"{path} is UTF-16 encoded; save it as UTF-8")
    if b"\x00" in head:
        raise InvalidInputError(f"{path} is neither Parquet nor CSV text (it holds NUL bytes)")
    sample = head.decode("utf-8", errors="replace")
    if len(head) == SNIFF_BYTES and "\n" in sample:
        sample = sample[: sample.rfind("\n") + 1]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=CSV_DELIMITERS)
        return CsvOptions(separator=dialect.delimiter, quote_char=dialect.quotechar or '"')
    except csv.Error:
        return CsvOptions(separator=",", quote_char='"')


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def resolve_file_input(path: Path) -> ResolvedInput:
    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise InvalidInputError(f"input file {path} does not exist")
    if not path.is_file():
        raise InvalidInputError(f"input {path} is not a file")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as error:
        raise InvalidInputError(f"cannot read input file {path}: {error.strerror}") from None
    if not magic:
        raise InvalidInputError(f"input file {path} is empty")
    if magic == PARQUET_MAGIC:
        try:
            frame = pl.scan_parquet(path)
            schema = dict(frame.collect_schema())
            rows = frame.select(pl.len()).collect().item()
        except (pl.exceptions.PolarsError, OSError) as error:
            raise InvalidInputError(f"{path} is not a readable Parquet file: {_first_line(error)}") from None
        return ResolvedInput(path=path, file_format="parquet", schema=schema, rows=rows)
    options = _sniff_csv(path)
    resolved = ResolvedInput(path=path, file_format="csv", schema={}, rows=None, csv=options)
    try:
        schema = dict(resolved.scan().collect_schema())
    except (pl.exceptions.PolarsError, OSError) as error:
        raise InvalidInputError(f"{path} is not a readable CSV file: {_first_line(error)}") from None
    if not schema:
        raise InvalidInputError(f"{path} has no columns")
    return ResolvedInput(path=path, file_format="csv", schema=schema, rows=None, csv=options)


def resolve_input(session: Session, ref: InputRef, *, settings: Settings | None = None) -> ResolvedInput:
    """A dataset version (the latest when none is named, pinned from here on) or a file."""
    if ref.path is not None:
        return resolve_file_input(ref.path)
    assert ref.dataset is not None
    info = get_dataset_version(session, name=ref.dataset, version=ref.version)
    path = dataset_file_path(session, name=info.name, version=info.version, settings=settings)
    schema = dict(pl.scan_parquet(path).collect_schema())
    return ResolvedInput(
        path=path, file_format="parquet", schema=schema, rows=info.rows, dataset=info.name, version=info.version
    )


def check_features(model: ResolvedModel, schema: dict[str, pl.DataType]) -> None:
    """The input has every feature of the model, each of a usable type."""
    missing = [feature.name for feature in model.features if feature.name not in schema]
    if missing:
        raise InvalidInputError(
            f"the input lacks {len(missing)} of the {len(model.features)} feature columns of {model.label}: "
            f"{_names(missing)}"
        )
    problems = []
    for feature in model.features:
        dtype = schema[feature.name]
        is_text = isinstance(dtype, TEXT_DTYPES)
        if not (dtype.is_numeric() or dtype == pl.Boolean or is_text):
            problems.append(f"{feature.name!r} is {dtype}")
        elif feature.type != "string" and is_text:
            kind = "numbers" if feature.is_numeric else "true/false values"
            problems.append(f"{feature.name!r} holds text but the model expects {kind}")
    if problems:
        raise InvalidInputError(f"input columns do not fit {model.label}: {'; '.join(problems)}")


def _kept_columns(spec: BatchSpec, model: ResolvedModel, columns: list[str]) -> tuple[list[str], bool]:
    if spec.columns == "all":
        kept = list(columns)
    elif spec.id_columns:
        unknown = [name for name in spec.id_columns if name not in columns]
        if unknown:
            raise InvalidInputError(f"id column(s) not in the input: {_names(unknown)}")
        kept = [name for name in columns if name in set(spec.id_columns)]
    else:
        kept = detect_id_columns(columns)
    clashes = [
        name
        for name in kept
        if name in model.outputs or name == PREDICTION_COLUMN or name.startswith(PROBABILITY_PREFIX)
    ]
    if clashes:
        raise InvalidInputError(
            f"input column(s) {_names(clashes)} would clash with the model's outputs; "
            "choose the id columns to keep instead of all columns"
        )
    return kept, not kept and spec.columns == "ids"


def plan_batch_prediction(
    session: Session,
    spec: BatchSpec,
    *,
    job_id: int | None = None,
    moment: datetime | None = None,
    settings: Settings | None = None,
    model: ResolvedModel | None = None,
) -> BatchPlan:
    """Every check that can run before scoring; raises InvalidInputError / NotFoundError with the reason."""
    settings = settings or get_settings()
    resolved_input = resolve_input(session, spec.input_ref, settings=settings)
    if resolved_input.rows == 0:
        raise InvalidInputError(f"the input {resolved_input.ref} has no rows")
    output_path = None
    if spec.output_path:
        output_path = check_output_path(render_output_path(spec.output_path, job_id=job_id, moment=moment or utcnow()))
        if output_path == resolved_input.path:
            raise InvalidInputError(f"the output file {output_path} is the input file")
    model = model or resolve_model(spec.model_ref, pinned_version=spec.model_version, settings=settings)
    check_features(model, resolved_input.schema)
    kept, add_row_number = _kept_columns(spec, model, list(resolved_input.schema))
    return BatchPlan(
        spec=spec,
        model=model,
        input=resolved_input,
        keep_columns=tuple(kept),
        add_row_number=add_row_number,
        output_dataset=spec.output_dataset,
        output_path=output_path,
        output_format=spec.output_format,
    )
