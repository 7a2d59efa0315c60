"""ML metadata and lineage, MLMD-style: artifacts, executions and the events between them.

An *artifact* is anything a run reads or writes, identified by a URI (``dataset:churn:3``,
``models:/churn-churned/2``, ``file:///srv/scores.parquet``). An *execution* is one run (a batch job,
a training run, a deployment); an *event* says the execution read (``input``) or wrote (``output``)
an artifact. Services that create things record them as they go (``record_execution``); nothing is
reconstructed later. ``get_lineage`` walks the graph up and down from any artifact.

Functions take a Session first and flush but do not commit; they return frozen dataclasses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.errors import InvalidInputError, NotFoundError
from backend.models import LineageArtifact, LineageEvent, LineageExecution, utcnow

DATASET_VERSION = "dataset_version"
MODEL_VERSION = "model_version"
FILE = "file"
EventKind = Literal["input", "output"]
Direction = Literal["upstream", "downstream", "both"]
MAX_DEPTH = 20


@dataclass(frozen=True)
class ArtifactRef:
    """What a producer knows about an artifact; ``record_artifact`` turns it into a row once per URI."""

    type: str
    uri: str
    name: str
    version: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ArtifactInfo:
    id: int
    type: str
    uri: str
    name: str
    version: str | None
    properties: dict[str, Any]
    created_at: datetime

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}" if self.version else self.name

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "uri": self.uri,
            "name": self.name,
            "version": self.version,
            "properties": self.properties,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class ExecutionInfo:
    id: int
    type: str
    name: str
    job_id: int | None
    state: str
    properties: dict[str, Any]
    created_at: datetime
    inputs: list[ArtifactInfo]
    outputs: list[ArtifactInfo]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "name": self.name,
            "job_id": self.job_id,
            "state": self.state,
            "properties": self.properties,
            "created_at": self.created_at.isoformat(),
            "inputs": [artifact.uri for artifact in self.inputs],
            "outputs": [artifact.uri for artifact in self.outputs],
        }


@dataclass(frozen=True)
class LineageEdge:
    execution_id: int
    artifact_id: int
    kind: str


@dataclass(frozen=True)
class LineageGraph:
    artifacts: list[ArtifactInfo]
    executions: list[ExecutionInfo]
    edges: list[LineageEdge]

    def artifact(self, uri: str) -> ArtifactInfo | None:
        return next((artifact for artifact in self.artifacts if artifact.uri == uri), None)


def dataset_version_ref(name: str, version: int, **properties: Any) -> ArtifactRef:
    return ArtifactRef(DATASET_VERSION, f"dataset:{name}:{version}", name, str(version), properties)


def model_version_ref(name: str, version: int, **properties: Any) -> ArtifactRef:
    return ArtifactRef(MODEL_VERSION, f"models:/{name}/{version}", name, str(version), properties)


def file_ref(path: Path, *, type: str = FILE, **properties: Any) -> ArtifactRef:
    resolved = Path(path).resolve()
    return ArtifactRef(type, resolved.as_uri(), resolved.name, None, properties)


def _artifact_info(row: LineageArtifact) -> ArtifactInfo:
    return ArtifactInfo(
        id=row.id,
        type=row.type,
        uri=row.uri,
        name=row.name,
        version=row.version,
        properties=dict(row.properties or {}),
        created_at=row.created_at,
    )


def record_artifact(session: Session, *, ref: ArtifactRef) -> ArtifactInfo:
    """The artifact with ``ref.uri``, created on first sight (later sightings keep the first record)."""
    if not ref.uri or not ref.type:
        raise InvalidInputError("an artifact needs a type and a URI")
    row = session.scalar(select(LineageArtifact).where(LineageArtifact.uri == ref.uri))
    if row is not None:
        return _artifact_info(row)
    row = LineageArtifact(
        type=ref.type,
        uri=ref.uri,
        name=ref.name,
        version=ref.version,
        properties=dict(ref.properties),
        created_at=utcnow(),
    )
    if session.get_bind().dialect.name == "sqlite":
        # SQLite serialises writers, and pysqlite's SAVEPOINT outside a write transaction would commit.
        session.add(row)
        session.flush()
        return _artifact_info(row)
    try:
        # A savepoint: another writer recording the same URI at the same moment must not undo our transaction.
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        row = session.scalars(select(LineageArtifact).where(LineageArtifact.uri == ref.uri)).one()
    return _artifact_info(row)


def record_execution(
    session: Session,
    *,
    type: str,
    name: str,
    inputs: Sequence[ArtifactRef] = (),
    outputs: Sequence[ArtifactRef] = (),
    job_id: int | None = None,
    state: str = "completed",
    properties: dict[str, Any] | None = None,
) -> ExecutionInfo:
    """One execution with its input and output edges (artifacts are recorded as needed)."""
    if not type or not name:
        raise InvalidInputError("an execution needs a type and a name")
    execution = LineageExecution(
        type=type, name=name, job_id=job_id, state=state, properties=dict(properties or {}), created_at=utcnow()
    )
    session.add(execution)
    session.flush()
    recorded: dict[str, list[ArtifactInfo]] = {"input": [], "output": []}
    for kind, refs in (("input", inputs), ("output", outputs)):
        for ref in refs:
            artifact = record_artifact(session, ref=ref)
            if any(seen.id == artifact.id for seen in recorded[kind]):
                continue
            session.add(
                LineageEvent(execution_id=execution.id, artifact_id=artifact.id, kind=kind, created_at=utcnow())
            )
            recorded[kind].append(artifact)
    session.flush()
    return ExecutionInfo(
        id=execution.id,
        type=execution.type,
        name=execution.name,
        job_id=execution.job_id,
        state=execution.state,
        properties=dict(execution.properties),
        created_at=execution.created_at,
        inputs=recorded["input"],
        outputs=recorded["output"],
    )


def get_artifact(session: Session, *, uri: str) -> ArtifactInfo:
    row = session.scalar(select(LineageArtifact).where(LineageArtifact.uri == uri))
    if row is None:
        raise NotFoundError(f"no artifact {uri!r} in the lineage")
    return _artifact_info(row)


def _executions(session: Session, ids: Sequence[int]) -> list[ExecutionInfo]:
    if not ids:
        return []
    rows = session.scalars(select(LineageExecution).where(LineageExecution.id.in_(list(ids)))).all()
    events = session.execute(
        select(LineageEvent.execution_id, LineageEvent.kind, LineageArtifact)
        .join(LineageArtifact, LineageArtifact.id == LineageEvent.artifact_id)
        .where(LineageEvent.execution_id.in_(list(ids)))
        .order_by(LineageEvent.id)
    ).all()
    edges: dict[int, dict[str, list[ArtifactInfo]]] = {row.id: {"input": [], "output": []} for row in rows}
    for execution_id, kind, artifact in events:
        edges[execution_id][kind].append(_artifact_info(artifact))
    return [
        ExecutionInfo(
            id=row.id,
            type=row.type,
            name=row.name,
            job_id=row.job_id,
            state=row.state,
            properties=dict(row.properties or {}),
            created_at=row.created_at,
            inputs=edges[row.id]["input"],
            outputs=edges[row.id]["output"],
        )
        for row in sorted(rows, key=lambda item: item.id)
    ]


def list_executions(
    session: Session, *, type: str | None = None, job_id: int | None = None, limit: int = 50
) -> list[ExecutionInfo]:
    """Newest first."""
    query = select(LineageExecution.id).order_by(LineageExecution.id.desc()).limit(limit)
    if type is not None:
        query = query.where(LineageExecution.type == type)
    if job_id is not None:
        query = query.where(LineageExecution.job_id == job_id)
    return list(reversed(_executions(session, list(session.scalars(query)))))


def get_lineage(
    session: Session, *, uri: str, direction: Direction = "both", max_depth: int = MAX_DEPTH
) -> LineageGraph:
    """Everything ``uri`` came from (upstream) and/or everything made from it (downstream)."""
    if direction not in ("upstream", "downstream", "both"):
        raise InvalidInputError(f"direction must be upstream, downstream or both, not {direction!r}")
    start = get_artifact(session, uri=uri)
    artifacts: dict[int, ArtifactInfo] = {start.id: start}
    executions: set[int] = set()
    edges: set[LineageEdge] = set()
    for walk in ("upstream", "downstream"):
        if direction not in (walk, "both"):
            continue
        # Upstream: the executions that output the artifact, then their inputs; downstream: the reverse.
        arrive, leave = ("output", "input") if walk == "upstream" else ("input", "output")
        frontier = {start.id}
        for _ in range(max_depth):
            if not frontier:
                break
            found = session.execute(
                select(LineageEvent.execution_id).where(
                    LineageEvent.artifact_id.in_(frontier), LineageEvent.kind == arrive
                )
            ).scalars()
            step_executions = set(found) - executions
            executions |= step_executions
            if not step_executions:
                break
            rows = session.execute(
                select(LineageEvent, LineageArtifact)
                .join(LineageArtifact, LineageArtifact.id == LineageEvent.artifact_id)
                .where(LineageEvent.execution_id.in_(step_executions))
            ).all()
            frontier = set()
            for event, artifact in rows:
                edges.add(LineageEdge(event.execution_id, event.artifact_id, event.kind))
                if event.kind == leave and artifact.id not in artifacts:
                    artifacts[artifact.id] = _artifact_info(artifact)
                    frontier.add(artifact.id)
                elif artifact.id not in artifacts:
                    artifacts[artifact.id] = _artifact_info(artifact)
    return LineageGraph(
        artifacts=sorted(artifacts.values(), key=lambda item: item.id),
        executions=_executions(session, sorted(executions)),
        edges=sorted(edges, key=lambda edge: (edge.execution_id, edge.kind, edge.artifact_id)),
    )
