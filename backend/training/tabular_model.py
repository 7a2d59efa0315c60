"""The model Sextant logs to MLflow: preprocessing + an XGBoost booster or a TorchScript MLP.

This module is shipped inside every logged model (``code/tabular_model.py``) and imports nothing
from Sextant, so a model loads anywhere MLflow, pandas and its framework are installed: in a
notebook, under ``mlflow models serve`` or inside a Triton ``model.py`` next to the raw artifacts.

Artifacts of a logged model (``<model>/artifacts/``):

- ``sextant_model.json``: framework, task, target, classes, the raw feature columns and the outputs;
- ``preprocessor.json``: the fitted preprocessing (medians, means, scales, one-hot categories);
- ``xgboost_booster.json`` (XGBoost) or ``model.torchscript.pt`` (PyTorch): the model on the
  preprocessed float32 matrix. The booster already stops at the best round; the TorchScript module
  returns class probabilities (classification) or the prediction on the target's scale (regression).

Output of ``predict`` (a pandas DataFrame, one row per input row):

- regression: ``prediction`` (float64);
- classification: ``prediction`` (the predicted class, with the target's own values and type), then
  one ``probability_<class>`` float64 column per class, in the order of ``classes``.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

FORMAT_VERSION = 1
METADATA_FILE = "sextant_model.json"
PREPROCESSOR_FILE = "preprocessor.json"
BOOSTER_FILE = "xgboost_booster.json"
TORCHSCRIPT_FILE = "model.torchscript.pt"
MODEL_ARTIFACT_KEY = "model"
MISSING_CATEGORY = "<missing>"
PREDICTION_COLUMN = "prediction"
PROBABILITY_PREFIX = "probability_"


def _as_float(values: pd.Series) -> np.ndarray:
    # Booleans arrive as bool or as object (with None); strings that are not numbers become missing.
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _as_category(values: pd.Series) -> np.ndarray:
    return np.where(values.isna().to_numpy(), MISSING_CATEGORY, values.astype(str).to_numpy()).astype(object)


class TabularPreprocessor:
    """Raw feature columns → float32 matrix: impute + standardise numbers, one-hot categories.

    Numeric and boolean columns: missing values take the training median (and add a 0/1
    ``<col>__missing`` column when training saw missing values), then ``(x - mean) / scale``.
    Categorical columns: one 0/1 column per category seen in training (the most frequent
    ``max_categories``; missing counts as the category ``<missing>``); unseen values are all zeros.
    """

    def __init__(self, numeric: list[dict[str, Any]], categorical: list[dict[str, Any]]):
        self.numeric = numeric
        self.categorical = categorical
        names: list[str] = []
        for column in numeric:
            names.append(column["name"])
            if column["missing_indicator"]:
                names.append(f"{column['name']}__missing")
        for column in categorical:
            names.extend(f"{column['name']}={category}" for category in column["categories"])
        self.output_names = names

    @classmethod
    def fit(
        cls, frame: pd.DataFrame, *, numeric: list[str], categorical: list[str], max_categories: int = 50
    ) -> TabularPreprocessor:
        numeric_specs = []
        for name in numeric:
            values = _as_float(frame[name])
            present = values[np.isfinite(values)]
            fill = float(np.median(present)) if present.size else 0.0
            filled = np.where(np.isfinite(values), values, fill)
            mean = float(filled.mean()) if filled.size else 0.0
            scale = float(filled.std()) if filled.size else 1.0
            numeric_specs.append(
                {
                    "name": name,
                    "fill": fill,
                    "mean": mean,
                    "scale": scale if scale > 0 and math.isfinite(scale) else 1.0,
                    "missing_indicator": bool(present.size < values.size),
                }
            )
        categorical_specs = []
        for name in categorical:
            counts = pd.Series(_as_category(frame[name])).value_counts()
            # Most frequent first, ties by value, so the layout does not depend on row order.
            ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
            categorical_specs.append({"name": name, "categories": [value for value, _ in ranked[:max_categories]]})
        return cls(numeric_specs, categorical_specs)

    @property
    def input_columns(self) -> list[str]:
        return [column["name"] for column in self.numeric] + [column["name"] for column in self.categorical]

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        missing = [name for name in self.input_columns if name not in frame.columns]
        if missing:
            raise ValueError(f"missing input columns: {', '.join(missing)}")
        rows = len(frame)
        blocks: list[np.ndarray] = []
        for column in self.numeric:
            values = _as_float(frame[column["name"]])
            absent = ~np.isfinite(values)
            filled = np.where(absent, column["fill"], values)
            blocks.append(((filled - column["mean"]) / column["scale"]).reshape(rows, 1))
            if column["missing_indicator"]:
                blocks.append(absent.astype(np.float64).reshape(rows, 1))
        for column in self.categorical:
            categories = column["categories"]
            codes = pd.Categorical(_as_category(frame[column["name"]]), categories=categories).codes
            block = np.zeros((rows, len(categories)))
            known = codes >= 0
            block[np.flatnonzero(known), codes[known]] = 1.0
            blocks.append(block)
        if not blocks:
            return np.zeros((rows, 0), dtype=np.float32)
        return np.hstack(blocks).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"numeric": self.numeric, "categorical": self.categorical, "output_names": self.output_names}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TabularPreprocessor:
        return cls(data["numeric"], data["categorical"])


def output_columns(task: str, classes: list[Any] | None) -> list[str]:
    if task == "regression":
        return [PREDICTION_COLUMN]
    return [PREDICTION_COLUMN] + [f"{PROBABILITY_PREFIX}{label}" for label in classes or []]


class TabularPredictor:
    """Preprocessor + fitted model; ``predict`` maps raw feature columns to the output layout above."""

    def __init__(
        self, metadata: dict[str, Any], preprocessor: TabularPreprocessor, *, booster: Any = None, module: Any = None
    ):
        if (booster is None) == (module is None):
            raise ValueError("a predictor needs exactly one of an XGBoost booster or a TorchScript module")
        self.metadata = metadata
        self.preprocessor = preprocessor
        self.booster = booster
        self.module = module
        self.task: str = metadata["task"]
        self.classes: list[Any] | None = metadata.get("classes")

    @classmethod
    def load(cls, artifacts: dict[str, str]) -> TabularPredictor:
        """From artifact paths keyed ``metadata``, ``preprocessor`` and ``model`` (MLflow's ``context.artifacts``)."""
        metadata = json.loads(Path(artifacts["metadata"]).read_text())
        if metadata.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported Sextant model format {metadata.get('format_version')!r}")
        preprocessor = TabularPreprocessor.from_dict(json.loads(Path(artifacts["preprocessor"]).read_text()))
        if metadata["framework"] == "xgboost":
            import xgboost

            booster = xgboost.Booster()
            booster.load_model(artifacts[MODEL_ARTIFACT_KEY])
            return cls(metadata, preprocessor, booster=booster)
        import torch

        with warnings.catch_warnings():
            # TorchScript is deprecated upstream, but it is the format Triton's python backend loads.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(artifacts[MODEL_ARTIFACT_KEY], map_location="cpu")
        module.eval()
        return cls(metadata, preprocessor, module=module)

    @classmethod
    def load_dir(cls, folder: str | Path) -> TabularPredictor:
        """From a folder holding the artifact files (e.g. ``<model>/artifacts``)."""
        folder = Path(folder)
        metadata = json.loads((folder / METADATA_FILE).read_text())
        model_file = BOOSTER_FILE if metadata["framework"] == "xgboost" else TORCHSCRIPT_FILE
        return cls.load(
            {
                "metadata": str(folder / METADATA_FILE),
                "preprocessor": str(folder / PREPROCESSOR_FILE),
                "model": str(folder / model_file),
            }
        )

    def predict_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Preprocessed rows → class probabilities (n, classes) or predictions (n,)."""
        if self.booster is not None:
            import xgboost

            raw = np.asarray(self.booster.predict(xgboost.DMatrix(matrix)), dtype=np.float64)
            if self.task == "binary":
                return np.column_stack([1.0 - raw, raw])
            return raw
        import torch

        with torch.no_grad():
            return self.module(torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32))).double().numpy()

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        scores = self.predict_matrix(self.preprocessor.transform(frame))
        if self.task == "regression":
            return pd.DataFrame({PREDICTION_COLUMN: scores.reshape(-1).astype(np.float64)}, index=frame.index)
        labels = pd.Series(self.classes).to_numpy()
        columns: dict[str, Any] = {PREDICTION_COLUMN: labels[scores.argmax(axis=1)]}
        for index, label in enumerate(self.classes or []):
            columns[f"{PROBABILITY_PREFIX}{label}"] = scores[:, index]
        return pd.DataFrame(columns, index=frame.index)


class SextantPyfuncModel(mlflow.pyfunc.PythonModel):
    """The MLflow pyfunc wrapper: raw feature columns in, the output layout above out."""

    def load_context(self, context: Any) -> None:
        self.predictor = TabularPredictor.load(context.artifacts)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        return self.predictor.predict(model_input)
