"""Reading an uploaded CSV or Parquet file: encoding, dialect and header detection, validation.

Pure file work, no database: the service in ``backend.datasets.service`` decides where results go.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import polars as pl

from backend.errors import InvalidInputError

SAMPLE_BYTES = 256 * 1024
CHUNK_BYTES = 1024 * 1024
CANDIDATE_DELIMITERS = ",;\t|"
PARQUET_MAGIC = b"PAR1"
# Enough rows for polars to settle column types on almost every file; a file that still
# surprises it is re-read with a full scan (see read_csv_to_parquet).
INFER_SCHEMA_ROWS = 10_000
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_NAME_LENGTH = 100


@dataclass(frozen=True)
class CsvDialect:
    encoding: str
    delimiter: str
    quotechar: str
    has_header: bool

    @property
    def decimal_comma(self) -> bool:
        # Semicolon-separated files are the European convention, where 1,5 means one and a half.
        return self.delimiter == ";"

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {"decimal_comma": self.decimal_comma}


@dataclass(frozen=True)
class IngestResult:
    """A validated file converted to Parquet at ``parquet_path`` (a temporary file the caller owns)."""

    parquet_path: Path
    source_format: str
    row_count: int
    columns: list[str]
    ingest: dict[str, object]


def validate_dataset_name(name: str) -> str:
    if name is None or not name.strip():
        raise InvalidInputError("dataset name is empty")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InvalidInputError("dataset name contains control characters")
    if "/" in name or "\\" in name:
        raise InvalidInputError(f"dataset name {name!r} contains a path separator")
    if name in (".", "..") or len(name) > MAX_NAME_LENGTH or not NAME_PATTERN.match(name):
        raise InvalidInputError(
            f"dataset name {name!r} is invalid: use letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit, at most {MAX_NAME_LENGTH} characters"
        )
    return name


def stage_stream(stream: BinaryIO, *, destination: Path, max_bytes: int) -> tuple[int, str]:
    """Copy a stream to ``destination`` chunk by chunk, enforcing the size limit; return (bytes, sha256).

    The partial file is removed when the limit is crossed so nothing is left behind.
    """
    digest = hashlib.sha256()
    size = 0
    try:
        with destination.open("wb") as out:
            while chunk := stream.read(CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise InvalidInputError(f"the file is larger than the upload limit of {format_bytes(max_bytes)}")
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        destination.unlink(missing_ok=True)
        raise
    return size, digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def format_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def is_parquet(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == PARQUET_MAGIC


def detect_encoding(path: Path) -> str:
    """UTF-8 (with or without BOM) when the whole file decodes as such, else Latin-1."""
    with path.open("rb") as handle:
        head = handle.read(SAMPLE_BYTES)
    if not head.strip():
        raise InvalidInputError("the file is empty")
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InvalidInputError("the file is UTF-16 encoded; save it as UTF-8 and upload again")
    if _looks_binary(head):
        raise InvalidInputError("the file looks binary, not like CSV text (it contains NUL or control bytes)")
    has_bom = head.startswith(codecs.BOM_UTF8)
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        if has_bom:
            raise InvalidInputError("the file starts with a UTF-8 byte-order mark but is not valid UTF-8") from None
        return "latin-1"
    return "utf-8-sig" if has_bom else "utf-8"


def _looks_binary(sample: bytes) -> bool:
    if b"\x00" in sample:
        return True
    control = sum(1 for byte in sample if (byte < 32 and byte not in (9, 10, 12, 13)) or byte == 127)
    return control > max(8, len(sample) // 100)


def sniff_dialect(path: Path, *, encoding: str, has_header: bool | None = None) -> CsvDialect:
    with path.open("r", encoding=encoding, newline="") as handle:
        sample = handle.read(SAMPLE_BYTES)
    # Cut at the last line break so the sniffer never sees a half row.
    if len(sample) >= SAMPLE_BYTES and "\n" in sample:
        sample = sample[: sample.rfind("\n") + 1]
    sniffer = csv.Sniffer()
    try:
        dialect = sniffer.sniff(sample, delimiters=CANDIDATE_DELIMITERS)
        # The sniffer takes the apostrophes of ordinary text ("don't") for quotes; CSV quotes with '"'.
        delimiter, quotechar = dialect.delimiter, '"'
    except csv.Error:
        # A single-column file has no delimiter to find.
        delimiter, quotechar = ",", '"'
    if has_header is None:
        has_header = _first_row_is_header(sample, delimiter, quotechar)
    return CsvDialect(encoding=encoding, delimiter=delimiter, quotechar=quotechar, has_header=has_header)


def _looks_numeric(cell: str) -> bool:
    try:
        float(cell.replace(",", ""))
    except ValueError:
        return False
    return True


def _first_row_is_header(sample: str, delimiter: str, quotechar: str) -> bool:
    """A header row is all non-numeric text; csv.Sniffer abstains on all-text files, so we decide.

    A headerless file whose first row is all text is misread as having a header: the page and
    the CLI let the user say otherwise (``--no-header``).
    """
    first = next(csv.reader(io.StringIO(sample), delimiter=delimiter, quotechar=quotechar), [])
    return not any(_looks_numeric(cell.strip()) for cell in first if cell.strip())


def validate_csv_rows(path: Path, dialect: CsvDialect) -> tuple[list[str], int]:
    """One streaming pass: header names and a field count check on every row. Returns (columns, rows)."""
    with path.open("r", encoding=dialect.encoding, newline="") as handle:
        reader = csv.reader(handle, delimiter=dialect.delimiter, quotechar=dialect.quotechar, strict=True)
        try:
            first = next((row for row in reader if row), None)
            if first is None:
                raise InvalidInputError("the file is empty")
            if dialect.has_header:
                columns = [name.strip() for name in first]
                rows = 0
            else:
                columns = [f"column_{index}" for index in range(1, len(first) + 1)]
                rows = 1
            _check_column_names(columns)
            width = len(columns)
            for row in reader:
                if not row:
                    continue
                if len(row) != width:
                    raise InvalidInputError(
                        f"ragged rows: line {reader.line_num} has {len(row)} fields, the header has {width}"
                    )
                rows += 1
        except csv.Error as error:
            raise InvalidInputError(f"the CSV cannot be parsed near line {reader.line_num}: {error}") from None
    if rows == 0:
        raise InvalidInputError("the file has a header but no data rows")
    return columns, rows


def _check_column_names(columns: list[str]) -> None:
    seen: dict[str, int] = {}
    for position, name in enumerate(columns, start=1):
        if not name:
            raise InvalidInputError(f"column {position} has an empty name")
        if name in seen:
            raise InvalidInputError(f"duplicate column name {name!r} (columns {seen[name]} and {position})")
        seen[name] = position


def _transcode_to_utf8(path: Path, encoding: str, destination: Path) -> None:
    with (
        path.open("r", encoding=encoding, newline="") as source,
        destination.open("w", encoding="utf-8", newline="") as out,
    ):
        shutil.copyfileobj(source, out, CHUNK_BYTES)


def read_csv_to_parquet(
    path: Path, *, work_dir: Path, destination: Path, has_header: bool | None = None
) -> IngestResult:
    encoding = detect_encoding(path)
    dialect = sniff_dialect(path, encoding=encoding, has_header=has_header)
    columns, rows = validate_csv_rows(path, dialect)
    readable = path
    transcoded: Path | None = None
    if encoding != "utf-8":
        # polars reads UTF-8 only; BOM and Latin-1 files are rewritten once, streaming.
        transcoded = work_dir / f"{destination.stem}.utf8.csv"
        _transcode_to_utf8(path, encoding, transcoded)
        readable = transcoded
    try:
        _sink_csv(readable, dialect, columns, destination)
    finally:
        if transcoded is not None:
            transcoded.unlink(missing_ok=True)
    return IngestResult(
        parquet_path=destination, source_format="csv", row_count=rows, columns=columns, ingest=dialect.as_dict()
    )


def _sink_csv(path: Path, dialect: CsvDialect, columns: list[str], destination: Path) -> None:
    options = dict(
        separator=dialect.delimiter,
        quote_char=dialect.quotechar,
        has_header=dialect.has_header,
        new_columns=columns,
        try_parse_dates=True,
        decimal_comma=dialect.decimal_comma,
    )
    # polars reads a blank line (a trailing one, say) as a row of nulls; the validation pass skipped
    # those lines, so drop them here too: a row with every cell empty carries no data.
    not_blank = ~pl.all_horizontal(pl.all().is_null())
    try:
        try:
            pl.scan_csv(path, infer_schema_length=INFER_SCHEMA_ROWS, **options).filter(not_blank).sink_parquet(
                destination
            )
        except pl.exceptions.ComputeError:
            # A value far down the file did not fit the sampled type: infer from every row.
            pl.scan_csv(path, infer_schema_length=None, **options).filter(not_blank).sink_parquet(destination)
    except pl.exceptions.PolarsError as error:
        destination.unlink(missing_ok=True)
        raise InvalidInputError(f"the CSV cannot be read: {str(error).splitlines()[0]}") from None


def read_parquet_file(path: Path, *, destination: Path) -> IngestResult:
    try:
        frame = pl.read_parquet(path)
    except Exception as error:
        raise InvalidInputError(f"not a readable Parquet file: {str(error).splitlines()[0]}") from None
    _check_column_names([name.strip() for name in frame.columns])
    if frame.height == 0:
        raise InvalidInputError("the Parquet file has no rows")
    frame.write_parquet(destination)
    return IngestResult(
        parquet_path=destination,
        source_format="parquet",
        row_count=frame.height,
        columns=frame.columns,
        ingest={"format": "parquet"},
    )


def read_tabular_file(path: Path, *, work_dir: Path, destination: Path, has_header: bool | None = None) -> IngestResult:
    """Validate ``path`` (CSV or Parquet, told apart by content) and write it as Parquet to ``destination``."""
    if path.stat().st_size == 0:
        raise InvalidInputError("the file is empty")
    if is_parquet(path):
        return read_parquet_file(path, destination=destination)
    return read_csv_to_parquet(path, work_dir=work_dir, destination=destination, has_header=has_header)
