"""Dataset services against a real database (SQLite and PostgreSQL) and the real file store."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend import datasets
from backend.config import get_settings, reset_settings
from backend.errors import InvalidInputError, NotFoundError
from backend.models import Dataset, DatasetVersion


def stored_files(home: Path) -> list[Path]:
    return sorted(p for p in (home / "datasets").rglob("*") if p.is_file()) if (home / "datasets").exists() else []


def tmp_files(home: Path) -> list[Path]:
    return sorted(p for p in (home / "tmp").rglob("*") if p.is_file()) if (home / "tmp").exists() else []


def test_upload_creates_profiled_version(session: Session, example_csv: Path, sextant_home: Path) -> None:
    info = datasets.create_dataset_version(session, name="churn", source_path=example_csv)
    assert (info.name, info.version, info.created) == ("churn", 1, True)
    # Read back from the database (SQLite stores no zone): still an aware UTC time.
    assert datasets.get_dataset_version(session, name="churn").created_at.utcoffset().total_seconds() == 0
    assert info.rows == pl.read_csv(example_csv).height
    assert info.columns == 14
    assert {c.name for c in info.schema} >= {"customer_id", "event_time", "churned"}
    profile = datasets.get_dataset_profile(session, name="churn", version=1)
    churned = next(c for c in profile["columns"] if c["name"] == "churned")
    assert churned["mean"] == pytest.approx(pl.read_csv(example_csv)["churned"].mean())
    assert "churned" in profile["correlation"]["columns"]
    files = stored_files(sextant_home)
    assert len(files) == 1 and files[0].suffix == ".parquet"
    assert pl.read_parquet(files[0]).height == info.rows
    assert tmp_files(sextant_home) == []


def test_identical_content_returns_existing_version(session: Session, example_csv: Path, sextant_home: Path) -> None:
    first = datasets.create_dataset_version(session, name="churn", source_path=example_csv)
    again = datasets.create_dataset_version(session, name="churn", source_path=example_csv)
    assert again.version == first.version
    assert again.content_hash == first.content_hash
    assert again.created is False
    assert len(datasets.list_dataset_versions(session, name="churn")) == 1
    assert len(stored_files(sextant_home)) == 1


def test_new_content_makes_a_new_version_with_schema_diff(session: Session, tmp_path: Path) -> None:
    v1 = tmp_path / "v1.csv"
    v1.write_text("id,amount,region\n1,10,north\n2,20,south\n")
    v2 = tmp_path / "v2.csv"
    v2.write_text("id,amount,score\n1,10.5,0.1\n2,20.25,0.2\n")
    datasets.create_dataset_version(session, name="sales", source_path=v1)
    second = datasets.create_dataset_version(session, name="sales", source_path=v2)
    assert second.version == 2
    assert [v.version for v in datasets.list_dataset_versions(session, name="sales")] == [2, 1]
    assert datasets.get_dataset_version(session, name="sales").version == 2
    assert datasets.get_dataset_version(session, name="sales", version=1).columns == 3
    diff = datasets.diff_dataset_schemas(session, name="sales", from_version=1, to_version=2)
    assert [c.name for c in diff.added] == ["score"]
    assert [c.name for c in diff.removed] == ["region"]
    assert diff.changed == [("amount", "Int64", "Float64")]


BAD_FILES = {
    "empty": (b"", "empty"),
    "binary": (bytes(range(256)) * 4, "binary"),
    "ragged": (b"a,b\n1,2\n3,4,5\n", "ragged rows"),
    "duplicate-columns": (b"a,b,a\n1,2,3\n", "duplicate column name"),
    "empty-column-name": (b"a,,c\n1,2,3\n", "empty name"),
    "header-only": (b"a,b,c\n", "no data rows"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_store_nothing(session: Session, tmp_path: Path, sextant_home: Path, case: str) -> None:
    content, message = BAD_FILES[case]
    path = tmp_path / f"{case}.csv"
    path.write_bytes(content)
    with pytest.raises(InvalidInputError, match=message):
        datasets.create_dataset_version(session, name="bad", source_path=path)
    assert session.scalar(select(func.count()).select_from(Dataset)) == 0
    assert session.scalar(select(func.count()).select_from(DatasetVersion)) == 0
    assert stored_files(sextant_home) == []
    assert tmp_files(sextant_home) == []


def test_failed_upload_keeps_earlier_versions_intact(session: Session, tmp_path: Path, sextant_home: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("a,b\n1,2\n")
    datasets.create_dataset_version(session, name="keep", source_path=good)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3\n")
    with pytest.raises(InvalidInputError):
        datasets.create_dataset_version(session, name="keep", source_path=bad)
    assert [v.version for v in datasets.list_dataset_versions(session, name="keep")] == [1]
    assert len(stored_files(sextant_home)) == 1


@pytest.mark.parametrize("name", ["../escape", "a/b", "bad\x07name", ""])
def test_bad_names_store_nothing(session: Session, example_csv: Path, sextant_home: Path, name: str) -> None:
    with pytest.raises(InvalidInputError, match="dataset name"):
        datasets.create_dataset_version(session, name=name, source_path=example_csv)
    assert session.scalar(select(func.count()).select_from(Dataset)) == 0
    assert stored_files(sextant_home) == []


def test_size_limit(session: Session, example_csv: Path, sextant_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEXTANT_MAX_UPLOAD_BYTES", "1000")
    reset_settings()
    with pytest.raises(InvalidInputError, match="over the upload limit"):
        datasets.create_dataset_version(session, name="big", source_path=example_csv)
    with pytest.raises(InvalidInputError, match="larger than the upload limit"), example_csv.open("rb") as stream:
        datasets.upload_dataset(session, name="big", stream=stream, filename="churn.csv")
    assert session.scalar(select(func.count()).select_from(Dataset)) == 0
    assert stored_files(sextant_home) == [] and tmp_files(sextant_home) == []


def test_upload_stream_is_staged_and_cleaned(session: Session, sextant_home: Path) -> None:
    info = datasets.upload_dataset(session, name="streamed", stream=io.BytesIO(b"x;y\n1;a\n2;b\n"), filename="s.csv")
    assert (info.rows, info.columns, info.ingest["delimiter"]) == (2, 2, ";")
    assert info.source_filename == "s.csv"
    assert tmp_files(sextant_home) == []


def test_list_search_and_pagination(session: Session, tmp_path: Path) -> None:
    for index in range(7):
        path = tmp_path / f"d{index}.csv"
        path.write_text(f"a,b\n{index},x\n")
        datasets.create_dataset_version(session, name=f"{'sales' if index % 2 else 'ops'}-{index}", source_path=path)
    page = datasets.list_datasets(session, offset=0, limit=5)
    assert page.total == 7 and len(page.items) == 5
    rest = datasets.list_datasets(session, offset=5, limit=5)
    assert len(rest.items) == 2
    expected = {f"{'sales' if index % 2 else 'ops'}-{index}" for index in range(7)}
    assert {i.name for i in page.items} | {i.name for i in rest.items} == expected
    sales = datasets.list_datasets(session, search="SALES")
    assert sorted(i.name for i in sales.items) == ["sales-1", "sales-3", "sales-5"]
    assert all(item.latest_version == 1 and item.rows == 1 for item in sales.items)


def test_preview_pages_and_filters(session: Session, example_csv: Path) -> None:
    datasets.create_dataset_version(session, name="churn", source_path=example_csv)
    source = pl.read_csv(example_csv)
    first = datasets.read_dataset_rows(session, name="churn", offset=0, limit=25)
    assert first.total == source.height and first.frame.height == 25
    assert first.frame["customer_id"].to_list() == source["customer_id"].head(25).to_list()
    second = datasets.read_dataset_rows(session, name="churn", offset=25, limit=25)
    assert second.frame["customer_id"].to_list() == source["customer_id"].slice(25, 25).to_list()
    premium = datasets.read_dataset_rows(
        session, name="churn", filters=[datasets.RowFilter("plan", "==", "premium")], limit=10
    )
    assert premium.total == source.filter(pl.col("plan") == "premium").height
    assert set(premium.frame["plan"]) == {"premium"}
    many_calls = datasets.read_dataset_rows(
        session,
        name="churn",
        filters=[datasets.RowFilter("support_calls", ">=", "3"), datasets.RowFilter("region", "contains", "orth")],
    )
    assert many_calls.total == source.filter((pl.col("support_calls") >= 3) & (pl.col("region") == "north")).height
    with pytest.raises(InvalidInputError, match="not a valid"):
        datasets.read_dataset_rows(session, name="churn", filters=[datasets.RowFilter("support_calls", ">", "many")])
    with pytest.raises(InvalidInputError, match="unknown column"):
        datasets.read_dataset_rows(session, name="churn", filters=[datasets.RowFilter("nope", "==", "1")])


def test_exports_escape_formulas_and_round_trip(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("name,formula,amount\nAnn,=1+2,-3\nBob,@SUM(A1),4\n")
    datasets.create_dataset_version(session, name="formulas", source_path=path)
    csv_text = datasets.export_dataset(session, name="formulas", file_format="csv").decode()
    assert csv_text.splitlines() == ["name,formula,amount", "Ann,'=1+2,-3", "Bob,'@SUM(A1),4"]
    parquet = datasets.export_dataset(session, name="formulas", file_format="parquet")
    assert pl.read_parquet(io.BytesIO(parquet))["formula"].to_list() == ["=1+2", "@SUM(A1)"]
    with pytest.raises(InvalidInputError, match="unknown format"):
        datasets.export_dataset(session, name="formulas", file_format="xlsx")  # type: ignore[arg-type]


def test_unknown_names_and_versions(session: Session, example_csv: Path) -> None:
    with pytest.raises(NotFoundError, match="'nope' does not exist"):
        datasets.get_dataset_version(session, name="nope")
    datasets.create_dataset_version(session, name="churn", source_path=example_csv)
    with pytest.raises(NotFoundError, match="no version 9"):
        datasets.get_dataset_version(session, name="churn", version=9)


def test_example_data_loader(session: Session) -> None:
    info = datasets.load_example_data(session)
    assert info.name == datasets.EXAMPLE_DATASET_NAME
    assert info.rows >= 10_000
    assert get_settings().datasets_dir.joinpath("churn").is_dir()


def test_header_override_rereads_the_same_file_as_a_new_version(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "colors.csv"
    path.write_text("red,blue\ngreen,yellow\n")
    guessed = datasets.create_dataset_version(session, name="colors", source_path=path)
    assert (guessed.version, guessed.rows) == (1, 1)
    corrected = datasets.create_dataset_version(session, name="colors", source_path=path, has_header=False)
    assert (corrected.version, corrected.rows, corrected.created) == (2, 2, True)
    assert corrected.content_hash == guessed.content_hash
    again = datasets.create_dataset_version(session, name="colors", source_path=path, has_header=False)
    assert (again.version, again.created) == (2, False)
    assert datasets.create_dataset_version(session, name="colors", source_path=path).version == 1
