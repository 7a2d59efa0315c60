"""Model references, aliases, comparison and the model card's Markdown (no MLflow)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backend import registry
from backend.errors import InvalidInputError
from backend.registry import ModelCard, ModelRef, SignatureColumn


def test_model_references() -> None:
    assert registry.parse_model_ref("churn-churned@champion") == ModelRef("churn-churned", alias="champion")
    assert registry.parse_model_ref("churn-churned/3") == ModelRef("churn-churned", version=3)
    assert registry.parse_model_ref(" churn-churned ") == ModelRef("churn-churned")
    assert registry.parse_model_ref("team/churn/2") == ModelRef("team/churn", version=2)
    assert str(ModelRef("m", alias="challenger")) == "m@challenger" and str(ModelRef("m", version=2)) == "m/2"
    for bad in ["", "m/0", "m@", "m@v2", "m@latest", "m@has space"]:
        with pytest.raises(InvalidInputError):
            registry.parse_model_ref(bad)


def test_alias_names() -> None:
    assert registry.validate_alias("champion") == "champion"
    assert registry.validate_alias("Canary_2-b") == "Canary_2-b"
    for bad in ["2nd", "v3", "V10", "latest", "a b", "", "x" * 65]:
        with pytest.raises(InvalidInputError):
            registry.validate_alias(bad)


def test_metric_comparison_knows_which_side_is_better() -> None:
    rows = {row.metric: row for row in registry.compare_metrics(
        {"test_roc_auc": 0.8, "test_log_loss": 0.40, "iterations": 10.0},
        {"test_roc_auc": 0.9, "test_log_loss": 0.45, "validation_rmse": 3.0},
    )}  # fmt: skip
    assert rows["test_roc_auc"].better == "b" and rows["test_roc_auc"].difference == pytest.approx(0.1)
    assert rows["test_log_loss"].better == "a"
    assert rows["iterations"].better is None and rows["iterations"].b is None
    assert rows["validation_rmse"].difference is None


def test_parameter_and_signature_differences() -> None:
    params = registry.compare_values({"lr": "0.1", "depth": "3"}, {"lr": "0.2", "depth": "3", "epochs": "8"},
                                     only_differences=True)  # fmt: skip
    assert [(p.name, p.a, p.b) for p in params] == [("epochs", None, "8"), ("lr", "0.1", "0.2")]
    assert len(registry.compare_values({"a": "1"}, {"a": "1"}, only_differences=False)) == 1

    output = (SignatureColumn("prediction", "long"),)
    a = ((SignatureColumn("age", "long"), SignatureColumn("plan", "string")), output)
    b = ((SignatureColumn("age", "double"), SignatureColumn("region", "string")), output)
    changes = registry.compare_signatures(a, b)
    assert [(c.side, c.column, c.a, c.b, c.change) for c in changes] == [
        ("input", "age", "long", "double", "type changed"),
        ("input", "plan", "string", None, "removed"),
        ("input", "region", None, "string", "added"),
    ]
    assert registry.compare_signatures(a, a) == []


def test_model_card_markdown() -> None:
    card = ModelCard(
        name="churn-churned", version=2, model_description="Who will leave", description="PyTorch MLP",
        intended_use="Retention calls", limitations="", dataset="churn:1", framework="torch", task="binary",
        metrics={"roc_auc": 0.91}, inputs=(SignatureColumn("age", "long"),),
        outputs=(SignatureColumn("prediction", "long"),), aliases=("champion",), run_id="abc",
        created_at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC), mlflow_url="http://mlflow",
    )  # fmt: skip
    text = card.to_markdown()
    assert text.startswith("# churn-churned version 2 (champion)")
    assert "## Intended use\nRetention calls" in text and "## Limitations\n_not stated_" in text
    assert "- dataset version: churn:1" in text and "- roc_auc: 0.91" in text and "| age | long |" in text
