"""Endpoint names, traffic arithmetic and the live state of deployments (no DB, no Triton)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backend.errors import InvalidInputError
from backend.serving import endpoints
from backend.serving.client import ModelState
from backend.serving.endpoints import DeploymentInfo, EndpointInfo, InputColumn
from backend.serving.errors import TritonUnavailableError


def test_endpoint_names() -> None:
    assert endpoints.validate_endpoint_name(" churn-v2 ") == "churn-v2"
    for bad in ["Churn", "churn_v2", "-churn", "churn-", "", "a" * 64, "churn.v2", "churn:predict"]:
        with pytest.raises(InvalidInputError):
            endpoints.validate_endpoint_name(bad)
    assert endpoints.suggest_endpoint_name("Churn_Model v2") == "churn-model-v2"
    assert endpoints.suggest_endpoint_name("___") == "endpoint"
    assert endpoints.validate_endpoint_name(endpoints.suggest_endpoint_name("x" * 300)) == "x" * 63


@pytest.mark.parametrize(
    ("shares", "total", "expected"),
    [
        ([100], 80, [80]),
        ([80, 20], 70, [56, 14]),
        ([1, 1, 1], 100, [34, 33, 33]),
        ([0, 0], 100, [50, 50]),
        ([50, 50], 0, [0, 0]),
        ([], 100, []),
        ([33, 33, 34], 99, [33, 33, 33]),
    ],
)
def test_rescaled_traffic_keeps_proportions_and_sums_exactly(
    shares: list[int], total: int, expected: list[int]
) -> None:
    result = endpoints.rescale_traffic(shares, total)
    assert result == expected and sum(result) == (total if shares else 0)


def test_traffic_split_validation() -> None:
    endpoints.validate_traffic({"a": 80, "b": 20})
    endpoints.validate_traffic({"a": 100, "b": 0})
    for bad in [{"a": 80, "b": 30}, {"a": -10, "b": 110}, {"a": 50.5, "b": 49.5}, {"a": True, "b": 99}]:
        with pytest.raises(InvalidInputError):
            endpoints.validate_traffic(bad)


def _deployment(
    id_: int, version: int, *, traffic: int = 100, state: str = "ready", alias: str | None = None, message: str = ""
) -> DeploymentInfo:
    return DeploymentInfo(
        id=id_, endpoint="e", model="m", version=version, alias=alias, traffic_percent=traffic, triton_name="m",
        framework="xgboost", task="binary", classes=[0, 1], inputs=(InputColumn("x", "double"),), example={"x": 1.0},
        state=state, message=message, updated_at=datetime.now(UTC),
    )  # fmt: skip


def _endpoint(*deployments: DeploymentInfo) -> EndpointInfo:
    now = datetime.now(UTC)
    return EndpointInfo(id=1, name="e", description="", created_at=now, updated_at=now, deployments=deployments)


class FakeTriton:
    def __init__(self, states: list[ModelState] | None):
        self.states = states

    def model_states(self, name: str | None = None) -> list[ModelState]:
        if self.states is None:
            raise TritonUnavailableError("down")
        return self.states


def test_live_states_follow_triton() -> None:
    info = _endpoint(
        _deployment(1, 1, traffic=50),
        _deployment(2, 2, traffic=30, state="loading"),
        _deployment(3, 3, traffic=20, state="failed", message="boom"),
        _deployment(4, 4, traffic=0),
    )
    triton = FakeTriton(
        [
            ModelState("m", 1, "READY", ""),
            ModelState("m", 2, "LOADING", ""),
            ModelState("m", 3, "UNAVAILABLE", "XGBoostError: bad file"),
            ModelState("m", 4, "UNAVAILABLE", "unloaded"),
        ]
    )
    live = endpoints.live_states(info, triton)  # type: ignore[arg-type]
    assert [(d.state, d.message) for d in live.deployments] == [
        ("ready", ""),
        ("loading", ""),
        ("failed", "XGBoostError: bad file"),
        ("failed", "not loaded in Triton (it was unloaded): deploy it again"),
    ]
    assert live.state == "failed"

    # Triton restarted and has not reloaded yet: loading, not failed.
    fresh = endpoints.live_states(_endpoint(_deployment(1, 1)), FakeTriton([]))  # type: ignore[arg-type]
    assert fresh.deployments[0].state == "loading"
    down = endpoints.live_states(_endpoint(_deployment(1, 1)), FakeTriton(None))  # type: ignore[arg-type]
    assert (down.state, down.deployments[0].message) == ("unavailable", "Triton is not reachable")


def test_endpoint_summary_properties() -> None:
    assert _endpoint().state == "empty" and _endpoint().inputs == () and _endpoint().primary is None
    info = _endpoint(_deployment(1, 1, traffic=20, alias="champion"), _deployment(2, 2, traffic=80))
    assert info.primary is not None and info.primary.id == 2
    assert info.deployment("m@champion").id == 1 and info.deployment("m/2").id == 2 and info.deployment(1).id == 1
    assert info.as_dict()["deployed_models"][0]["alias"] == "champion"
    assert info.as_dict()["inputs"] == [{"name": "x", "type": "double", "nullable": True}]
    assert InputColumn("n", "long").nullable is False and InputColumn("s", "string").nullable is True
