"""The progress line a batch job writes through ``ctx.progress`` and the page and the CLI read back."""

from __future__ import annotations

import re
from dataclasses import dataclass

_PATTERN = re.compile(r"^(?P<done>[\d,]+) of (?P<total>[\d,]+) rows · (?P<rate>[\d,]+) rows/s")


@dataclass(frozen=True)
class RowProgress:
    rows_done: int
    rows_total: int
    rows_per_second: float

    @property
    def fraction(self) -> float:
        return min(1.0, self.rows_done / self.rows_total) if self.rows_total else 0.0


def format_row_progress(progress: RowProgress) -> str:
    return f"{progress.rows_done:,} of {progress.rows_total:,} rows · {progress.rows_per_second:,.0f} rows/s"


def parse_row_progress(message: str) -> RowProgress | None:
    match = _PATTERN.match(message or "")
    if match is None:
        return None
    return RowProgress(
        rows_done=int(match["done"].replace(",", "")),
        rows_total=int(match["total"].replace(",", "")),
        rows_per_second=float(match["rate"].replace(",", "")),
    )
