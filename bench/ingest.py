"""ingest: upload + profile of a 1,000,000-row, 20-column CSV vs pandas ``read_csv`` + ``describe``.

Sextant's side is ``backend.datasets.create_dataset_version`` (validate, type inference, Parquet
version, stored profile with quantiles, histograms, top values and correlations) in a fresh
SEXTANT_HOME. The baseline is what an analyst types in a notebook: ``pd.read_csv(path)`` and
``describe(include="all")`` (numeric and text columns, like Sextant's profile). Each side runs in
its own process, 3 times, in turn (S P S P S P); seconds are the operation alone (median of the
runs), peak memory is the whole process's (highest of the runs).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    BenchError,
    Measured,
    Result,
    Size,
    alternate,
    median_of,
    mib,
    peak_of,
    pick,
    run_measured,
    sextant_env,
    stage,
)
from bench.data import mixed_frame, write_csv


def sextant_ingest(csv: str, home: str, phases: bool = False) -> dict[str, Any]:
    from backend.datasets import create_dataset_version
    from backend.db import migrate, session_scope

    migrate()
    start = time.perf_counter()
    with session_scope() as session:
        info = create_dataset_version(session, name="bench", source_path=Path(csv))
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rows": info.rows,
        "columns": info.columns,
        "phases": ingest_phases(Path(csv)) if phases else None,
    }


def ingest_phases(csv: Path) -> dict[str, float]:
    """The steps of ``create_dataset_version`` timed one by one (run again after the measured upload)."""
    import tempfile

    import polars as pl

    from backend.datasets.ingest import file_sha256, read_tabular_file
    from backend.datasets.profile import profile_frame

    phases = {}
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        file_sha256(csv)
        phases["hash_s"] = time.perf_counter() - start
        start = time.perf_counter()
        parquet = Path(folder) / "staged.parquet"
        read_tabular_file(csv, work_dir=Path(folder), destination=parquet)
        phases["read_to_parquet_s"] = time.perf_counter() - start
        start = time.perf_counter()
        profile_frame(pl.read_parquet(parquet))
        phases["profile_s"] = time.perf_counter() - start
    return {key: round(value, 3) for key, value in phases.items()}


def pandas_ingest(csv: str) -> dict[str, Any]:
    import pandas as pd

    start = time.perf_counter()
    frame = pd.read_csv(csv)
    summary = frame.describe(include="all")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": len(frame), "columns": summary.shape[1]}


def run(size: Size) -> list[Result]:
    rows = pick(size, full=1_000_000, smoke=2_000)
    repeat = pick(size, full=3, smoke=1)
    with tempfile.TemporaryDirectory(prefix="sextant-bench-ingest-") as folder:
        csv = write_csv(mixed_frame(rows), Path(folder) / "upload.csv")
        file_mib = mib(csv.stat().st_size)
        homes = iter(range(repeat))

        def sextant_side() -> Measured:
            index = next(homes)
            home = Path(folder) / f"home-{index}"
            # The last run also times create_dataset_version's steps one by one, after its measured upload.
            kwargs = {"csv": str(csv), "home": str(home), "phases": index == repeat - 1}
            return run_measured("bench.ingest:sextant_ingest", kwargs, env=sextant_env(home), timeout_s=300)

        def pandas_side() -> Measured:
            return run_measured("bench.ingest:pandas_ingest", {"csv": str(csv)}, timeout_s=300)

        with stage(f"upload + profile vs read_csv + describe, {repeat}× each"):
            runs = alternate({"sextant": sextant_side, "pandas": pandas_side}, repeat=repeat)
    for side in (*runs["sextant"], *runs["pandas"]):
        if side.output["rows"] != rows:
            raise BenchError(f"ingest read {side.output['rows']} rows, expected {rows}")
    sextant, pandas = runs["sextant"], runs["pandas"]
    extra = {"rows": rows, "columns": sextant[0].output["columns"], "file_mib": round(file_mib, 1), "runs": repeat}
    return [
        Result(
            "ingest.seconds", "s", median_of(sextant), "pandas read_csv+describe", median_of(pandas), "lower",
            {**extra, "sextant_phases": sextant[-1].output["phases"]},
        ),
        Result(
            "ingest.peak_memory", "MiB", mib(peak_of(sextant)), "pandas read_csv+describe", mib(peak_of(pandas)),
            "lower", extra,
        ),
    ]  # fmt: skip
