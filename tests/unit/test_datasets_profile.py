"""Profiles and CSV export escaping, checked against values computed independently."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import polars as pl
import pytest

from backend.datasets.profile import HISTOGRAM_BINS, profile_frame
from backend.datasets.service import SchemaDiff, escape_formulas, parse_dataset_ref
from backend.errors import InvalidInputError


@pytest.fixture
def frame() -> pl.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(10, 2, 1000)
    return pl.DataFrame(
        {
            "x": x,
            "double_x": 2 * x,
            "neg_x": -x,
            "with_nulls": [None if i % 4 == 0 else float(i) for i in range(1000)],
            "colour": ["red"] * 600 + ["blue"] * 300 + ["green"] * 100,
            "when": [datetime(2025, 1, 1 + i % 28) for i in range(1000)],
        }
    )


def column(profile: dict, name: str) -> dict:
    return next(c for c in profile["columns"] if c["name"] == name)


def test_numeric_statistics_match_numpy(frame: pl.DataFrame) -> None:
    profile = profile_frame(frame)
    x = frame["x"].to_numpy()
    stats = column(profile, "x")
    assert profile["rows"] == 1000
    assert stats["kind"] == "numeric"
    assert stats["mean"] == pytest.approx(x.mean())
    assert stats["std"] == pytest.approx(x.std(ddof=1))
    assert stats["min"] == pytest.approx(x.min())
    assert stats["max"] == pytest.approx(x.max())
    assert stats["quantiles"]["p50"] == pytest.approx(np.quantile(x, 0.5))
    assert stats["quantiles"]["p95"] == pytest.approx(np.quantile(x, 0.95))
    assert len(stats["histogram"]) == HISTOGRAM_BINS
    assert sum(b["count"] for b in stats["histogram"]) == 1000


def test_nulls_distinct_and_top_values(frame: pl.DataFrame) -> None:
    profile = profile_frame(frame)
    with_nulls = column(profile, "with_nulls")
    assert with_nulls["nulls"] == 250
    assert with_nulls["null_pct"] == pytest.approx(25.0)
    colour = column(profile, "colour")
    assert colour["kind"] == "categorical"
    assert colour["distinct"] == 3
    assert colour["top_values"] == [
        {"value": "red", "count": 600},
        {"value": "blue", "count": 300},
        {"value": "green", "count": 100},
    ]
    when = column(profile, "when")
    assert when["kind"] == "datetime"
    assert when["min"] == "2025-01-01T00:00:00"
    assert when["max"] == "2025-01-28T00:00:00"


def test_correlation_matrix(frame: pl.DataFrame) -> None:
    correlation = profile_frame(frame)["correlation"]
    names = correlation["columns"]
    assert names == ["x", "double_x", "neg_x", "with_nulls"]
    matrix = correlation["matrix"]
    assert matrix[names.index("x")][names.index("double_x")] == pytest.approx(1.0)
    assert matrix[names.index("x")][names.index("neg_x")] == pytest.approx(-1.0)
    assert matrix[names.index("neg_x")][names.index("x")] == pytest.approx(-1.0)


def test_profile_is_json_safe_with_constant_and_infinite_values() -> None:
    profile = profile_frame(pl.DataFrame({"c": [1.0, 1.0, 1.0], "d": [1.0, float("inf"), 2.0]}))
    text = json.dumps(profile, allow_nan=False)
    assert '"matrix"' in text
    assert column(profile, "d")["max"] == 2.0


def test_formula_cells_are_escaped_only_in_text_columns() -> None:
    frame = pl.DataFrame(
        {
            "text": ["=SUM(A1)", "+1", "-cmd", "@x", "\tTAB", "plain", None, "a=b"],
            "number": [-5, 1, 2, 3, 4, 5, 6, 7],
        }
    )
    escaped = escape_formulas(frame)
    assert escaped["text"].to_list() == ["'=SUM(A1)", "'+1", "'-cmd", "'@x", "'\tTAB", "plain", None, "a=b"]
    assert escaped["number"].to_list() == [-5, 1, 2, 3, 4, 5, 6, 7]


def test_dataset_reference_parsing() -> None:
    assert parse_dataset_ref("churn") == ("churn", None)
    assert parse_dataset_ref("churn:3") == ("churn", 3)
    for bad in ("churn:", "churn:0", "churn:x", "churn:-1"):
        with pytest.raises(InvalidInputError, match="invalid version"):
            parse_dataset_ref(bad)


def test_empty_schema_diff() -> None:
    assert SchemaDiff().is_empty
