"""Training specs without data: hyper-parameters, search spaces, tuning settings, names."""

from __future__ import annotations

import pytest

from backend.errors import InvalidInputError
from backend.training import (
    FRAMEWORKS,
    SearchRange,
    TrainingSpec,
    TuningSettings,
    default_hyperparameters,
    default_model_name,
    default_search_space,
    parse_training_spec,
    validate_hyperparameters,
    validate_search_space,
    validate_tuning_settings,
)
from backend.training.spec import validate_model_name


def test_parse_fills_defaults_and_refuses_unknown_fields_readably() -> None:
    spec = parse_training_spec({"dataset": "churn", "target": "churned"})
    assert spec == TrainingSpec(dataset="churn", target="churned")
    assert spec.framework == "xgboost" and spec.task == "auto" and spec.features is None
    with pytest.raises(InvalidInputError, match=r"invalid training request: colour: unknown field"):
        parse_training_spec({"dataset": "churn", "target": "churned", "colour": "red"})
    with pytest.raises(InvalidInputError, match=r"framework: Input should be 'xgboost' or 'torch'"):
        parse_training_spec({"dataset": "churn", "target": "churned", "framework": "sklearn"})


def test_spec_survives_a_json_round_trip_as_job_params() -> None:
    spec = TrainingSpec(
        dataset="churn",
        target="churned",
        framework="torch",
        hyperparameters={"hidden_size": 32},
        tuning=TuningSettings(n_trials=3, search_space={"dropout": SearchRange(type="float", low=0.0, high=0.3)}),
    )
    assert parse_training_spec(spec.model_dump(mode="json")) == spec


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_hyperparameters_get_defaults_filled_in(framework: str) -> None:
    assert validate_hyperparameters(framework, {}) == default_hyperparameters(framework)


@pytest.mark.parametrize(
    ("framework", "values", "message"),
    [
        ("xgboost", {"max_depht": 3}, r"unknown xgboost hyper-parameter\(s\): max_depht; known: n_estimators"),
        ("xgboost", {"max_depth": 0}, r"max_depth: Input should be greater than or equal to 1"),
        ("xgboost", {"learning_rate": -0.1}, r"learning_rate: Input should be greater than 0"),
        ("xgboost", {"subsample": 1.5}, r"subsample: Input should be less than or equal to 1"),
        ("xgboost", {"n_estimators": 2.5}, r"n_estimators: Input should be a valid integer"),
        ("torch", {"dropout": 1.0}, r"dropout: Input should be less than 1"),
        ("torch", {"batch_size": 0}, r"batch_size: Input should be greater than or equal to 1"),
        ("torch", {"max_depth": 3}, r"unknown torch hyper-parameter\(s\): max_depth"),
    ],
)
def test_invalid_hyperparameters_are_refused(framework: str, values: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        validate_hyperparameters(framework, values)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_default_search_space_is_valid(framework: str) -> None:
    space = default_search_space(framework)
    assert validate_search_space(framework, space) == space
    assert validate_tuning_settings(framework, TuningSettings()) == space


def test_default_search_spaces_cover_the_usual_knobs() -> None:
    assert {"max_depth", "learning_rate", "n_estimators", "subsample", "colsample_bytree", "min_child_weight"} <= set(
        default_search_space("xgboost")
    )
    torch_space = default_search_space("torch")
    assert {"hidden_size", "num_layers", "learning_rate", "dropout", "weight_decay", "batch_size"} <= set(torch_space)
    assert torch_space["learning_rate"].log


@pytest.mark.parametrize(
    ("framework", "space", "message"),
    [
        ("xgboost", {}, r"the search space is empty"),
        ("xgboost", {"depth": {"type": "int", "low": 1, "high": 3}}, r"unknown xgboost hyper-parameter 'depth'"),
        ("xgboost", {"max_depth": {"type": "int", "low": 8, "high": 2}}, r"max_depth: low \(8\) is above high \(2\)"),
        ("xgboost", {"learning_rate": {"type": "float", "low": 0, "high": 0.3, "log": True}}, r"log-scaled .* low > 0"),
        ("xgboost", {"max_depth": {"type": "float", "low": 1, "high": 3}}, r"max_depth is a whole number"),
        ("xgboost", {"max_depth": {"type": "int", "low": 1.5, "high": 3}}, r"whole-number bounds"),
        (
            "xgboost",
            {"max_depth": {"type": "int", "low": 1, "high": 50}},
            r"50 is not allowed .*less than or equal to 20",
        ),
        ("xgboost", {"subsample": {"type": "float", "low": 0.5}}, r"needs both low and high"),
        ("xgboost", {"subsample": {"type": "float", "low": 0.5, "high": 1, "step": 0.1}}, r"step: unknown field"),
        ("torch", {"batch_size": {"type": "categorical", "choices": []}}, r"at least one choice"),
        ("torch", {"batch_size": {"type": "categorical", "choices": [64, -1]}}, r"-1 is not allowed"),
        ("torch", {"batch_size": {"type": "categorical", "choices": [64], "low": 1}}, r"takes choices, not low/high"),
        ("torch", {"dropout": {"type": "float", "low": 0.1, "high": 0.2, "choices": [0.1]}}, r"not choices"),
        ("torch", {"dropout": {"type": "float", "low": 0.1, "high": float("inf")}}, r"finite numbers"),
    ],
)
def test_invalid_search_spaces_are_refused(framework: str, space: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        validate_search_space(framework, space)


def test_int_ranges_are_normalised_to_ints() -> None:
    space = validate_search_space("xgboost", {"max_depth": {"type": "int", "low": 2.0, "high": 4.0}})
    assert space["max_depth"].low == 2 and isinstance(space["max_depth"].low, int)


@pytest.mark.parametrize(
    ("tuning", "message"),
    [
        (TuningSettings(n_trials=0), r"number of trials must be between 1 and"),
        (TuningSettings(n_trials=-3), r"number of trials must be between 1 and"),
        (TuningSettings(timeout_seconds=0), r"timeout must be a positive number of seconds"),
        (TuningSettings(timeout_seconds=-5), r"timeout must be a positive number of seconds"),
    ],
)
def test_invalid_tuning_settings_are_refused(tuning: TuningSettings, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        validate_tuning_settings("xgboost", tuning)


def test_model_names() -> None:
    assert default_model_name("churn", "churned") == "churn-churned"
    assert default_model_name("sales 2025", "net revenue (€)") == "sales-2025-net-revenue"
    assert validate_model_name("churn_model.v2") == "churn_model.v2"
    for bad in ("", "-leading", "has space", "a/b", "x" * 201):
        with pytest.raises(InvalidInputError, match="invalid model name"):
            validate_model_name(bad)
