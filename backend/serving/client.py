"""Talking to Triton over gRPC: load / unload / state of models, and inference on named columns.

One ``TritonClient`` holds one gRPC channel; share it (its calls are thread-safe). ``infer`` sends
binary tensors and splits large inputs into requests of the model's ``max_batch_size`` rows with a
few of them in flight, so a batch prediction of millions of rows is one call.

Triton's repository API keeps the config a model was last loaded with: after a load with a
``config`` override, a plain ``load_model(name)`` is a no-op. Pass the config again on every
(re)load, or unload first.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from backend.config import Settings, get_settings
from backend.errors import InvalidInputError
from backend.serving.errors import (
    InferenceError,
    ModelLoadError,
    ModelNotReadyError,
    ServingError,
    TritonUnavailableError,
)

STRING_TENSOR = "TYPE_STRING"
READY = "READY"
UNAVAILABLE = "UNAVAILABLE"
UNLOADING = "UNLOADING"
_NUMPY_TYPES: dict[str, Any] = {
    "TYPE_BOOL": np.bool_,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_UINT8": np.uint8,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    STRING_TENSOR: np.object_,
}
DEFAULT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ModelState:
    name: str
    # None: the model as a whole (no version of it is known to Triton).
    version: int | None
    # READY, LOADING, UNLOADING, UNAVAILABLE (failed or unloaded) or "" (never loaded).
    state: str
    # Triton's message: why a load failed, or "unloaded".
    reason: str

    @property
    def ready(self) -> bool:
        return self.state == READY


@dataclass(frozen=True)
class TensorInfo:
    name: str
    data_type: str
    dims: tuple[int, ...]
    optional: bool = False

    @property
    def wire_type(self) -> str:
        return "BYTES" if self.data_type == STRING_TENSOR else self.data_type.removeprefix("TYPE_")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: int | None
    max_batch_size: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


def _tensor_infos(items: list[dict[str, Any]]) -> tuple[TensorInfo, ...]:
    return tuple(
        TensorInfo(
            name=item["name"],
            data_type=item.get("data_type", "TYPE_INVALID"),
            dims=tuple(int(dim) for dim in item.get("dims", [])),
            optional=bool(item.get("optional", False)),
        )
        for item in items
    )


def _translate(error: InferenceServerException, *, name: str = "", version: int | None = None) -> ServingError:
    message = error.message() or str(error)
    status = error.status() or ""
    if "unknown model" in message or "is not ready" in message or "is not found" in message:
        what = f"{name} version {version}" if version is not None else name
        return ModelNotReadyError(f"{what} is not loaded in Triton: {message}")
    if "UNAVAILABLE" in status or "DEADLINE_EXCEEDED" in status:
        return TritonUnavailableError(f"Triton is unreachable: {message}")
    return InferenceError(message)


def _text(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    # None, NaN and pandas' NA are missing: the empty string on the wire.
    if item is None or (isinstance(item, float) and math.isnan(item)) or type(item).__name__ == "NAType":
        return b""
    return str(item).encode("utf-8")


def _column(values: Any, info: TensorInfo) -> np.ndarray:
    """A column as the tensor's wire array (rows, 1); text is UTF-8 bytes, missing text b""."""
    if info.data_type == STRING_TENSOR:
        items = values.tolist() if isinstance(values, np.ndarray) else list(values)
        encoded = [_text(item) for item in items]
        array = np.empty(len(encoded), dtype=object)
        array[:] = encoded
    else:
        try:
            array = np.asarray(values, dtype=_NUMPY_TYPES[info.data_type])
        except (TypeError, ValueError) as error:
            raise InvalidInputError(f"column {info.name!r} must be numeric: {error}") from error
    if array.ndim != 1:
        array = array.reshape(len(array), -1)
        if array.shape[1] != 1:
            raise InvalidInputError(f"column {info.name!r} must be one value per row")
    return array.reshape(-1, 1)


class TritonClient:
    """A Triton gRPC client for Sextant's services (gateway, batch jobs, the supervisor's reload hook)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_in_flight: int = 4,
    ):
        self.url = url
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self._client = grpcclient.InferenceServerClient(url=url)
        self._infos: dict[tuple[str, int | None], ModelInfo] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> TritonClient:
        settings = settings or get_settings()
        return cls(settings.triton_grpc_url, max_in_flight=settings.triton_infer_concurrency)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # Server -----------------------------------------------------------------------------------

    def is_server_live(self, *, timeout_s: float = 2.0) -> bool:
        try:
            return bool(self._client.is_server_live(client_timeout=timeout_s))
        except InferenceServerException:
            return False

    def is_server_ready(self, *, timeout_s: float = 2.0) -> bool:
        try:
            return bool(self._client.is_server_ready(client_timeout=timeout_s))
        except InferenceServerException:
            return False

    # Repository -------------------------------------------------------------------------------

    def load_model(
        self,
        name: str,
        *,
        config: str | Mapping[str, Any] | None = None,
        versions: Sequence[int] | None = None,
    ) -> None:
        """Load (or reload) ``name``; with ``versions``, serve exactly those side by side.

        ``versions`` overrides the version policy of ``config`` (the model's config as JSON text or
        dict, e.g. from ``repository.load_config_json``), which it therefore needs. Raises
        ``ModelLoadError`` with Triton's message when the load fails.
        """
        if versions is not None:
            if config is None:
                raise ValueError("serving chosen versions needs the model's config (repository.load_config_json)")
            data = json.loads(config) if isinstance(config, str) else dict(config)
            data["version_policy"] = {"specific": {"versions": sorted({int(version) for version in versions})}}
            config = data
        payload = config if config is None or isinstance(config, str) else json.dumps(config)
        self._forget(name)
        try:
            self._client.load_model(name, config=payload, client_timeout=self.timeout_s)
        except InferenceServerException as error:
            if "UNAVAILABLE" in (error.status() or "") and "failed to connect" in (error.message() or ""):
                raise TritonUnavailableError(f"Triton is unreachable: {error.message()}") from error
            raise ModelLoadError(f"Triton could not load {name}: {error.message()}") from error

    def unload_model(self, name: str, *, wait: bool = True) -> None:
        """Unload every version of ``name``; with ``wait``, return once its in-flight requests are done."""
        self._forget(name)
        try:
            self._client.unload_model(name, client_timeout=self.timeout_s)
        except InferenceServerException as error:
            raise _translate(error, name=name) from error
        deadline = time.monotonic() + self.timeout_s
        # Triton answers the unload at once and drains the model in the background.
        while wait and time.monotonic() < deadline:
            if not any(state.state in (READY, UNLOADING) for state in self.model_states(name)):
                return
            time.sleep(0.05)

    def is_model_ready(self, name: str, version: int | None = None) -> bool:
        try:
            return bool(
                self._client.is_model_ready(
                    name, "" if version is None else str(version), client_timeout=self.timeout_s
                )
            )
        except InferenceServerException as error:
            if "UNAVAILABLE" in (error.status() or ""):
                raise TritonUnavailableError(f"Triton is unreachable: {error.message()}") from error
            return False

    def model_states(self, name: str | None = None) -> list[ModelState]:
        """Every model (version) Triton knows of, with its state and Triton's reason (e.g. a load error)."""
        try:
            index = self._client.get_model_repository_index(as_json=True, client_timeout=self.timeout_s)
        except InferenceServerException as error:
            raise _translate(error) from error
        states = []
        for item in index.get("models", []):
            if name is not None and item.get("name") != name:
                continue
            version = item.get("version")
            states.append(
                ModelState(
                    name=item["name"],
                    version=int(version) if version else None,
                    state=item.get("state", ""),
                    reason=item.get("reason", ""),
                )
            )
        return states

    def model_state(self, name: str, version: int | None = None) -> ModelState:
        """The state of one version (or of the model); ``state == ""`` when Triton never loaded it."""
        states = self.model_states(name)
        if version is not None:
            exact = [state for state in states if state.version == version]
            # A model whose config failed to load has no versions in the index, only itself.
            failed = [state for state in states if state.version is None]
            states = exact or failed
        for state in states:
            if state.ready:
                return state
        if states:
            return states[0]
        return ModelState(name=name, version=version, state="", reason="")

    def model_info(self, name: str, version: int | None = None) -> ModelInfo:
        """The loaded model's tensors and max_batch_size (cached until the next load/unload of ``name``)."""
        key = (name, version)
        with self._lock:
            cached = self._infos.get(key)
        if cached is not None:
            return cached
        try:
            response = self._client.get_model_config(
                name, "" if version is None else str(version), as_json=True, client_timeout=self.timeout_s
            )
        except InferenceServerException as error:
            raise _translate(error, name=name, version=version) from error
        config = response.get("config", {})
        info = ModelInfo(
            name=name,
            version=version,
            max_batch_size=int(config.get("max_batch_size", 0)),
            inputs=_tensor_infos(config.get("input", [])),
            outputs=_tensor_infos(config.get("output", [])),
        )
        with self._lock:
            self._infos[key] = info
        return info

    def _forget(self, name: str) -> None:
        with self._lock:
            for key in [key for key in self._infos if key[0] == name]:
                del self._infos[key]

    # Inference --------------------------------------------------------------------------------

    def infer(
        self,
        name: str,
        version: int | None,
        columns: Mapping[str, Any],
        *,
        outputs: Sequence[str] | None = None,
        chunk_rows: int | None = None,
        max_in_flight: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Predict on named columns (one array-like per input, equal lengths) → one array per output.

        Outputs with one value per row come back 1-D, ``probabilities`` as (rows, classes); text as
        ``str``. Inputs longer than the model's ``max_batch_size`` (or ``chunk_rows``) go as several
        requests, ``max_in_flight`` at a time, and come back in order.
        """
        info = self.model_info(name, version)
        wanted = [tensor for tensor in info.outputs if outputs is None or tensor.name in outputs]
        if outputs is not None and len(wanted) != len(set(outputs)):
            unknown = sorted(set(outputs) - {tensor.name for tensor in info.outputs})
            raise InvalidInputError(f"{name} has no output {', '.join(map(repr, unknown))}")
        arrays = self._input_arrays(info, columns)
        rows = len(next(iter(arrays.values()))) if arrays else 0
        if rows == 0:
            return {tensor.name: self._empty(tensor) for tensor in wanted}
        step = chunk_rows or info.max_batch_size or rows
        if info.max_batch_size:
            step = min(step, info.max_batch_size)
        chunks = [(start, min(start + step, rows)) for start in range(0, rows, step)]
        results = self._run_chunks(name, version, info, arrays, chunks, wanted, max_in_flight or self.max_in_flight)
        return {tensor.name: self._output(tensor, [result[tensor.name] for result in results]) for tensor in wanted}

    def _input_arrays(self, info: ModelInfo, columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
        known = {tensor.name: tensor for tensor in info.inputs}
        unknown = sorted(set(columns) - set(known))
        if unknown:
            raise InvalidInputError(f"{info.name} has no input {', '.join(map(repr, unknown))}")
        missing = [tensor.name for tensor in info.inputs if not tensor.optional and tensor.name not in columns]
        if missing:
            raise InvalidInputError(f"missing input column {', '.join(map(repr, missing))}")
        arrays = {name: _column(values, known[name]) for name, values in columns.items()}
        lengths = {len(array) for array in arrays.values()}
        if len(lengths) > 1:
            raise InvalidInputError(f"input columns have different lengths: {sorted(lengths)}")
        return arrays

    def _run_chunks(
        self,
        name: str,
        version: int | None,
        info: ModelInfo,
        arrays: dict[str, np.ndarray],
        chunks: list[tuple[int, int]],
        wanted: list[TensorInfo],
        max_in_flight: int,
    ) -> list[dict[str, np.ndarray]]:
        types = {tensor.name: tensor.wire_type for tensor in info.inputs}
        requested = [grpcclient.InferRequestedOutput(tensor.name) for tensor in wanted]
        results: list[dict[str, np.ndarray] | None] = [None] * len(chunks)
        errors: list[InferenceServerException] = []
        slots = threading.BoundedSemaphore(max(1, max_in_flight))
        done = threading.Condition()
        pending = [0]

        def request(start: int, stop: int) -> list[grpcclient.InferInput]:
            inputs = []
            for column, array in arrays.items():
                part = array[start:stop]
                tensor = grpcclient.InferInput(column, list(part.shape), types[column])
                tensor.set_data_from_numpy(part)
                inputs.append(tensor)
            return inputs

        def finished(position: int, result: Any, error: InferenceServerException | None) -> None:
            if error is not None:
                errors.append(error)
            else:
                results[position] = {tensor.name: result.as_numpy(tensor.name) for tensor in wanted}
            slots.release()
            with done:
                pending[0] -= 1
                done.notify_all()

        version_text = "" if version is None else str(version)
        for position, (start, stop) in enumerate(chunks):
            slots.acquire()
            if errors:
                slots.release()
                break
            with done:
                pending[0] += 1
            try:
                self._client.async_infer(
                    name,
                    request(start, stop),
                    callback=lambda result, error, position=position: finished(position, result, error),
                    model_version=version_text,
                    outputs=requested,
                    client_timeout=self.timeout_s,
                )
            except InferenceServerException as error:
                finished(position, None, error)
        with done:
            done.wait_for(lambda: pending[0] == 0)
        if errors:
            raise _translate(errors[0], name=name, version=version) from errors[0]
        return [result for result in results if result is not None]

    @staticmethod
    def _output(tensor: TensorInfo, parts: list[np.ndarray]) -> np.ndarray:
        array = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if tensor.dims == (1,):
            array = array.reshape(-1)
        if tensor.data_type == STRING_TENSOR:
            decoded = np.empty(array.shape, dtype=object)
            decoded.flat[:] = [value.decode("utf-8") if isinstance(value, bytes) else value for value in array.flat]
            return decoded
        return array

    @staticmethod
    def _empty(tensor: TensorInfo) -> np.ndarray:
        shape = (0,) if tensor.dims == (1,) else (0, *(max(dim, 0) for dim in tensor.dims))
        return np.empty(shape, dtype=_NUMPY_TYPES.get(tensor.data_type, np.float64))
