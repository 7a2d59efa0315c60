"""Human-friendly numbers and sizes for the portal."""

from __future__ import annotations

from datetime import datetime

from backend.datasets.ingest import format_bytes

__all__ = ["format_bytes", "format_number", "format_time"]


def format_number(value: object, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}g}" if abs(value) < 1e15 else f"{value:.3e}"
    return str(value)


def format_time(value: datetime) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M")
