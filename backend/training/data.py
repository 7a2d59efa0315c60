"""Load a planned dataset version, split it with the seed, fit the preprocessing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from sklearn.model_selection import train_test_split

from backend.errors import InvalidInputError
from backend.training.plan import (
    MIN_EVALUATION_ROWS,
    MIN_TRAIN_ROWS,
    TrainingPlan,
    split_sizes,
)
from backend.training.tabular_model import TabularPreprocessor

INPUT_EXAMPLE_ROWS = 5


@dataclass
class PreparedData:
    """The split, raw (feature columns as a pandas DataFrame) and preprocessed (float32 matrices)."""

    frame: pl.DataFrame
    classes: list[Any] | None
    preprocessor: TabularPreprocessor
    raw_train: pd.DataFrame
    raw_validation: pd.DataFrame
    raw_test: pd.DataFrame
    x_train: np.ndarray
    x_validation: np.ndarray
    x_test: np.ndarray
    # Class indices into ``classes`` (classification) or the target values (regression).
    y_train: np.ndarray
    y_validation: np.ndarray
    y_test: np.ndarray

    @property
    def input_example(self) -> pd.DataFrame:
        return self.raw_train.head(INPUT_EXAMPLE_ROWS).reset_index(drop=True)


def load_frame(plan: TrainingPlan) -> pl.DataFrame:
    """The planned columns of rows that have a target value."""
    frame = pl.read_parquet(plan.data_path, columns=[*plan.feature_names, plan.target])
    present = pl.col(plan.target).is_not_null()
    if frame.schema[plan.target].is_float():
        present &= pl.col(plan.target).is_not_nan()
    return frame.filter(present)


def _python_value(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def split_indices(
    rows: int, labels: np.ndarray | None, *, validation_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded (train, validation, test) row indices, stratified by class where every class allows it."""
    _, validation_rows, test_rows = split_sizes(
        rows, validation_fraction=validation_fraction, test_fraction=test_fraction
    )
    indices = np.arange(rows)
    rest, test = _split(indices, labels, test_rows, seed)
    train, validation = _split(rest, None if labels is None else labels[rest], validation_rows, seed)
    return np.sort(train), np.sort(validation), np.sort(test)


def _split(indices: np.ndarray, labels: np.ndarray | None, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if labels is not None:
        try:
            return train_test_split(indices, test_size=size, random_state=seed, stratify=labels)
        except ValueError:
            # A class too rare to appear in every part: fall back to a plain random split.
            pass
    return train_test_split(indices, test_size=size, random_state=seed)


def prepare_data(plan: TrainingPlan, frame: pl.DataFrame | None = None) -> PreparedData:
    frame = load_frame(plan) if frame is None else frame
    sizes = split_sizes(
        frame.height, validation_fraction=plan.spec.validation_fraction, test_fraction=plan.spec.test_fraction
    )
    if sizes[0] < MIN_TRAIN_ROWS or min(sizes[1:]) < MIN_EVALUATION_ROWS:
        raise InvalidInputError(f"too few rows with a usable {plan.target!r} value for the split: {frame.height}")
    raw = frame.select(plan.feature_names).to_pandas()
    target = frame.get_column(plan.target)
    classes: list[Any] | None = None
    if plan.task == "regression":
        y = target.cast(pl.Float64).to_numpy()
        labels = None
    else:
        classes = [_python_value(value) for value in target.unique().sort().to_list()]
        y = pd.Categorical(target.to_numpy(), categories=classes).codes.astype(np.int64)
        labels = y
    train, validation, test = split_indices(
        frame.height,
        labels,
        validation_fraction=plan.spec.validation_fraction,
        test_fraction=plan.spec.test_fraction,
        seed=plan.spec.seed,
    )
    raw_train, raw_validation, raw_test = (raw.iloc[part].reset_index(drop=True) for part in (train, validation, test))
    preprocessor = TabularPreprocessor.fit(
        raw_train,
        numeric=[f.name for f in plan.features if f.kind != "categorical"],
        categorical=[f.name for f in plan.features if f.kind == "categorical"],
    )
    return PreparedData(
        frame=frame,
        classes=classes,
        preprocessor=preprocessor,
        raw_train=raw_train,
        raw_validation=raw_validation,
        raw_test=raw_test,
        x_train=preprocessor.transform(raw_train),
        x_validation=preprocessor.transform(raw_validation),
        x_test=preprocessor.transform(raw_test),
        y_train=y[train],
        y_validation=y[validation],
        y_test=y[test],
    )
