"""Online prediction requests: validate instances against a deployment's inputs, pick a deployment
by traffic, turn Triton's outputs into per-instance predictions. Pure functions (no I/O), shared by
the gateway and its tests.

Instance rules (the MLflow pyfunc's own, so a request the gateway accepts is one the pyfunc accepts):

- every input of the signature present, no other field;
- ``double`` / ``float``: a JSON number; ``null`` or ``NaN`` mean missing (the model imputes);
- ``long`` / ``integer``: a whole JSON number, never missing;
- ``boolean``: ``true`` / ``false``, never missing;
- ``string``: a JSON string; ``null`` means missing (the model's "missing" category);
- infinities are refused everywhere.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from backend.errors import InvalidInputError
from backend.serving.endpoints import DeploymentInfo, InputColumn

INTEGER_TYPES = frozenset({"integer", "long"})
FLOAT_TYPES = frozenset({"float", "double"})
BOOLEAN_TYPES = frozenset({"boolean"})
STRING_TYPES = frozenset({"string"})
REQUEST_FIELDS = frozenset({"instances"})
BUCKETS = 100


class RequestError(InvalidInputError):
    """A predict request the gateway refuses (400); ``field`` names what is wrong, e.g. ``instances[2].age``."""

    def __init__(self, message: str, *, field: str):
        super().__init__(message)
        self.field = field


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {text!r}"
    if isinstance(value, (list, dict)):
        return "an array" if isinstance(value, list) else "an object"
    return repr(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def convert_value(value: Any, column: InputColumn, field: str) -> Any:
    """One instance value as the Triton column wants it: float (NaN = missing), or str / None for text."""
    kind = column.type
    if _missing(value):
        if column.nullable:
            return None if kind in STRING_TYPES else math.nan
        what = "an integer" if kind in INTEGER_TYPES else "a boolean"
        raise RequestError(f"{field} is missing (null/NaN), but it must be {what}: no missing values here", field=field)
    if kind in STRING_TYPES:
        if not isinstance(value, str):
            raise RequestError(f"{field} must be a string, got {_describe(value)}", field=field)
        return value
    if kind in BOOLEAN_TYPES:
        if not isinstance(value, bool):
            raise RequestError(f"{field} must be true or false, got {_describe(value)}", field=field)
        return 1.0 if value else 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        what = "an integer" if kind in INTEGER_TYPES else "a number"
        raise RequestError(f"{field} must be {what}, got {_describe(value)}", field=field)
    number = float(value)
    if not math.isfinite(number):
        raise RequestError(f"{field} must be a finite number, got {_describe(value)}", field=field)
    if kind in INTEGER_TYPES and not number.is_integer():
        raise RequestError(f"{field} must be an integer, got {_describe(value)}", field=field)
    if kind not in FLOAT_TYPES | INTEGER_TYPES:
        raise RequestError(f"{field} has type {kind!r}, which online prediction does not support", field=field)
    return number


def instances_of(payload: Any, *, max_instances: int) -> list[Any]:
    """The ``instances`` list of a request body, checked for shape and size."""
    if not isinstance(payload, dict):
        raise RequestError(
            f'the body must be a JSON object {{"instances": [...]}}, got {_describe(payload)}', field="body"
        )
    extra = sorted(set(payload) - REQUEST_FIELDS)
    if extra:
        raise RequestError(f"unknown field {extra[0]!r} in the body: only 'instances' is accepted", field=extra[0])
    if "instances" not in payload:
        raise RequestError("the body has no 'instances' field", field="instances")
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise RequestError(f"'instances' must be an array of objects, got {_describe(instances)}", field="instances")
    if not instances:
        raise RequestError("'instances' is empty: send at least one instance", field="instances")
    if len(instances) > max_instances:
        raise RequestError(
            f"'instances' holds {len(instances):,} instances; at most {max_instances:,} are accepted per request",
            field="instances",
        )
    return instances


def instances_to_columns(instances: Sequence[Any], inputs: Sequence[InputColumn]) -> dict[str, np.ndarray]:
    """Validated instances → one array per input (float64 with NaN, or object with str / None)."""
    names = [column.name for column in inputs]
    known = set(names)
    values: dict[str, list[Any]] = {name: [] for name in names}
    for index, instance in enumerate(instances):
        where = f"instances[{index}]"
        if not isinstance(instance, dict):
            raise RequestError(f"{where} must be an object of feature values, got {_describe(instance)}", field=where)
        extra = [key for key in instance if key not in known]
        if extra:
            raise RequestError(f"{where}.{extra[0]} is not an input of this model", field=f"{where}.{extra[0]}")
        for column in inputs:
            field = f"{where}.{column.name}"
            if column.name not in instance:
                raise RequestError(f"{field} is missing: every instance needs all {len(inputs)} inputs", field=field)
            values[column.name].append(convert_value(instance[column.name], column, field))
    columns: dict[str, np.ndarray] = {}
    for column in inputs:
        if column.type in STRING_TYPES:
            array = np.empty(len(instances), dtype=object)
            array[:] = values[column.name]
        else:
            array = np.asarray(values[column.name], dtype=np.float64)
        columns[column.name] = array
    return columns


def traffic_bucket(request_id: str | None, *, rng: random.Random | None = None) -> int:
    """0–99: from the request id (the same id always lands alike) or at random."""
    if request_id:
        digest = hashlib.blake2b(request_id.encode("utf-8"), digest_size=8).digest()
        return int.from_bytes(digest, "big") % BUCKETS
    return (rng or random).randrange(BUCKETS)


def choose_deployment(deployments: Sequence[DeploymentInfo], bucket: int) -> DeploymentInfo | None:
    """The deployment whose traffic range holds ``bucket`` (ranges laid out by id); None without traffic."""
    start = 0
    for deployment in sorted(deployments, key=lambda item: item.id):
        start += deployment.traffic_percent
        if bucket < start:
            return deployment
    return None


def _native(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def format_predictions(outputs: Mapping[str, np.ndarray], *, task: str, classes: Sequence[Any] | None) -> list[Any]:
    """Per instance: the value (regression) or ``{"class": ..., "probabilities": {class: p}}``."""
    predictions = outputs["prediction"]
    if task == "regression":
        return [float(value) for value in predictions]
    probabilities = np.asarray(outputs["probabilities"], dtype=np.float64)
    labels = [str(label) for label in classes or []]
    return [
        {"class": _native(label), "probabilities": dict(zip(labels, row.tolist(), strict=True))}
        for label, row in zip(predictions, probabilities, strict=True)
    ]
