"""Triton python-backend model for one Sextant model version (copied as ``<model>/<version>/model.py``).

It runs the version's own ``tabular_model.py`` (the code logged with the model in MLflow, copied
beside this file), so preprocessing and model are exactly those of the MLflow pyfunc: raw feature
columns in, ``prediction`` (and ``probabilities`` for classifiers) out. ``serving.json`` lists the
tensors (see ``backend/serving/repository.py``). All requests of a batch go through the model in
one call; each request gets its own response (an error response when its inputs are unusable).

Self-contained on purpose (numpy, pandas and the model's framework only): Triton's stub imports it
from the version folder, not from the Sextant tree, so a deployed version outlives code changes.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported outside Triton (tests, tools): only VersionModel is usable
    pb_utils = None

SPEC_FILE = "serving.json"
MODEL_CODE_FILE = "tabular_model.py"
STRING_TENSOR = "TYPE_STRING"
PREDICTION = "prediction"
PROBABILITIES = "probabilities"
_LABEL_DTYPES = {"TYPE_INT64": np.int64, "TYPE_BOOL": np.bool_, "TYPE_FP64": np.float64}


class RequestError(ValueError):
    """A request's inputs cannot be used; only that request fails."""


def _mlflow_stand_in() -> dict[str, types.ModuleType]:
    # tabular_model.py subclasses mlflow.pyfunc.PythonModel for its MLflow wrapper, which Triton never
    # uses; importing MLflow would cost every model instance ~1.5 s of load time and ~100 MiB.
    pyfunc = types.ModuleType("mlflow.pyfunc")
    pyfunc.PythonModel = type("PythonModel", (), {})
    mlflow = types.ModuleType("mlflow")
    mlflow.pyfunc = pyfunc
    return {"mlflow": mlflow, "mlflow.pyfunc": pyfunc}


def load_model_code(folder: Path) -> types.ModuleType:
    """Import ``<folder>/tabular_model.py`` under a name of its own (several versions may share a process)."""
    name = f"sextant_tabular_model_{abs(hash(str(folder.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, folder / MODEL_CODE_FILE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {folder / MODEL_CODE_FILE}")
    module = importlib.util.module_from_spec(spec)
    stand_ins = {} if "mlflow" in sys.modules else _mlflow_stand_in()
    sys.modules.update(stand_ins)
    try:
        spec.loader.exec_module(module)
    finally:
        for key in stand_ins:
            sys.modules.pop(key, None)
    return module


class VersionModel:
    """Decode request columns, predict with the version's code, encode the outputs (no Triton needed)."""

    def __init__(self, folder: Path, *, device: str = "cpu"):
        self.spec = json.loads((folder / SPEC_FILE).read_text())
        self.predictor = load_model_code(folder).TabularPredictor.load_dir(folder)
        self.inputs: list[tuple[str, str]] = [(item["name"], item["data_type"]) for item in self.spec["inputs"]]
        self.output_types: dict[str, str] = {item["name"]: item["data_type"] for item in self.spec["outputs"]}
        self.task: str = self.spec["task"]
        self.labels = None if self.task == "regression" else pd.Series(self.spec["classes"]).to_numpy()
        self.device = device
        if self.predictor.module is not None and device != "cpu":
            self.predictor.module.to(device)

    def decode(self, name: str, data_type: str, values: np.ndarray | None) -> np.ndarray:
        """One input tensor (rows, 1) → a 1-D column as the pyfunc gets it (None / NaN = missing)."""
        if values is None:
            raise RequestError(f"missing input {name!r}")
        if values.ndim != 2 or values.shape[1] != 1:
            raise RequestError(f"input {name!r} must have shape [rows, 1], got {list(values.shape)}")
        flat = values.reshape(-1)
        if data_type != STRING_TENSOR:
            return flat.astype(np.float64, copy=False)
        try:
            return np.array([value.decode("utf-8") if value else None for value in flat], dtype=object)
        except (AttributeError, UnicodeDecodeError) as error:
            raise RequestError(f"input {name!r} must hold UTF-8 strings: {error}") from error

    def predict(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Decoded columns (all rows of a batch) → output tensors, one row per input row."""
        frame = pd.DataFrame({name: columns[name] for name, _ in self.inputs})
        scores = self._scores(self.predictor.preprocessor.transform(frame))
        if self.task == "regression":
            return {PREDICTION: scores.reshape(-1, 1).astype(np.float64)}
        labels = self.labels[scores.argmax(axis=1)]
        label_type = self.output_types[PREDICTION]
        if label_type == STRING_TENSOR:
            encoded = np.array([str(label).encode("utf-8") for label in labels], dtype=object)
        else:
            encoded = labels.astype(_LABEL_DTYPES[label_type])
        return {PROBABILITIES: scores.astype(np.float32), PREDICTION: encoded.reshape(-1, 1)}

    def _scores(self, matrix: np.ndarray) -> np.ndarray:
        if self.predictor.module is None or self.device == "cpu":
            return self.predictor.predict_matrix(matrix)
        import torch

        with torch.no_grad():
            batch = torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32)).to(self.device)
            return self.predictor.module(batch).double().cpu().numpy()


def _device(args: dict[str, Any]) -> str:
    if args.get("model_instance_kind") != "GPU":
        return "cpu"
    try:
        import torch
    except ImportError:
        return "cpu"
    # A CPU-only PyTorch build on a GPU machine still serves, on the CPU.
    return f"cuda:{args['model_instance_device_id']}" if torch.cuda.is_available() else "cpu"


def _error_response(message: str) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        folder = Path(args["model_repository"]) / args["model_version"]
        self.model = VersionModel(folder, device=_device(args))

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        accepted: list[tuple[int, dict[str, np.ndarray], int]] = []
        for index, request in enumerate(requests):
            try:
                columns = {
                    name: self.model.decode(name, data_type, _input(request, name))
                    for name, data_type in self.model.inputs
                }
            except RequestError as error:
                responses[index] = _error_response(str(error))
                continue
            rows = {len(column) for column in columns.values()}
            if len(rows) != 1:
                responses[index] = _error_response("all inputs must have the same number of rows")
                continue
            accepted.append((index, columns, rows.pop()))
        if not accepted:
            return responses
        stacked = {name: np.concatenate([columns[name] for _, columns, _ in accepted]) for name, _ in self.model.inputs}
        try:
            outputs = self.model.predict(stacked)
        except Exception as error:
            for index, _, _ in accepted:
                responses[index] = _error_response(f"prediction failed: {type(error).__name__}: {error}")
            return responses
        start = 0
        for index, _, rows in accepted:
            tensors = [pb_utils.Tensor(name, values[start : start + rows]) for name, values in outputs.items()]
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
            start += rows
        return responses

    def finalize(self) -> None:
        self.model = None


def _input(request: Any, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()
