"""Bad input is refused before a job starts, with the reason (issue item 9); good input gets a full plan.

Runs against the metadata database only (the stored schema and profile): SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy.orm import Session

from backend.datasets import create_dataset_version
from backend.datasets.profile import profile_frame
from backend.errors import InvalidInputError
from backend.jobs import list_jobs
from backend.training import (
    TrainingSpec,
    TuningSettings,
    infer_task,
    launch_training_job,
    minimum_rows,
    validate_training_spec,
)
from backend.training.plan import split_is_large_enough, split_sizes

ROWS = 200


def _frame(rows: int = ROWS) -> pl.DataFrame:
    start = datetime(2025, 1, 1)
    return pl.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in range(rows)],
            "signup": [start + timedelta(hours=i) for i in range(rows)],
            "tenure": [i % 37 for i in range(rows)],
            "charges": [20.0 + (i * 7.3) % 90 for i in range(rows)],
            "plan": [("basic", "standard", "premium")[i % 3] for i in range(rows)],
            "partner": [i % 2 == 0 for i in range(rows)],
            "country": ["NL"] * rows,
            "notes": pl.Series([None] * rows, dtype=pl.Float64),
            "churned": [int(i % 5 == 0) for i in range(rows)],
            "answer": [("yes", "no")[i % 2] for i in range(rows)],
            "amount": [float(i) * 1.5 for i in range(rows)],
            "visits": [i % 40 for i in range(rows)],
            "stars": [float(1 + i % 5) for i in range(rows)],
            "status": ["active"] * rows,
            "missing_target": pl.Series([None] * rows, dtype=pl.Int64),
            "half_labelled": [(i % 2 if i < 120 else None) for i in range(rows)],
        }
    )


def _add_dataset(session: Session, tmp_path: Path, name: str, frame: pl.DataFrame) -> None:
    path = tmp_path / f"{name}.parquet"
    frame.write_parquet(path)
    create_dataset_version(session, name=name, source_path=path)


@pytest.fixture
def datasets(session: Session, tmp_path: Path) -> Session:
    _add_dataset(session, tmp_path, "customers", _frame())
    _add_dataset(session, tmp_path, "tiny", _frame(50))
    _add_dataset(
        session,
        tmp_path,
        "only-ids",
        _frame().select("customer_id", "signup", "country", "notes", "churned"),
    )
    return session


def _spec(**overrides: object) -> TrainingSpec:
    values: dict[str, object] = {"dataset": "customers", "target": "churned"}
    values.update(overrides)
    return TrainingSpec.model_validate(values)


BAD_INPUTS = [
    ({"dataset": "nope"}, r"dataset 'nope' does not exist"),
    ({"dataset_version": 9}, r"dataset 'customers' has no version 9 \(latest is 1\)"),
    ({"target": "churn"}, r"unknown target column 'churn'; the dataset's columns are: customer_id, signup"),
    ({"target": "status"}, r"target column 'status' is constant \(every row is 'active'\): there is nothing to learn"),
    ({"target": "country", "task": "multiclass"}, r"target column 'country' is constant"),
    ({"target": "missing_target"}, r"target column 'missing_target' has no values"),
    ({"target": "signup"}, r"target column 'signup' holds dates/times"),
    ({"target": "plan", "task": "regression"}, r"regression needs a numeric target, but 'plan' is categorical"),
    ({"target": "partner", "task": "regression"}, r"regression needs a numeric target, but 'partner' is boolean"),
    ({"target": "plan", "task": "binary"}, r"binary classification needs a target with 2 classes; 'plan' has 3"),
    (
        {"target": "churned", "task": "multiclass"},
        r"multiclass classification needs at least 3 classes; 'churned' has 2",
    ),
    ({"target": "amount", "task": "multiclass"}, r"'amount' has 200 distinct values, more than the 100 classes"),
    ({"dataset": "tiny"}, r"too few rows for the split: 50 rows have a 'churned' value, .* needs at least 64"),
    ({"target": "half_labelled"}, None),
    (
        {"dataset": "only-ids"},
        r"no usable features: customer_id: identifier .*; signup: dates/times .*; country: constant",
    ),
    ({"features": []}, r"no usable features: the feature list is empty"),
    ({"features": ["tenure", "colour"]}, r"unknown feature column\(s\): colour"),
    ({"features": ["tenure", "churned"]}, r"the target 'churned' cannot also be a feature"),
    ({"features": ["tenure", "signup"]}, r"feature 'signup' cannot be used: dates/times"),
    ({"features": ["tenure", "tenure"]}, r"features listed twice: tenure"),
    ({"validation_fraction": 0.0}, r"the validation fraction must be between 0 and 1 \(got 0.0\)"),
    ({"test_fraction": 1.2}, r"the test fraction must be between 0 and 1"),
    ({"validation_fraction": 0.5, "test_fraction": 0.4}, r"leave less than 20% of the rows for training"),
    ({"seed": -1}, r"the seed must be between 0 and"),
    ({"hyperparameters": {"max_depth": 0}}, r"invalid xgboost hyper-parameter max_depth"),
    (
        {"framework": "torch", "hyperparameters": {"n_estimators": 5}},
        r"unknown torch hyper-parameter\(s\): n_estimators",
    ),
    ({"tuning": {"n_trials": 0}}, r"number of trials must be between 1 and"),
    ({"tuning": {"search_space": {"max_depth": {"type": "int", "low": 9, "high": 3}}}}, r"low \(9\) is above high"),
    ({"model_name": "my model"}, r"invalid model name 'my model'"),
]


def test_every_bad_input_is_refused_with_its_reason(datasets: Session) -> None:
    for overrides, message in BAD_INPUTS:
        if message is None:
            continue
        with pytest.raises(InvalidInputError, match=message):
            validate_training_spec(datasets, _spec(**overrides))


def test_rows_without_a_target_do_not_count_towards_the_split(datasets: Session) -> None:
    plan = validate_training_spec(datasets, _spec(target="half_labelled"))
    assert plan.rows == 120
    assert plan.split_rows == (84, 18, 18)
    assert plan.notes == ["80 rows without a 'half_labelled' value are left out"]


def test_refused_launch_creates_no_job_and_a_good_one_is_pinned(datasets: Session) -> None:
    with pytest.raises(InvalidInputError, match="is constant"):
        launch_training_job(datasets, spec={"dataset": "customers", "target": "status"})
    with pytest.raises(InvalidInputError, match="number of trials"):
        launch_training_job(
            datasets, spec={"dataset": "customers", "target": "churned", "tuning": {"n_trials": 0}}, tune=True
        )
    assert list_jobs(datasets).total == 0

    job = launch_training_job(datasets, spec={"dataset": "customers", "target": "churned", "framework": "torch"})
    assert job.kind == "train" and job.status == "queued"
    assert job.params["dataset_version"] == 1 and job.params["tuning"] is None
    tune = launch_training_job(datasets, spec={"dataset": "customers", "target": "plan"}, tune=True)
    assert tune.kind == "tune" and tune.params["tuning"]["n_trials"] == TuningSettings().n_trials


def test_default_plan_resolves_task_features_and_split(datasets: Session) -> None:
    plan = validate_training_spec(datasets, _spec())
    assert (plan.dataset, plan.dataset_version, plan.task, plan.num_classes) == ("customers", 1, "binary", 2)
    assert plan.feature_names == [
        "tenure",
        "charges",
        "plan",
        "partner",
        "answer",
        "amount",
        "visits",
        "stars",
        "half_labelled",
    ]
    assert plan.excluded == {
        "customer_id": "identifier (every value is unique)",
        "signup": "dates/times are not used directly; derive numeric features from them",
        "country": "constant",
        "notes": "no values",
        "status": "constant",
        "missing_target": "no values",
    }
    kinds = {feature.name: (feature.kind, feature.mlflow_type) for feature in plan.features}
    assert kinds["tenure"] == ("numeric", "long")
    assert kinds["charges"] == ("numeric", "double")
    assert kinds["plan"] == ("categorical", "string")
    assert kinds["partner"] == ("boolean", "boolean")
    # Missing values make an integer column a double in the signature (pandas holds it as float).
    assert kinds["half_labelled"] == ("numeric", "double")
    assert plan.split_rows == (140, 30, 30)
    assert plan.model_name == plan.experiment == "customers-churned"
    assert plan.hyperparameters["n_estimators"] == 300


def test_chosen_features_and_task_override(datasets: Session) -> None:
    plan = validate_training_spec(
        datasets, _spec(target="visits", task="regression", features=["customer_id", "plan"], model_name="visits")
    )
    assert plan.task == "regression" and plan.num_classes is None
    assert plan.feature_names == ["customer_id", "plan"]
    assert plan.excluded["tenure"] == "not selected"


@pytest.mark.parametrize(
    ("values", "task"),
    [
        ([0, 1, 1, 0], "binary"),
        ([True, False, True, True], "binary"),
        (["yes", "no", "no", "yes"], "binary"),
        (["a", "b", "c", "a"], "multiclass"),
        ([1, 2, 3, 4, 5, 1], "multiclass"),
        ([1.0, 2.0, 3.0, 1.0], "multiclass"),
        ([0.5, 1.5, 2.0, 3.0], "regression"),
        (list(range(11)), "regression"),
        ([i / 3 for i in range(40)], "regression"),
    ],
)
def test_task_is_inferred_from_the_target(values: list, task: str) -> None:
    column = profile_frame(pl.DataFrame({"target": values}))["columns"][0]
    assert infer_task(column) == task


def test_identifier_columns_are_recognised_by_name_and_cardinality(session: Session, tmp_path: Path) -> None:
    rows = 300
    frame = pl.DataFrame(
        {
            # Repeats (300 rows, 100 customers) but named like an identifier.
            "customerId": [f"C{i % 100:04d}" for i in range(rows)],
            # Few distinct codes: a useful categorical even though the name ends in _id.
            "region_id": [i % 4 for i in range(rows)],
            # Mostly unique free text.
            "comment": [f"note {i % 200}" for i in range(rows)],
            "y": [i % 2 for i in range(rows)],
        }
    )
    _add_dataset(session, tmp_path, "ids", frame)
    plan = validate_training_spec(session, TrainingSpec(dataset="ids", target="y"))
    assert plan.feature_names == ["region_id"]
    assert plan.excluded["customerId"] == "identifier (100 distinct values)"
    assert plan.excluded["comment"].startswith("mostly unique text (200 distinct values)")


@pytest.mark.parametrize(("validation", "test"), [(0.15, 0.15), (0.1, 0.1), (0.2, 0.3), (0.05, 0.05)])
def test_minimum_rows_is_the_exact_threshold(validation: float, test: float) -> None:
    needed = minimum_rows(validation_fraction=validation, test_fraction=test)
    assert split_is_large_enough(split_sizes(needed, validation_fraction=validation, test_fraction=test))
    assert not split_is_large_enough(split_sizes(needed - 1, validation_fraction=validation, test_fraction=test))
