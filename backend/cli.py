"""The ``sextant`` command line: everything the portal does, scriptable. ``--json`` prints one JSON object."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from backend import datasets
from backend.cli_batch import batch_predict_command, schedules_app
from backend.cli_jobs import jobs_app
from backend.cli_serving import endpoints_app, models_app, predict_command
from backend.cli_training import train_command
from backend.db import migrate, session_scope
from backend.errors import SextantError

app = typer.Typer(help="Sextant: a self-hosted ML platform.", no_args_is_help=True, add_completion=False)
datasets_app = typer.Typer(help="Upload, list and inspect datasets.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
app.add_typer(jobs_app, name="jobs")
app.command("train")(train_command)
app.command("batch-predict")(batch_predict_command)
app.add_typer(schedules_app, name="schedules")
app.add_typer(models_app, name="models")
app.add_typer(endpoints_app, name="endpoints")
app.command("predict")(predict_command)

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object")]


def _emit(payload: dict[str, Any], as_json: bool, text: str) -> None:
    typer.echo(json.dumps(payload, default=str) if as_json else text)


def _fail(error: Exception, as_json: bool = False) -> None:
    if as_json:
        typer.echo(json.dumps({"error": str(error)}))
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=1 if isinstance(error, SextantError) else 2)


@app.command("migrate")
def migrate_command() -> None:
    """Create or upgrade the metadata database."""
    migrate()
    typer.echo("database is up to date")


@app.command("up")
def up_command() -> None:
    """Start every Sextant process (portal, ...) and stop them all on Ctrl-C."""
    from backend.supervisor import run_stack

    sys.exit(run_stack())


@datasets_app.command("upload")
def datasets_upload(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet file")],
    name: Annotated[str, typer.Option("--name", help="dataset name")],
    header: Annotated[
        bool | None, typer.Option("--header/--no-header", help="the first row holds names (default: detect)")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Upload a file as a new version of a dataset (identical content returns the existing version)."""
    try:
        migrate()
        with session_scope() as session:
            info = datasets.create_dataset_version(
                session, name=name, source_path=file, filename=file.name, has_header=header
            )
    except SextantError as error:
        _fail(error, as_json)
    state = "created" if info.created else "unchanged, same content as"
    _emit(
        info.as_dict(),
        as_json,
        f"{state} {info.name}:{info.version} — {info.rows:,} rows × {info.columns} columns",
    )


@datasets_app.command("list")
def datasets_list(
    search: Annotated[str | None, typer.Option("--search", help="filter by name or description")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List datasets with their latest version."""
    migrate()
    with session_scope() as session:
        page = datasets.list_datasets(session, search=search, limit=10_000)
    lines = [f"{'NAME':30} {'VERSION':>7} {'ROWS':>12} {'COLUMNS':>7}  UPDATED"]
    lines += [
        f"{item.name:30} {item.latest_version:>7} {item.rows:>12,} {item.columns:>7}  {item.updated_at:%Y-%m-%d %H:%M}"
        for item in page.items
    ]
    _emit({"datasets": [item.as_dict() for item in page.items], "total": page.total}, as_json, "\n".join(lines))


@datasets_app.command("show")
def datasets_show(
    ref: Annotated[str, typer.Argument(help="NAME or NAME:VERSION")],
    as_json: JsonFlag = False,
) -> None:
    """Show a dataset version: schema, size and the versions list."""
    try:
        name, version = datasets.parse_dataset_ref(ref)
        migrate()
        with session_scope() as session:
            info = datasets.get_dataset_version(session, name=name, version=version)
            versions = datasets.list_dataset_versions(session, name=name)
    except SextantError as error:
        _fail(error, as_json)
    payload = info.as_dict() | {"versions": [v.version for v in versions]}
    text = [
        f"{info.name}:{info.version}  {info.rows:,} rows × {info.columns} columns  sha256 {info.content_hash[:12]}",
        f"source: {info.source_filename} ({info.source_format}, {info.source_bytes:,} bytes)",
        f"versions: {', '.join(str(v.version) for v in versions)}",
        "schema:",
        *(f"  {column.name:30} {column.dtype}" for column in info.schema),
    ]
    _emit(payload, as_json, "\n".join(text))


@datasets_app.command("diff")
def datasets_diff(
    name: Annotated[str, typer.Argument(help="dataset name")],
    from_version: Annotated[int, typer.Argument(help="older version")],
    to_version: Annotated[int, typer.Argument(help="newer version")],
    as_json: JsonFlag = False,
) -> None:
    """Schema differences between two versions."""
    try:
        migrate()
        with session_scope() as session:
            diff = datasets.diff_dataset_schemas(session, name=name, from_version=from_version, to_version=to_version)
    except SextantError as error:
        _fail(error, as_json)
    payload = {
        "added": [vars(c) for c in diff.added],
        "removed": [vars(c) for c in diff.removed],
        "changed": [{"name": n, "from": a, "to": b} for n, a, b in diff.changed],
    }
    lines = [f"+ {c.name} ({c.dtype})" for c in diff.added]
    lines += [f"- {c.name} ({c.dtype})" for c in diff.removed]
    lines += [f"~ {n}: {a} → {b}" for n, a, b in diff.changed]
    _emit(payload, as_json, "\n".join(lines) or "schemas are identical")


@datasets_app.command("download")
def datasets_download(
    ref: Annotated[str, typer.Argument(help="NAME or NAME:VERSION")],
    output: Annotated[Path, typer.Option("--output", "-o", help="file to write")],
    file_format: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
) -> None:
    """Write a dataset version to a file (CSV cells that look like formulas are escaped)."""
    try:
        name, version = datasets.parse_dataset_ref(ref)
        migrate()
        with session_scope() as session:
            content = datasets.export_dataset(session, name=name, version=version, file_format=file_format)
        output.write_bytes(content)
    except SextantError as error:
        _fail(error)
    except OSError as error:
        typer.echo(f"error: cannot write {output}: {error.strerror}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"wrote {len(content):,} bytes to {output}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
