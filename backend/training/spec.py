"""What a training or tuning job is asked to do, and the checks on it that need no data."""

from __future__ import annotations

import math
import re
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backend.errors import InvalidInputError

Framework = Literal["xgboost", "torch"]
TaskChoice = Literal["auto", "binary", "multiclass", "regression"]
Task = Literal["binary", "multiclass", "regression"]
FRAMEWORKS: tuple[str, ...] = get_args(Framework)
TASKS: tuple[str, ...] = get_args(Task)

MAX_TRIALS = 10_000
MAX_CHOICES = 100
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class XGBoostHyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_estimators: int = Field(300, ge=1, le=10_000, description="boosting rounds at most")
    learning_rate: float = Field(0.1, gt=0, le=1)
    max_depth: int = Field(6, ge=1, le=20)
    subsample: float = Field(1.0, gt=0, le=1)
    colsample_bytree: float = Field(1.0, gt=0, le=1)
    min_child_weight: float = Field(1.0, ge=0, le=1000)
    reg_lambda: float = Field(1.0, ge=0, le=1000)
    reg_alpha: float = Field(0.0, ge=0, le=1000)
    early_stopping_rounds: int = Field(20, ge=1, le=1000, description="rounds without validation improvement")


class TorchHyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hidden_size: int = Field(64, ge=1, le=4096)
    num_layers: int = Field(2, ge=1, le=8, description="hidden layers")
    dropout: float = Field(0.1, ge=0, lt=1)
    learning_rate: float = Field(1e-3, gt=0, le=1)
    weight_decay: float = Field(1e-5, ge=0, le=1)
    batch_size: int = Field(256, ge=1, le=65_536)
    max_epochs: int = Field(100, ge=1, le=10_000)
    patience: int = Field(10, ge=1, le=1000, description="epochs without validation improvement")


HYPERPARAMETER_MODELS: dict[str, type[BaseModel]] = {"xgboost": XGBoostHyperparameters, "torch": TorchHyperparameters}


class SearchRange(BaseModel):
    """One hyper-parameter's range: ``int``/``float`` between ``low`` and ``high``, or ``categorical`` choices."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None


class TuningSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_trials: int = 20
    timeout_seconds: float | None = None
    # None: default_search_space(framework).
    search_space: dict[str, SearchRange] | None = None
    pruning: bool = True


class TrainingSpec(BaseModel):
    """A training job's parameters, as submitted (the job's ``params`` are ``spec.model_dump()``)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    # None: the latest version when the job is validated (the plan pins it).
    dataset_version: int | None = None
    target: str
    framework: Framework = "xgboost"
    task: TaskChoice = "auto"
    # None: every column except the target, identifiers, datetimes, constant and empty columns.
    features: list[str] | None = None
    seed: int = 42
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    # None: "<dataset>-<target>".
    model_name: str | None = None
    register_model: bool = True
    # None: the model name.
    experiment: str | None = None
    # Used by tuning jobs; None there means TuningSettings().
    tuning: TuningSettings | None = None


def _describe(error: ValidationError, prefix: str = "") -> str:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append(f"{prefix}{where}: {message}" if where else f"{prefix}{message}")
    return "; ".join(problems)


def parse_training_spec(data: dict[str, Any] | TrainingSpec) -> TrainingSpec:
    """A spec from JSON-like data (a form, the CLI, a job's params), refused with a readable reason."""
    if isinstance(data, TrainingSpec):
        return data
    try:
        return TrainingSpec.model_validate(data)
    except ValidationError as error:
        raise InvalidInputError(f"invalid training request: {_describe(error)}") from None


def validate_hyperparameters(framework: str, values: dict[str, Any]) -> dict[str, Any]:
    """All hyper-parameters of ``framework`` (defaults filled in); unknown names and bad values refused."""
    model = _hyperparameter_model(framework)
    unknown = sorted(set(values) - set(model.model_fields))
    if unknown:
        raise InvalidInputError(
            f"unknown {framework} hyper-parameter(s): {', '.join(unknown)}; known: {', '.join(model.model_fields)}"
        )
    try:
        return model.model_validate(values).model_dump()
    except ValidationError as error:
        raise InvalidInputError(f"invalid {framework} hyper-parameter {_describe(error)}") from None


def _hyperparameter_model(framework: str) -> type[BaseModel]:
    try:
        return HYPERPARAMETER_MODELS[framework]
    except KeyError:
        raise InvalidInputError(f"unknown framework {framework!r}; use one of {', '.join(FRAMEWORKS)}") from None


def default_hyperparameters(framework: str) -> dict[str, Any]:
    return _hyperparameter_model(framework)().model_dump()


def default_search_space(framework: str) -> dict[str, SearchRange]:
    _hyperparameter_model(framework)
    if framework == "xgboost":
        return {
            "max_depth": SearchRange(type="int", low=2, high=10),
            "learning_rate": SearchRange(type="float", low=0.01, high=0.3, log=True),
            "n_estimators": SearchRange(type="int", low=50, high=500, log=True),
            "subsample": SearchRange(type="float", low=0.5, high=1.0),
            "colsample_bytree": SearchRange(type="float", low=0.5, high=1.0),
            "min_child_weight": SearchRange(type="float", low=0.5, high=20.0, log=True),
        }
    return {
        "hidden_size": SearchRange(type="int", low=16, high=256, log=True),
        "num_layers": SearchRange(type="int", low=1, high=3),
        "learning_rate": SearchRange(type="float", low=1e-4, high=1e-2, log=True),
        "dropout": SearchRange(type="float", low=0.0, high=0.5),
        "weight_decay": SearchRange(type="float", low=1e-6, high=1e-2, log=True),
        "batch_size": SearchRange(type="categorical", choices=[64, 128, 256, 512]),
    }


def _is_int_field(model: type[BaseModel], name: str) -> bool:
    return model.model_fields[name].annotation is int


def validate_search_space(framework: str, space: dict[str, SearchRange | dict[str, Any]]) -> dict[str, SearchRange]:
    """Each range names a known hyper-parameter, is well formed, and only holds values the trainer accepts."""
    model = _hyperparameter_model(framework)
    if not space:
        raise InvalidInputError("the search space is empty: give at least one hyper-parameter range")
    validated: dict[str, SearchRange] = {}
    for name, raw in space.items():
        if name not in model.model_fields:
            raise InvalidInputError(
                f"search space: unknown {framework} hyper-parameter {name!r}; known: {', '.join(model.model_fields)}"
            )
        try:
            item = raw if isinstance(raw, SearchRange) else SearchRange.model_validate(raw)
        except ValidationError as error:
            raise InvalidInputError(f"search space for {name}: {_describe(error)}") from None
        validated[name] = _validate_range(framework, model, name, item)
    return validated


def _validate_range(framework: str, model: type[BaseModel], name: str, item: SearchRange) -> SearchRange:
    where = f"search space for {name}"
    if item.type == "categorical":
        if not item.choices:
            raise InvalidInputError(f"{where}: a categorical range needs at least one choice")
        if len(item.choices) > MAX_CHOICES:
            raise InvalidInputError(f"{where}: at most {MAX_CHOICES} choices")
        if item.low is not None or item.high is not None or item.log:
            raise InvalidInputError(f"{where}: a categorical range takes choices, not low/high/log")
        for choice in item.choices:
            _check_value(framework, name, choice, where)
        return item
    if item.choices is not None:
        raise InvalidInputError(f"{where}: an {item.type} range takes low and high, not choices")
    if item.low is None or item.high is None:
        raise InvalidInputError(f"{where}: an {item.type} range needs both low and high")
    if not (math.isfinite(item.low) and math.isfinite(item.high)):
        raise InvalidInputError(f"{where}: low and high must be finite numbers")
    if item.low > item.high:
        raise InvalidInputError(f"{where}: low ({item.low:g}) is above high ({item.high:g})")
    if item.log and item.low <= 0:
        raise InvalidInputError(f"{where}: a log-scaled range needs low > 0 (got {item.low:g})")
    if _is_int_field(model, name):
        if item.type != "int":
            raise InvalidInputError(f"{where}: {name} is a whole number; use an int range")
        if item.low != int(item.low) or item.high != int(item.high):
            raise InvalidInputError(f"{where}: an int range needs whole-number bounds")
        item = item.model_copy(update={"low": int(item.low), "high": int(item.high)})
    for bound in (item.low, item.high):
        _check_value(framework, name, bound, where)
    return item


def _check_value(framework: str, name: str, value: Any, where: str) -> None:
    try:
        validate_hyperparameters(framework, {name: value})
    except InvalidInputError as error:
        raise InvalidInputError(f"{where}: {value!r} is not allowed ({error})") from None


def validate_tuning_settings(framework: str, tuning: TuningSettings) -> dict[str, SearchRange]:
    """The search space to use (the default when none is given); bad trial counts and timeouts refused."""
    if not 1 <= tuning.n_trials <= MAX_TRIALS:
        raise InvalidInputError(f"number of trials must be between 1 and {MAX_TRIALS} (got {tuning.n_trials})")
    if tuning.timeout_seconds is not None and not (
        math.isfinite(tuning.timeout_seconds) and tuning.timeout_seconds > 0
    ):
        raise InvalidInputError(
            f"the tuning timeout must be a positive number of seconds (got {tuning.timeout_seconds})"
        )
    if tuning.search_space is None:
        return default_search_space(framework)
    return validate_search_space(framework, tuning.search_space)


def validate_model_name(name: str) -> str:
    if not _MODEL_NAME.match(name):
        raise InvalidInputError(
            f"invalid model name {name!r}: use 1-200 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def default_model_name(dataset: str, target: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{dataset}-{target}").strip("-._")
    return slug[:200] or "model"
