"""File-level ingest logic: names, encodings, dialects, validation, conversion."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
import pytest

from backend.datasets.ingest import (
    detect_encoding,
    read_tabular_file,
    sniff_dialect,
    stage_stream,
    validate_csv_rows,
    validate_dataset_name,
)
from backend.errors import InvalidInputError


def write(tmp_path: Path, content: bytes, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def ingest(tmp_path: Path, content: bytes, **kwargs: object) -> pl.DataFrame:
    destination = tmp_path / "out.parquet"
    read_tabular_file(write(tmp_path, content), work_dir=tmp_path, destination=destination, **kwargs)
    return pl.read_parquet(destination)


@pytest.mark.parametrize("name", ["churn", "sales-2026.v2", "A_b", "x" * 100])
def test_valid_dataset_names_are_accepted(name: str) -> None:
    assert validate_dataset_name(name) == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a/b", "path separator"),
        ("..\\evil", "path separator"),
        ("bad\x00name", "control characters"),
        ("tab\tname", "control characters"),
        ("..", "invalid"),
        ("-leading-dash", "invalid"),
        ("x" * 101, "invalid"),
        ("with space", "invalid"),
        ("name:3", "invalid"),
    ],
)
def test_invalid_dataset_names_are_refused(name: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        validate_dataset_name(name)


def test_encoding_detection(tmp_path: Path) -> None:
    assert detect_encoding(write(tmp_path, "a,b\n1,é\n".encode())) == "utf-8"
    assert detect_encoding(write(tmp_path, b"\xef\xbb\xbfa,b\n1,2\n")) == "utf-8-sig"
    assert detect_encoding(write(tmp_path, "a,b\n1,café\n".encode("latin-1"))) == "latin-1"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"  \n\n", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "binary"),
        ("a,b\n1,2\n".encode("utf-16"), "UTF-16"),
    ],
)
def test_unreadable_files_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        read_tabular_file(write(tmp_path, content), work_dir=tmp_path, destination=tmp_path / "o.parquet")
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.parametrize(("delimiter"), [",", ";", "\t", "|"])
def test_delimiter_is_detected(tmp_path: Path, delimiter: str) -> None:
    rows = ["name,amount,city", 'Ann,"1,5",Oslo', "Bob,2,Rome", "Cy,3,Lima"]
    text = "\n".join(row.replace(",", delimiter) if delimiter != "," else row for row in rows) + "\n"
    if delimiter != ",":
        text = text.replace(f'"1{delimiter}5"', "1.5")
    dialect = sniff_dialect(write(tmp_path, text.encode()), encoding="utf-8")
    assert dialect.delimiter == delimiter


def test_quoted_fields_keep_delimiters_and_newlines(tmp_path: Path) -> None:
    frame = ingest(tmp_path, b'id,comment\n1,"hello, world"\n2,"two\nlines"\n3,"say ""hi"""\n')
    assert frame["comment"].to_list() == ["hello, world", "two\nlines", 'say "hi"']


def test_header_is_detected_or_absent(tmp_path: Path) -> None:
    with_header = ingest(tmp_path, b"age,income\n31,1000.5\n45,2000.25\n52,1500.0\n")
    assert with_header.columns == ["age", "income"]
    without = ingest(tmp_path, b"31,1000.5\n45,2000.25\n52,1500.0\n")
    assert without.columns == ["column_1", "column_2"]
    assert without.height == 3
    forced = ingest(tmp_path, b"31,1000.5\n45,2000.25\n", has_header=True)
    assert forced.columns == ["31", "1000.5"]


def test_bom_is_not_part_of_the_first_column_name(tmp_path: Path) -> None:
    frame = ingest(tmp_path, b"\xef\xbb\xbfid,value\n1,2\n3,4\n")
    assert frame.columns == ["id", "value"]
    assert frame["value"].to_list() == [2, 4]


def test_latin1_text_is_decoded(tmp_path: Path) -> None:
    frame = ingest(tmp_path, "city,n\nMünchen,1\nSão Paulo,2\n".encode("latin-1"))
    assert frame["city"].to_list() == ["München", "São Paulo"]


def test_types_are_inferred(tmp_path: Path) -> None:
    frame = ingest(tmp_path, b"i,f,s,t,b\n1,1.5,x,2025-01-02T03:04:05,true\n2,,y,2025-02-03T00:00:00,false\n")
    assert frame.schema["i"] == pl.Int64
    assert frame.schema["f"] == pl.Float64
    assert frame.schema["s"] == pl.String
    assert frame.schema["t"].is_temporal()
    assert frame.schema["b"] == pl.Boolean
    assert frame["f"].null_count() == 1


def test_late_type_surprise_falls_back_to_full_inference(tmp_path: Path) -> None:
    rows = "\n".join(str(i) for i in range(12_000))
    frame = ingest(tmp_path, f"v\n{rows}\nnot-a-number\n".encode())
    assert frame.schema["v"] == pl.String
    assert frame.height == 12_001


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"a,b\n1,2\n3\n", "ragged rows: line 3 has 1 fields"),
        (b"a,b\n1,2\n3,4,5\n", "ragged rows: line 3 has 3 fields"),
        (b"a,a\n1,2\n", "duplicate column name 'a'"),
        (b"a,,c\n1,2,3\n", "column 2 has an empty name"),
        (b"a,b,c\n", "header but no data rows"),
    ],
)
def test_structural_problems_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = write(tmp_path, content)
    dialect = sniff_dialect(path, encoding="utf-8", has_header=True)
    with pytest.raises(InvalidInputError, match=message):
        validate_csv_rows(path, dialect)


def test_formula_like_cells_are_kept_as_data(tmp_path: Path) -> None:
    frame = ingest(tmp_path, b"name,note\nAnn,=SUM(A1:A2)\nBob,@cmd\nCy,+1\n")
    assert frame["note"].to_list() == ["=SUM(A1:A2)", "@cmd", "+1"]


def test_parquet_is_recognised_by_content(tmp_path: Path) -> None:
    source = tmp_path / "upload.bin"
    pl.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]}).write_parquet(source)
    result = read_tabular_file(source, work_dir=tmp_path, destination=tmp_path / "out.parquet")
    assert result.source_format == "parquet"
    assert result.row_count == 3
    assert pl.read_parquet(tmp_path / "out.parquet")["y"].to_list() == ["a", "b", "c"]


def test_empty_parquet_and_broken_parquet_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.parquet"
    pl.DataFrame({"x": []}, schema={"x": pl.Int64}).write_parquet(empty)
    with pytest.raises(InvalidInputError, match="no rows"):
        read_tabular_file(empty, work_dir=tmp_path, destination=tmp_path / "o.parquet")
    broken = write(tmp_path, b"PAR1" + b"garbage" * 10, "broken.parquet")
    with pytest.raises(InvalidInputError, match="not a readable Parquet file"):
        read_tabular_file(broken, work_dir=tmp_path, destination=tmp_path / "o.parquet")


def test_staging_enforces_the_size_limit_and_leaves_nothing(tmp_path: Path) -> None:
    destination = tmp_path / "staged"
    size, digest = stage_stream(io.BytesIO(b"a" * 100), destination=destination, max_bytes=100)
    assert size == 100 and len(digest) == 64
    with pytest.raises(InvalidInputError, match="larger than the upload limit"):
        stage_stream(io.BytesIO(b"a" * 101), destination=tmp_path / "too-big", max_bytes=100)
    assert not (tmp_path / "too-big").exists()


def test_blank_lines_are_not_rows(tmp_path: Path) -> None:
    frame = ingest(tmp_path, b"x,y\n1,2\n3,4\n\n")
    assert frame.rows() == [(1, 2), (3, 4)]
    one_column = ingest(tmp_path, b"v\n1\n\n2\n3\n")
    assert one_column["v"].to_list() == [1, 2, 3]


def test_apostrophes_in_text_are_not_quotes(tmp_path: Path) -> None:
    frame = ingest(tmp_path, b"name,comment\nann,it's fine\nbob,don't\nco,'quoted'\n")
    assert frame["comment"].to_list() == ["it's fine", "don't", "'quoted'"]


def test_semicolon_files_read_decimal_commas(tmp_path: Path) -> None:
    frame = ingest(tmp_path, b"a;b;c\n1,5;2,25;x\n3,0;4,5;y\n")
    assert frame.schema["a"] == pl.Float64
    assert frame["b"].to_list() == [2.25, 4.5]
    assert frame["c"].to_list() == ["x", "y"]
