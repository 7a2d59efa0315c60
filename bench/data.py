"""Seeded synthetic data: a mixed-type table for ingest and a 20-feature binary task for models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from bench.common import SEED

FEATURES = 20
FEATURE_NAMES = [f"f{index:02d}" for index in range(FEATURES)]
TARGET = "label"


def mixed_frame(rows: int, *, seed: int = SEED) -> pl.DataFrame:
    """20 columns as analysts upload them: an id, floats (some missing), integers, categories, a flag."""
    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {"id": np.arange(1, rows + 1, dtype=np.int64)}
    for index in range(12):
        values = np.round(rng.normal(loc=index, scale=1 + index / 4, size=rows), 4)
        if index % 4 == 0:
            values[rng.random(rows) < 0.01] = np.nan
        columns[f"x{index:02d}"] = values
    for index in range(4):
        columns[f"n{index}"] = rng.integers(0, 10 ** (index + 1), size=rows)
    columns["segment"] = np.array(["retail", "smb", "enterprise", "public", "edu", "ngo", "health", "other"])[
        rng.integers(0, 8, size=rows)
    ]
    columns["region"] = np.array([f"region-{index:02d}" for index in range(50)])[rng.integers(0, 50, size=rows)]
    columns["active"] = rng.random(rows) < 0.7
    frame = pl.DataFrame(columns)
    # NaN in the generator means a missing cell in the file.
    return frame.with_columns(pl.col(name).fill_nan(None) for name in frame.columns if name.startswith("x"))


def feature_frame(rows: int, *, seed: int = SEED, target: bool = True) -> pl.DataFrame:
    """f00..f19 (floats) and, with ``target``, a binary ``label`` that depends on them non-linearly."""
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=(rows, FEATURES)), 4)
    frame = pl.DataFrame({name: x[:, index] for index, name in enumerate(FEATURE_NAMES)})
    if target:
        weights = np.random.default_rng(seed + 1).normal(size=FEATURES)
        logit = x @ weights / 3 + np.sin(x[:, 0] * 2) + x[:, 1] * x[:, 2] - np.abs(x[:, 3])
        label = rng.random(rows) < 1 / (1 + np.exp(-logit))
        frame = frame.with_columns(pl.Series(TARGET, label.astype(np.int64)))
    return frame


def write_csv(frame: pl.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(path)
    return path
