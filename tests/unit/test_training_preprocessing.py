"""The preprocessing shipped inside every logged model: fit, transform, JSON round-trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from backend.training.data import split_indices
from backend.training.tabular_model import TabularPreprocessor, output_columns


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [20.0, 30.0, None, 50.0, 40.0, 60.0],
            "visits": [1, 2, 3, 4, 5, 6],
            "member": [True, None, False, True, True, False],
            "plan": ["basic", "premium", None, "basic", "standard", "basic"],
        }
    )


def _fit(frame: pd.DataFrame, max_categories: int = 50) -> TabularPreprocessor:
    return TabularPreprocessor.fit(
        frame, numeric=["age", "visits", "member"], categorical=["plan"], max_categories=max_categories
    )


def test_layout_imputation_scaling_and_one_hot(frame: pd.DataFrame) -> None:
    preprocessor = _fit(frame)
    assert preprocessor.output_names == [
        "age",
        "age__missing",
        "visits",
        "member",
        "member__missing",
        "plan=basic",
        "plan=<missing>",
        "plan=premium",
        "plan=standard",
    ]
    matrix = preprocessor.transform(frame)
    assert matrix.dtype == np.float32 and matrix.shape == (6, 9)
    # The missing age takes the median (40), then everything is standardised.
    age = np.array([20, 30, 40, 50, 40, 60], dtype=float)
    np.testing.assert_allclose(matrix[:, 0], (age - age.mean()) / age.std(), rtol=1e-6)
    np.testing.assert_array_equal(matrix[:, 1], [0, 0, 1, 0, 0, 0])
    np.testing.assert_allclose(matrix[:, 2].mean(), 0.0, atol=1e-6)
    np.testing.assert_allclose(matrix[:, 2].std(), 1.0, atol=1e-6)
    np.testing.assert_array_equal(matrix[:, 4], [0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(matrix[:, 5:], np.eye(4)[[0, 2, 1, 0, 3, 0]])


def test_json_round_trip_gives_identical_output(frame: pd.DataFrame) -> None:
    preprocessor = _fit(frame)
    restored = TabularPreprocessor.from_dict(json.loads(json.dumps(preprocessor.to_dict())))
    assert restored.output_names == preprocessor.output_names
    np.testing.assert_array_equal(restored.transform(frame), preprocessor.transform(frame))


def test_serving_time_surprises(frame: pd.DataFrame) -> None:
    preprocessor = _fit(frame)
    new = pd.DataFrame({"age": [None], "visits": [3.5], "member": [None], "plan": ["enterprise"]})
    row = preprocessor.transform(new)[0]
    assert row[1] == 1.0 and row[4] == 1.0
    # An unseen category is all zeros.
    np.testing.assert_array_equal(row[5:], [0, 0, 0, 0])
    with pytest.raises(ValueError, match="missing input columns: plan"):
        preprocessor.transform(new.drop(columns=["plan"]))


def test_rare_categories_beyond_the_limit_are_dropped_in_a_stable_order(frame: pd.DataFrame) -> None:
    preprocessor = _fit(frame, max_categories=2)
    # basic is most frequent; the three single-row categories tie and sort by value.
    assert preprocessor.categorical[0]["categories"] == ["basic", "<missing>"]
    shuffled = _fit(frame.iloc[::-1].reset_index(drop=True), max_categories=2)
    assert shuffled.to_dict() == preprocessor.to_dict()


def test_constant_column_does_not_divide_by_zero() -> None:
    preprocessor = TabularPreprocessor.fit(pd.DataFrame({"x": [3.0, 3.0]}), numeric=["x"], categorical=[])
    np.testing.assert_array_equal(preprocessor.transform(pd.DataFrame({"x": [3.0, 5.0]}))[:, 0], [0.0, 2.0])


def test_output_columns_per_task() -> None:
    assert output_columns("regression", None) == ["prediction"]
    assert output_columns("multiclass", ["a", "b", "c"]) == [
        "prediction",
        "probability_a",
        "probability_b",
        "probability_c",
    ]


def test_split_is_seeded_disjoint_and_stratified() -> None:
    labels = np.array([0] * 80 + [1] * 20)
    first = split_indices(100, labels, validation_fraction=0.2, test_fraction=0.2, seed=7)
    again = split_indices(100, labels, validation_fraction=0.2, test_fraction=0.2, seed=7)
    other = split_indices(100, labels, validation_fraction=0.2, test_fraction=0.2, seed=8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[2], other[2])
    train, validation, test = first
    assert (len(train), len(validation), len(test)) == (60, 20, 20)
    assert len(np.unique(np.concatenate(first))) == 100
    assert labels[test].sum() == 4 and labels[validation].sum() == 4


def test_split_falls_back_to_random_when_a_class_is_too_rare() -> None:
    labels = np.array([0] * 99 + [1])
    train, validation, test = split_indices(100, labels, validation_fraction=0.1, test_fraction=0.1, seed=1)
    assert (len(train), len(validation), len(test)) == (80, 10, 10)
