"""The profile of a dataset version, computed once at ingest and stored as JSON."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

HISTOGRAM_BINS = 20
TOP_VALUES = 10
# A correlation heatmap over more columns than this is unreadable; keep the first ones.
MAX_CORRELATION_COLUMNS = 30
QUANTILES = {"p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95}


def column_kind(dtype: pl.DataType) -> str:
    if dtype == pl.Boolean:
        return "boolean"
    if dtype.is_numeric():
        return "numeric"
    if dtype.is_temporal():
        return "datetime"
    return "categorical"


def _clean(value: Any) -> Any:
    """JSON-safe scalars: no NaN/inf, temporal values as ISO strings."""
    if value is None:
        return None
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, (int, str, bool)):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def profile_frame(frame: pl.DataFrame) -> dict[str, Any]:
    rows = frame.height
    columns = [_profile_column(frame.get_column(name), rows) for name in frame.columns]
    return {"rows": rows, "columns": columns, "correlation": _correlation(frame)}


def _profile_column(series: pl.Series, rows: int) -> dict[str, Any]:
    kind = column_kind(series.dtype)
    nulls = series.null_count()
    profile: dict[str, Any] = {
        "name": series.name,
        "dtype": str(series.dtype),
        "kind": kind,
        "nulls": nulls,
        "null_pct": round(100.0 * nulls / rows, 4) if rows else 0.0,
        "distinct": series.n_unique(),
    }
    values = series.drop_nulls()
    if kind == "numeric":
        floats = values.cast(pl.Float64)
        finite = floats.filter(floats.is_finite())
        profile.update(
            min=_clean(finite.min()),
            max=_clean(finite.max()),
            mean=_clean(finite.mean()),
            std=_clean(finite.std()),
            quantiles={key: _clean(finite.quantile(q, interpolation="linear")) for key, q in QUANTILES.items()},
            histogram=_histogram(finite.to_numpy()),
        )
    elif kind == "datetime":
        profile.update(min=_clean(values.min()), max=_clean(values.max()))
    if kind != "numeric" or profile["distinct"] <= TOP_VALUES:
        counts = values.value_counts(sort=True).head(TOP_VALUES)
        profile["top_values"] = [{"value": _clean(row[0]), "count": int(row[1])} for row in counts.iter_rows()]
    return profile


def _histogram(values: np.ndarray) -> list[dict[str, float]]:
    if values.size == 0:
        return []
    counts, edges = np.histogram(values, bins=HISTOGRAM_BINS)
    return [{"start": float(edges[i]), "end": float(edges[i + 1]), "count": int(counts[i])} for i in range(len(counts))]


def _correlation(frame: pl.DataFrame) -> dict[str, Any]:
    names = [name for name, dtype in frame.schema.items() if column_kind(dtype) == "numeric"]
    names = names[:MAX_CORRELATION_COLUMNS]
    if len(names) < 2:
        return {"columns": names, "matrix": []}
    numeric = frame.select(pl.col(name).cast(pl.Float64) for name in names)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    # One query computes every pair; pl.corr drops nulls pairwise.
    row = numeric.select(pl.corr(a, b).alias(f"{i}") for i, (a, b) in enumerate(pairs)).row(0)
    matrix = [[1.0 if a == b else None for b in names] for a in names]
    index = {name: i for i, name in enumerate(names)}
    for (a, b), value in zip(pairs, row, strict=True):
        matrix[index[a]][index[b]] = matrix[index[b]][index[a]] = _clean(value)
    return {"columns": names, "matrix": matrix}
