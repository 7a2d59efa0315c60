"""Batch requests without a model server: references, output paths, ids, progress lines, output chunks, writers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from backend.batch import RowProgress, build_batch_spec, format_row_progress, parse_row_progress
from backend.batch.files import ChunkWriter, job_id_of, new_token, output_chunk, output_temp_path
from backend.batch.runner import private_model_name
from backend.batch.spec import (
    InputRef,
    ModelRef,
    check_output_path,
    default_output_dataset,
    detect_id_columns,
    output_format_for,
    parse_batch_spec,
    parse_input_ref,
    parse_model_ref,
    render_output_path,
)
from backend.errors import InvalidInputError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("churn-churned@champion", ModelRef("churn-churned", alias="champion")),
        ("churn-churned/3", ModelRef("churn-churned", version=3)),
        ("models:/churn-churned@challenger", ModelRef("churn-churned", alias="challenger")),
        ("models:/team/churn/2", ModelRef("team/churn", version=2)),
    ],
)
def test_model_references(text: str, expected: ModelRef) -> None:
    assert parse_model_ref(text) == expected


@pytest.mark.parametrize("text", ["churn-churned", "churn-churned/0", "churn-churned/x", "@champion", "m@", ""])
def test_bad_model_references_say_the_expected_form(text: str) -> None:
    with pytest.raises(InvalidInputError, match="MODEL@ALIAS or MODEL/VERSION"):
        parse_model_ref(text)


def test_input_references() -> None:
    assert parse_input_ref("dataset:churn") == InputRef(dataset="churn")
    assert parse_input_ref("dataset:churn:4") == InputRef(dataset="churn", version=4)
    assert parse_input_ref("/data/x.csv") == InputRef(path=Path("/data/x.csv"))
    assert parse_input_ref("file:///data/x.parquet") == InputRef(path=Path("/data/x.parquet"))
    with pytest.raises(InvalidInputError, match="positive integer"):
        parse_input_ref("dataset:churn:v2")
    with pytest.raises(InvalidInputError, match="dataset name"):
        parse_input_ref("dataset:../etc")
    with pytest.raises(InvalidInputError, match="the input is empty"):
        parse_input_ref("  ")


def test_output_format_follows_the_request_then_the_suffix() -> None:
    assert output_format_for("/x/out.csv", None) == "csv"
    assert output_format_for("/x/out.parquet", None) == "parquet"
    assert output_format_for(None, None) == "parquet"
    assert output_format_for("/x/out.csv", "parquet") == "parquet"
    with pytest.raises(InvalidInputError, match="parquet or csv"):
        output_format_for(None, "xlsx")


def test_output_path_templates(tmp_path: Path) -> None:
    moment = datetime(2026, 3, 1, 2, 0, 5, tzinfo=UTC)
    path = render_output_path(str(tmp_path / "scores-{date}-{time}-{job_id}.csv"), job_id=12, moment=moment)
    assert path == tmp_path / "scores-2026-03-01-020005-12.csv"
    with pytest.raises(InvalidInputError, match="unknown placeholder"):
        build_batch_spec(model="m/1", input="dataset:d", output_path=str(tmp_path / "{user}.csv"))
    with pytest.raises(InvalidInputError, match="not a valid template"):
        build_batch_spec(model="m/1", input="dataset:d", output_path=str(tmp_path / "{date.csv"))


def test_unwritable_output_paths_are_refused_with_the_reason(tmp_path: Path) -> None:
    assert check_output_path(tmp_path / "out.parquet") == tmp_path / "out.parquet"
    assert not list(tmp_path.iterdir()), "the write check leaves nothing behind"
    with pytest.raises(InvalidInputError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "out.parquet")
    with pytest.raises(InvalidInputError, match="is a folder"):
        check_output_path(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(InvalidInputError, match="is not a folder"):
        check_output_path(afile / "out.parquet")
    with pytest.raises(InvalidInputError, match="not writable"):
        check_output_path(Path("/proc/sextant-out.parquet"))


def test_spec_defaults_and_refusals() -> None:
    spec = build_batch_spec(model="churn-churned@champion", input="dataset:churn", output_path="/tmp/o.csv")
    assert spec.output_dataset == "churn-predictions" and spec.output_format == "csv" and spec.columns == "ids"
    assert build_batch_spec(model="m/1", input="/data/My File.csv").output_dataset == "My-File-predictions"
    assert default_output_dataset(InputRef(dataset="churn")) == "churn-predictions"
    with pytest.raises(InvalidInputError, match="dataset name"):
        build_batch_spec(model="m/1", input="dataset:d", output_dataset="bad/name")
    with pytest.raises(InvalidInputError, match="MODEL@ALIAS"):
        build_batch_spec(model="m", input="dataset:d")
    with pytest.raises(InvalidInputError, match="invalid batch prediction request: columns"):
        parse_batch_spec({"model": "m/1", "input": "dataset:d", "output_dataset": "o", "columns": "some"})
    with pytest.raises(InvalidInputError, match="surprise"):
        parse_batch_spec({"model": "m/1", "input": "dataset:d", "output_dataset": "o", "surprise": 1})


def test_id_columns_are_found_by_name() -> None:
    columns = ["customer_id", "orderId", "ID", "uuid", "paid", "video", "tenure", "user-id", "Identity"]
    assert detect_id_columns(columns) == ["customer_id", "orderId", "ID", "uuid", "user-id"]


def test_progress_line_round_trip() -> None:
    progress = RowProgress(rows_done=131_072, rows_total=1_000_000, rows_per_second=247_681.9)
    text = format_row_progress(progress)
    assert text == "131,072 of 1,000,000 rows · 247,682 rows/s"
    assert parse_row_progress(text + " · publishing") == RowProgress(131_072, 1_000_000, 247_682.0)
    assert parse_row_progress("loading the model") is None
    assert RowProgress(5, 0, 1.0).fraction == 0.0


def test_output_chunk_layout() -> None:
    kept = pl.DataFrame({"customer_id": ["a", "b", "c"]})
    predictions = {
        "prediction": np.array(["basic", "premium", "basic"], dtype=object),
        "probabilities": np.array([[0.7, 0.3], [0.1, 0.9], [0.6, 0.4]], dtype=np.float32),
    }
    frame = output_chunk(kept, predictions, classes=["basic", "premium"], row_offset=None)
    assert frame.columns == ["customer_id", "prediction", "probability_basic", "probability_premium"]
    assert frame["prediction"].dtype == pl.String and frame["probability_premium"].dtype == pl.Float64
    numbered = output_chunk(
        pl.DataFrame(), {"prediction": np.array([1.5, 2.5])}, classes=None, row_offset=10
    )  # regression, no id column
    assert numbered.to_dict(as_series=False) == {"row_number": [10, 11], "prediction": [1.5, 2.5]}


@pytest.mark.parametrize("file_format", ["parquet", "csv"])
def test_chunk_writer_appends_chunks(tmp_path: Path, file_format: str) -> None:
    path = tmp_path / f"out.{file_format}"
    writer = ChunkWriter(path, file_format)  # type: ignore[arg-type]
    writer.write(pl.DataFrame({"id": ["a", "b"], "prediction": [0, 1]}))
    writer.write(pl.DataFrame({"id": ["c"], "prediction": [1]}))
    writer.close()
    read = pl.read_parquet(path) if file_format == "parquet" else pl.read_csv(path)
    assert read.to_dict(as_series=False) == {"id": ["a", "b", "c"], "prediction": [0, 1, 1]}
    assert writer.rows == 3
    writer.discard()
    assert not path.exists()


def test_temporary_and_private_names_carry_the_job_id(tmp_path: Path) -> None:
    token = new_token(42)
    assert job_id_of(output_temp_path(tmp_path / "out.csv", token).name) == 42
    assert output_temp_path(tmp_path / "out.csv", token).name.startswith(".out.csv.batch-42-")
    name = private_model_name(token, "churn-churned")
    assert name.startswith("batch-42-") and name.endswith("-churn-churned") and job_id_of(name) == 42
    assert job_id_of(private_model_name(new_token(None), "m")) is None
    assert len(private_model_name(token, "x" * 300)) <= 200
