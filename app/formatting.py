"""Human-friendly numbers and sizes for the portal."""

from __future__ import annotations

from datetime import datetime

from backend.datasets.ingest import format_bytes

__all__ = ["format_bytes", "format_dtype", "format_duration", "format_number", "format_time"]


def format_number(value: object, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}g}" if abs(value) < 1e15 else f"{value:.3e}"
    text = str(value)
    # Profiles store datetimes as ISO strings; a space reads better than the "T".
    if len(text) >= 19 and text[4] == "-" and text[10] == "T":
        return text.replace("T", " ", 1)
    return text


def format_time(value: datetime) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M")


def format_dtype(dtype: str) -> str:
    """Polars' dtype names, shortened for tables: ``Datetime(time_unit='us', time_zone=None)`` → ``datetime``."""
    base = dtype.split("(", 1)[0]
    return {"String": "text", "Boolean": "bool"}.get(base, base.lower())


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
