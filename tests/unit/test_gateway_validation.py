"""Request validation, traffic choice and prediction formatting of the gateway (pure functions)."""

from __future__ import annotations

import math
import random
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest

from backend.serving.endpoints import DeploymentInfo, InputColumn
from backend.serving.online import (
    RequestError,
    choose_deployment,
    format_predictions,
    instances_of,
    instances_to_columns,
    traffic_bucket,
)

INPUTS = (
    InputColumn("plan", "string"),
    InputColumn("tenure", "long"),
    InputColumn("charges", "double"),
    InputColumn("partner", "boolean"),
)
GOOD = {"plan": "basic", "tenure": 3, "charges": 80.5, "partner": True}


def deployment(id_: int, traffic: int) -> DeploymentInfo:
    return DeploymentInfo(
        id=id_, endpoint="e", model="m", version=id_, alias=None, traffic_percent=traffic, triton_name="m",
        framework="xgboost", task="binary", classes=[0, 1], inputs=INPUTS, example=None, state="ready", message="",
        updated_at=datetime.now(UTC),
    )  # fmt: skip


def refused(payload: object, max_instances: int = 10) -> RequestError:
    with pytest.raises(RequestError) as caught:
        instances_to_columns(instances_of(payload, max_instances=max_instances), INPUTS)
    return caught.value


def test_good_instances_become_typed_columns() -> None:
    columns = instances_to_columns(
        [GOOD, {"plan": None, "tenure": 4.0, "charges": None, "partner": False}, {**GOOD, "charges": math.nan}],
        INPUTS,
    )
    assert list(columns["plan"]) == ["basic", None, "basic"]
    assert columns["tenure"].dtype == np.float64 and list(columns["tenure"]) == [3.0, 4.0, 3.0]
    assert columns["charges"][0] == 80.5 and math.isnan(columns["charges"][1]) and math.isnan(columns["charges"][2])
    assert list(columns["partner"]) == [1.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        ({"instances": [{k: v for k, v in GOOD.items() if k != "tenure"}]}, "instances[0].tenure", "is missing"),
        ({"instances": [GOOD, {**GOOD, "tenure": "3"}]}, "instances[1].tenure", "must be an integer"),
        ({"instances": [{**GOOD, "tenure": 3.5}]}, "instances[0].tenure", "must be an integer"),
        ({"instances": [{**GOOD, "tenure": True}]}, "instances[0].tenure", "must be an integer"),
        ({"instances": [{**GOOD, "charges": "80"}]}, "instances[0].charges", "must be a number"),
        ({"instances": [{**GOOD, "plan": 1}]}, "instances[0].plan", "must be a string"),
        ({"instances": [{**GOOD, "partner": 1}]}, "instances[0].partner", "true or false"),
        ({"instances": [{**GOOD, "tenure": None}]}, "instances[0].tenure", "no missing values"),
        ({"instances": [{**GOOD, "tenure": math.nan}]}, "instances[0].tenure", "no missing values"),
        ({"instances": [{**GOOD, "partner": None}]}, "instances[0].partner", "must be a boolean"),
        ({"instances": [{**GOOD, "charges": math.inf}]}, "instances[0].charges", "finite"),
        ({"instances": [{**GOOD, "colour": "red"}]}, "instances[0].colour", "not an input"),
        ({"instances": [GOOD, "row"]}, "instances[1]", "must be an object"),
        ({"instances": []}, "instances", "empty"),
        ({"instances": [GOOD] * 11}, "instances", "at most 10"),
        ({"instances": GOOD}, "instances", "array"),
        ({}, "instances", "no 'instances'"),
        ({"instances": [GOOD], "parameters": {}}, "parameters", "unknown field"),
        ([GOOD], "body", "JSON object"),
    ],
)
def test_bad_requests_name_the_field(payload: object, field: str, words: str) -> None:
    error = refused(payload)
    assert error.field == field
    assert words in str(error)


def test_traffic_buckets_are_sticky_and_follow_the_weights() -> None:
    assert traffic_bucket("customer-7") == traffic_bucket("customer-7")
    assert len({traffic_bucket(f"id-{i}") for i in range(2000)}) == 100
    deployments = [deployment(1, 80), deployment(2, 20)]
    assert choose_deployment(deployments, 79).id == 1 and choose_deployment(deployments, 80).id == 2
    rng = random.Random(3)
    counts = Counter(choose_deployment(deployments, traffic_bucket(None, rng=rng)).id for _ in range(10_000))
    assert abs(counts[1] - 8000) < 250
    assert choose_deployment([deployment(1, 0), deployment(2, 100)], 0).id == 2
    assert choose_deployment([], 0) is None and choose_deployment([deployment(1, 0)], 5) is None


def test_predictions_per_instance() -> None:
    classified = format_predictions(
        {"prediction": np.array([1, 0]), "probabilities": np.array([[0.25, 0.75], [0.9, 0.1]], dtype=np.float32)},
        task="binary",
        classes=[0, 1],
    )
    assert classified == [
        {"class": 1, "probabilities": {"0": 0.25, "1": 0.75}},
        {"class": 0, "probabilities": {"0": pytest.approx(0.9), "1": pytest.approx(0.1)}},
    ]
    assert type(classified[0]["class"]) is int
    texts = format_predictions(
        {"prediction": np.array(["gold"], dtype=object), "probabilities": np.array([[0.2, 0.8]])},
        task="multiclass",
        classes=["basic", "gold"],
    )
    assert texts == [{"class": "gold", "probabilities": {"basic": 0.2, "gold": 0.8}}]
    assert format_predictions({"prediction": np.array([1.5, 2.0])}, task="regression", classes=None) == [1.5, 2.0]
