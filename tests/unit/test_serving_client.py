"""How the Triton client turns columns into wire tensors (the I/O itself is tested against real Triton)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backend.errors import InvalidInputError
from backend.serving.client import TensorInfo, TritonClient, _column

NUMBER = TensorInfo("charges", "TYPE_FP64", (1,))
TEXT = TensorInfo("plan", "TYPE_STRING", (1,))


def test_numbers_become_fp64_rows_with_nan_for_missing() -> None:
    column = _column([1, None, 2.5], NUMBER)
    assert column.dtype == np.float64 and column.shape == (3, 1)
    assert np.isnan(column[1, 0]) and column[2, 0] == 2.5
    assert _column(pd.Series([True, False]), NUMBER)[:, 0].tolist() == [1.0, 0.0]
    with pytest.raises(InvalidInputError, match="'charges' must be numeric"):
        _column(["a lot"], NUMBER)


def test_text_becomes_utf8_bytes_with_empty_for_missing() -> None:
    column = _column(pd.Series(["basic", None, np.nan, pd.NA, "café", b"raw", 7], dtype=object), TEXT)
    assert column.dtype == object and column.shape == (7, 1)
    assert column[:, 0].tolist() == [b"basic", b"", b"", b"", "café".encode(), b"raw", b"7"]


def test_a_column_is_one_value_per_row() -> None:
    assert _column(np.arange(3).reshape(3, 1), NUMBER).shape == (3, 1)
    with pytest.raises(InvalidInputError, match="one value per row"):
        _column(np.zeros((3, 2)), NUMBER)


def test_wire_types_and_output_shapes() -> None:
    assert TEXT.wire_type == "BYTES" and NUMBER.wire_type == "FP64"
    probabilities = TensorInfo("probabilities", "TYPE_FP32", (2,))
    parts = [np.ones((2, 2), dtype=np.float32), np.zeros((1, 2), dtype=np.float32)]
    assert TritonClient._output(probabilities, parts).shape == (3, 2)
    labels = TritonClient._output(TensorInfo("prediction", "TYPE_STRING", (1,)), [np.array([[b"a"], [b"b"]])])
    assert labels.tolist() == ["a", "b"]
    assert TritonClient._empty(probabilities).shape == (0, 2)
    assert TritonClient._empty(TensorInfo("prediction", "TYPE_INT64", (1,))).dtype == np.int64
