"""``validate_training_spec``: every check a job can fail on that is knowable before it starts.

It reads only the metadata database (the dataset version's stored schema and profile), never the
data file, so the portal, the CLI and the REST API can call it on every submit.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.config import Settings, get_settings
from backend.errors import InvalidInputError
from backend.models import Dataset, DatasetVersion
from backend.training.spec import (
    SearchRange,
    Task,
    TrainingSpec,
    default_model_name,
    validate_hyperparameters,
    validate_model_name,
    validate_tuning_settings,
)

MIN_TRAIN_ROWS = 20
MIN_EVALUATION_ROWS = 10
MIN_TRAIN_FRACTION = 0.2
MAX_CLASSES = 100
# A numeric target with at most this many distinct whole-number values is taken as class labels.
MAX_AUTO_CLASSES = 10
# A text column with more distinct values than this and than half its rows is an identifier or free text.
MAX_TEXT_CATEGORIES = 50
MAX_NAME_LENGTH = 200
_ID_NAME = re.compile(r"(^|[^A-Za-z0-9])(id|uuid|guid)$|[a-z0-9](Id|ID|Uuid|UUID)$", re.IGNORECASE)
_TEXT_DTYPES = ("String", "Utf8", "Categorical", "Enum")

FeatureKind = Literal["numeric", "boolean", "categorical"]
MlflowType = Literal["long", "double", "boolean", "string"]


@dataclass(frozen=True)
class FeatureColumn:
    name: str
    kind: FeatureKind
    dtype: str
    # The column's type in the logged model's signature.
    mlflow_type: MlflowType


@dataclass(frozen=True)
class TrainingPlan:
    """A validated spec with everything resolved: the pinned dataset version, task, features, split."""

    spec: TrainingSpec
    dataset: str
    dataset_version: int
    dataset_version_id: int
    content_hash: str
    data_path: Path
    target: str
    target_dtype: str
    task: Task
    # Classification: how many classes the target has; None for regression.
    num_classes: int | None
    features: list[FeatureColumn]
    # Columns left out of the default feature set, with the reason (shown on the launch form).
    excluded: dict[str, str]
    # Rows with a target value, and how they split into (train, validation, test).
    rows: int
    split_rows: tuple[int, int, int]
    hyperparameters: dict[str, Any]
    search_space: dict[str, SearchRange] | None
    model_name: str
    experiment: str
    notes: list[str] = field(default_factory=list)

    @property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.features]

    @property
    def dataset_ref(self) -> str:
        return f"{self.dataset}:{self.dataset_version}"


def split_sizes(rows: int, *, validation_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    test = round(rows * test_fraction)
    validation = round(rows * validation_fraction)
    return rows - validation - test, validation, test


def split_is_large_enough(sizes: tuple[int, int, int]) -> bool:
    train, validation, test = sizes
    return train >= MIN_TRAIN_ROWS and validation >= MIN_EVALUATION_ROWS and test >= MIN_EVALUATION_ROWS


def minimum_rows(*, validation_fraction: float, test_fraction: float) -> int:
    """The fewest rows with a target value that give every part of the split its minimum."""
    rows = MIN_TRAIN_ROWS + 2 * MIN_EVALUATION_ROWS
    while not split_is_large_enough(
        split_sizes(rows, validation_fraction=validation_fraction, test_fraction=test_fraction)
    ):
        rows += 1
    return rows


def _non_null_distinct(column: dict[str, Any]) -> int:
    # The stored profile counts a missing value as one more distinct value.
    return int(column["distinct"]) - (1 if column["nulls"] else 0)


def _is_integer_dtype(dtype: str) -> bool:
    return dtype.startswith(("Int", "UInt"))


def _is_text_dtype(dtype: str) -> bool:
    return dtype.startswith(_TEXT_DTYPES)


def _observed_values(column: dict[str, Any]) -> list[Any] | None:
    """All distinct non-null values when the profile kept them all, else None."""
    values = [item["value"] for item in column.get("top_values") or [] if item["value"] is not None]
    return values if len(values) == _non_null_distinct(column) else None


def infer_task(column: dict[str, Any]) -> Task:
    """Text, boolean and few-whole-number targets are classification; other numbers are regression."""
    distinct = _non_null_distinct(column)
    kind, dtype = column["kind"], column["dtype"]
    if kind == "numeric":
        if distinct > MAX_AUTO_CLASSES:
            return "regression"
        if not _is_integer_dtype(dtype):
            values = _observed_values(column)
            if values is None or any(not float(value).is_integer() for value in values):
                return "regression"
    return "binary" if distinct == 2 else "multiclass"


def _check_target(column: dict[str, Any], requested: str, rows: int) -> tuple[Task, int | None]:
    name, kind = column["name"], column["kind"]
    if column["nulls"] >= rows:
        raise InvalidInputError(f"target column {name!r} has no values")
    distinct = _non_null_distinct(column)
    if distinct <= 1:
        values = _observed_values(column)
        shown = f" (every row is {values[0]!r})" if values else ""
        raise InvalidInputError(f"target column {name!r} is constant{shown}: there is nothing to learn")
    if kind == "datetime":
        raise InvalidInputError(f"target column {name!r} holds dates/times; choose a numeric or categorical target")
    if kind not in ("numeric", "boolean") and not _is_text_dtype(column["dtype"]):
        raise InvalidInputError(f"target column {name!r} has the unsupported type {column['dtype']}")
    task: Task = infer_task(column) if requested == "auto" else requested  # type: ignore[assignment]
    if task == "regression":
        if kind != "numeric":
            raise InvalidInputError(
                f"regression needs a numeric target, but {name!r} is {kind} ({column['dtype']}); "
                "choose classification or a numeric target"
            )
        return task, None
    if task == "binary" and distinct != 2:
        raise InvalidInputError(f"binary classification needs a target with 2 classes; {name!r} has {distinct}")
    if task == "multiclass" and distinct < 3:
        raise InvalidInputError(
            f"multiclass classification needs at least 3 classes; {name!r} has {distinct} (use binary)"
        )
    if distinct > MAX_CLASSES:
        raise InvalidInputError(
            f"target column {name!r} has {distinct} distinct values, more than the {MAX_CLASSES} classes "
            "a classifier takes; use regression for a numeric target"
        )
    return task, distinct


def _mlflow_type(column: dict[str, Any]) -> MlflowType:
    if column["kind"] == "boolean":
        return "boolean"
    if column["kind"] == "categorical":
        return "string"
    # pandas holds an integer column with missing values as floats, and MLflow refuses NaN as long.
    return "long" if _is_integer_dtype(column["dtype"]) and not column["nulls"] else "double"


def _feature(column: dict[str, Any]) -> FeatureColumn:
    kind: FeatureKind = "categorical" if column["kind"] == "categorical" else column["kind"]
    return FeatureColumn(name=column["name"], kind=kind, dtype=column["dtype"], mlflow_type=_mlflow_type(column))


def _unusable_reason(column: dict[str, Any]) -> str | None:
    """Why a column cannot be a feature at all (even when asked for by name), or None."""
    if column["kind"] == "datetime":
        return "dates/times are not used directly; derive numeric features from them"
    if column["kind"] == "categorical" and not _is_text_dtype(column["dtype"]):
        return f"unsupported type {column['dtype']}"
    return None


def _default_exclusion(column: dict[str, Any], rows: int) -> str | None:
    reason = _unusable_reason(column)
    if reason:
        return reason
    present = rows - int(column["nulls"])
    distinct = _non_null_distinct(column)
    if present <= 0:
        return "no values"
    if distinct <= 1:
        return "constant"
    is_text = column["kind"] == "categorical"
    if is_text and distinct == present:
        return "identifier (every value is unique)"
    if (
        (is_text or _is_integer_dtype(column["dtype"]))
        and _ID_NAME.search(column["name"])
        and distinct > MAX_TEXT_CATEGORIES
    ):
        return f"identifier ({distinct:,} distinct values)"
    if is_text and distinct > MAX_TEXT_CATEGORIES and distinct > present / 2:
        return f"mostly unique text ({distinct:,} distinct values): an identifier or free text"
    return None


def _select_features(
    columns: dict[str, dict[str, Any]], target: str, requested: list[str] | None, rows: int
) -> tuple[list[FeatureColumn], dict[str, str]]:
    if requested is None:
        excluded: dict[str, str] = {}
        features = []
        for name, column in columns.items():
            if name == target:
                continue
            reason = _default_exclusion(column, rows)
            if reason:
                excluded[name] = reason
            else:
                features.append(_feature(column))
        if not features:
            details = (
                "; ".join(f"{name}: {reason}" for name, reason in excluded.items()) or "the target is the only column"
            )
            raise InvalidInputError(f"no usable features: {details}")
        return features, excluded
    if not requested:
        raise InvalidInputError("no usable features: the feature list is empty")
    duplicates = sorted({name for name in requested if requested.count(name) > 1})
    if duplicates:
        raise InvalidInputError(f"features listed twice: {', '.join(duplicates)}")
    unknown = [name for name in requested if name not in columns]
    if unknown:
        raise InvalidInputError(f"unknown feature column(s): {', '.join(unknown)}")
    if target in requested:
        raise InvalidInputError(f"the target {target!r} cannot also be a feature")
    for name in requested:
        reason = _unusable_reason(columns[name])
        if reason:
            raise InvalidInputError(f"feature {name!r} cannot be used: {reason}")
    excluded = {name: "not selected" for name in columns if name not in requested and name != target}
    return [_feature(columns[name]) for name in requested], excluded


def _check_fractions(spec: TrainingSpec) -> None:
    for label, value in (("validation", spec.validation_fraction), ("test", spec.test_fraction)):
        if not (math.isfinite(value) and 0 < value < 1):
            raise InvalidInputError(f"the {label} fraction must be between 0 and 1 (got {value})")
    if 1.0 - spec.validation_fraction - spec.test_fraction < MIN_TRAIN_FRACTION:
        raise InvalidInputError(
            f"the validation ({spec.validation_fraction:g}) and test ({spec.test_fraction:g}) fractions leave less "
            f"than {MIN_TRAIN_FRACTION:.0%} of the rows for training"
        )


def _find_version(session: Session, name: str, version: int | None) -> DatasetVersion:
    dataset = session.scalar(select(Dataset).where(Dataset.name == name))
    if dataset is None:
        raise InvalidInputError(f"dataset {name!r} does not exist")
    query = select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id)
    if version is None:
        row = session.scalar(query.order_by(DatasetVersion.version.desc()).limit(1))
        if row is None:
            raise InvalidInputError(f"dataset {name!r} has no versions")
        return row
    row = session.scalar(query.where(DatasetVersion.version == version))
    if row is None:
        latest = max((v.version for v in dataset.versions), default=None)
        hint = f" (latest is {latest})" if latest else ""
        raise InvalidInputError(f"dataset {name!r} has no version {version}{hint}")
    return row


def validate_training_spec(session: Session, spec: TrainingSpec, *, settings: Settings | None = None) -> TrainingPlan:
    """Refuse a spec that cannot train, with the reason; otherwise the resolved plan the job will follow."""
    settings = settings or get_settings()
    if not spec.dataset.strip():
        raise InvalidInputError("choose a dataset")
    if not spec.target.strip():
        raise InvalidInputError("choose a target column")
    if not 0 <= spec.seed < 2**32:
        raise InvalidInputError(f"the seed must be between 0 and {2**32 - 1} (got {spec.seed})")
    _check_fractions(spec)
    hyperparameters = validate_hyperparameters(spec.framework, spec.hyperparameters)
    search_space = validate_tuning_settings(spec.framework, spec.tuning) if spec.tuning is not None else None
    model_name = validate_model_name(spec.model_name or default_model_name(spec.dataset, spec.target))
    experiment = (spec.experiment or model_name).strip()
    if not experiment or len(experiment) > MAX_NAME_LENGTH:
        raise InvalidInputError(f"the experiment name must be 1-{MAX_NAME_LENGTH} characters")

    version = _find_version(session, spec.dataset, spec.dataset_version)
    columns = {column["name"]: column for column in version.profile_json["columns"]}
    total_rows = int(version.row_count)
    if spec.target not in columns:
        shown = ", ".join(list(columns)[:30]) + (", …" if len(columns) > 30 else "")
        raise InvalidInputError(f"unknown target column {spec.target!r}; the dataset's columns are: {shown}")
    target = columns[spec.target]
    task, num_classes = _check_target(target, spec.task, total_rows)
    features, excluded = _select_features(columns, spec.target, spec.features, total_rows)

    rows = total_rows - int(target["nulls"])
    sizes = split_sizes(rows, validation_fraction=spec.validation_fraction, test_fraction=spec.test_fraction)
    if not split_is_large_enough(sizes):
        needed = minimum_rows(validation_fraction=spec.validation_fraction, test_fraction=spec.test_fraction)
        raise InvalidInputError(
            f"too few rows for the split: {rows} rows have a {spec.target!r} value, and a "
            f"{1 - spec.validation_fraction - spec.test_fraction:.0%}/{spec.validation_fraction:.0%}/"
            f"{spec.test_fraction:.0%} train/validation/test split needs at least {needed} "
            f"(≥ {MIN_TRAIN_ROWS} to train, ≥ {MIN_EVALUATION_ROWS} each to validate and test)"
        )
    notes = []
    if target["nulls"]:
        notes.append(f"{target['nulls']} rows without a {spec.target!r} value are left out")
    return TrainingPlan(
        spec=spec,
        dataset=spec.dataset,
        dataset_version=version.version,
        dataset_version_id=version.id,
        content_hash=version.content_hash,
        data_path=settings.resolved_home / version.storage_path,
        target=spec.target,
        target_dtype=target["dtype"],
        task=task,
        num_classes=num_classes,
        features=features,
        excluded=excluded,
        rows=rows,
        split_rows=sizes,
        hyperparameters=hyperparameters,
        search_space=search_space,
        model_name=model_name,
        experiment=experiment,
        notes=notes,
    )
