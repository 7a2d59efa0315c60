"""Lineage on SQLite and PostgreSQL: artifacts once per URI, executions with edges, walks up and down."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from backend.errors import InvalidInputError, NotFoundError
from backend.jobs import submit_job
from backend.lineage import (
    ArtifactRef,
    dataset_version_ref,
    file_ref,
    get_artifact,
    get_lineage,
    list_executions,
    model_version_ref,
    record_artifact,
    record_execution,
)


def test_an_artifact_is_recorded_once_per_uri(session: Session) -> None:
    first = record_artifact(session, ref=dataset_version_ref("churn", 3, rows=10))
    again = record_artifact(session, ref=dataset_version_ref("churn", 3, rows=99))
    assert first == again
    assert (first.type, first.uri, first.label, first.properties) == (
        "dataset_version",
        "dataset:churn:3",
        "churn:3",
        {"rows": 10},
    )
    assert get_artifact(session, uri="dataset:churn:3") == first
    with pytest.raises(NotFoundError, match="no artifact 'dataset:churn:4'"):
        get_artifact(session, uri="dataset:churn:4")
    with pytest.raises(InvalidInputError):
        record_artifact(session, ref=ArtifactRef(type="", uri="x", name="x"))


def test_executions_link_inputs_to_outputs_and_the_graph_walks_both_ways(session: Session, tmp_path: Path) -> None:
    job = submit_job(session, kind="batch_predict", params={})
    # dataset churn:1 --train--> model v1 --batch (with churn:2)--> churn-predictions:1 + a file
    training = record_execution(
        session,
        type="train",
        name="training run",
        inputs=[dataset_version_ref("churn", 1)],
        outputs=[model_version_ref("churn-churned", 1)],
    )
    batch = record_execution(
        session,
        type="batch_predict",
        name=f"batch prediction job {job.id}",
        job_id=job.id,
        inputs=[model_version_ref("churn-churned", 1), dataset_version_ref("churn", 2)],
        outputs=[
            dataset_version_ref("churn-predictions", 1),
            file_ref(tmp_path / "scores.csv", type="batch_output"),
            dataset_version_ref("churn-predictions", 1),
        ],
        properties={"rows": 100},
    )
    assert [artifact.uri for artifact in batch.inputs] == ["models:/churn-churned/1", "dataset:churn:2"]
    assert [artifact.type for artifact in batch.outputs] == ["dataset_version", "batch_output"]
    assert batch.outputs[1].uri == (tmp_path / "scores.csv").resolve().as_uri()

    upstream = get_lineage(session, uri="dataset:churn-predictions:1", direction="upstream")
    assert {artifact.uri for artifact in upstream.artifacts} >= {
        "dataset:churn-predictions:1",
        "models:/churn-churned/1",
        "dataset:churn:2",
        "dataset:churn:1",
    }
    assert [execution.type for execution in upstream.executions] == ["train", "batch_predict"]
    downstream = get_lineage(session, uri="dataset:churn:1", direction="downstream")
    assert downstream.artifact("dataset:churn-predictions:1") is not None
    assert {execution.id for execution in downstream.executions} == {training.id, batch.id}
    # Nothing was made from the output yet; nothing made the first dataset version.
    assert get_lineage(session, uri="dataset:churn-predictions:1", direction="downstream").executions == []
    assert get_lineage(session, uri="dataset:churn:1", direction="upstream").executions == []

    [listed] = list_executions(session, type="batch_predict")
    assert listed.id == batch.id and listed.job_id == job.id and listed.properties == {"rows": 100}
    assert [execution.id for execution in list_executions(session)] == [batch.id, training.id]
    assert list_executions(session, job_id=job.id)[0].as_dict()["outputs"][0] == "dataset:churn-predictions:1"
    with pytest.raises(InvalidInputError, match="direction"):
        get_lineage(session, uri="dataset:churn:1", direction="sideways")  # type: ignore[arg-type]
