"""ORM tables. Rows never leave the services: they convert to DTOs first."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database: SQLite hands back naive values, so they are
    marked UTC here once instead of in every service that reads a timestamp."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        # PostgreSQL answers in the session's zone; one zone everywhere keeps comparisons simple.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dict[str, Any]: JSON, list[Any]: JSON}


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    versions: Mapped[list[DatasetVersion]] = relationship(
        back_populates="dataset", order_by="DatasetVersion.version", cascade="all, delete-orphan"
    )


class DatasetVersion(Base):
    __tablename__ = "dataset_versions"
    __table_args__ = (
        UniqueConstraint("dataset_id", "version", name="uq_dataset_versions_version"),
        # Not unique: the same file re-read with another header setting is a new version.
        Index("ix_dataset_versions_hash", "dataset_id", "content_hash"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    # Relative to SEXTANT_HOME so a workspace can move.
    storage_path: Mapped[str] = mapped_column(String(500))
    source_filename: Mapped[str] = mapped_column(String(500), default="")
    source_format: Mapped[str] = mapped_column(String(20))
    source_bytes: Mapped[int] = mapped_column(BigInteger)
    row_count: Mapped[int] = mapped_column(BigInteger)
    column_count: Mapped[int] = mapped_column(Integer)
    # [{"name": ..., "dtype": ...}] in column order.
    schema_json: Mapped[list[Any]] = mapped_column(JSON)
    # How the file was read: encoding, delimiter, quote char, header.
    ingest_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    profile_json: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    dataset: Mapped[Dataset] = relationship(back_populates="versions")


class JobWorker(Base):
    """A worker process. Jobs name their owner, so a restarted worker can tell a dead owner from a live one."""

    __tablename__ = "job_workers"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    concurrency: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Job(Base):
    """One unit of background work, run as its own process by a worker (see backend.jobs)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(50), index=True)
    # Resolved from the kind registry at submit time: the worker runs exactly what was submitted.
    entry_module: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="queued")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    error: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[float | None] = mapped_column()
    progress_message: Mapped[str] = mapped_column(Text, default="")
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    retry_of: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    pid: Mapped[int | None] = mapped_column(Integer)
    worker_id: Mapped[str | None] = mapped_column(String(100))
    # Relative to SEXTANT_HOME so a workspace can move.
    log_path: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class TrainingRun(Base):
    """A finished training or tuning run: which dataset version it learnt from and what it registered."""

    __tablename__ = "training_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    mlflow_run_id: Mapped[str] = mapped_column(String(64), unique=True)
    mlflow_experiment_id: Mapped[str] = mapped_column(String(64))
    experiment: Mapped[str] = mapped_column(String(500))
    # RESTRICT: the data a registered model learnt from is lineage and must not vanish under it.
    dataset_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id", ondelete="RESTRICT"), index=True)
    target: Mapped[str] = mapped_column(String(500))
    framework: Mapped[str] = mapped_column(String(20))
    task: Mapped[str] = mapped_column(String(20))
    registered_model_name: Mapped[str | None] = mapped_column(String(200))
    registered_model_version: Mapped[int | None] = mapped_column(Integer)
    # Test-split metrics, e.g. {"roc_auc": 0.91, "log_loss": 0.27, ...}.
    metrics_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Endpoint(Base):
    """A named online-prediction endpoint; the gateway serves it at ``/v1/endpoints/<name>:predict``."""

    __tablename__ = "endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    deployments: Mapped[list[EndpointDeployment]] = relationship(
        back_populates="endpoint", order_by="EndpointDeployment.id", cascade="all, delete-orphan"
    )


class EndpointDeployment(Base):
    """One registry model version behind an endpoint with its share of the traffic.

    ``alias`` set: the deployment follows ``model_name@alias`` and moves when the alias moves.
    What the gateway needs per request (inputs, classes) is copied here at deploy time, so
    serving never waits on MLflow.
    """

    __tablename__ = "endpoint_deployments"

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"), index=True)
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    model_version: Mapped[int] = mapped_column(Integer)
    alias: Mapped[str | None] = mapped_column(String(100))
    traffic_percent: Mapped[int] = mapped_column(Integer)
    triton_name: Mapped[str] = mapped_column(String(200))
    framework: Mapped[str] = mapped_column(String(20))
    task: Mapped[str] = mapped_column(String(20))
    classes_json: Mapped[list[Any] | None] = mapped_column(JSON(none_as_null=True))
    # [{"name": ..., "type": <MLflow column type>}] in signature order.
    inputs_json: Mapped[list[Any]] = mapped_column(JSON)
    # One instance of the model's logged input example, to prefill forms and docs.
    example_json: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # loading | ready | failed, as last seen by the deploy or the reload hook; message: Triton's words.
    state: Mapped[str] = mapped_column(String(20), default="loading")
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    endpoint: Mapped[Endpoint] = relationship(back_populates="deployments")


class EndpointRequest(Base):
    """One gateway request, written in batches by the gateway's request log."""

    __tablename__ = "endpoint_requests"
    __table_args__ = (Index("ix_endpoint_requests_endpoint_time", "endpoint", "created_at"),)

    # SQLite only auto-increments an INTEGER primary key.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The name as requested (no foreign key): requests to unknown or deleted endpoints are logged too.
    endpoint: Mapped[str] = mapped_column(String(100))
    model_name: Mapped[str | None] = mapped_column(String(200))
    model_version: Mapped[int | None] = mapped_column(Integer)
    status_code: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column()
    instances: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)


class LineageArtifact(Base):
    """An artifact in the lineage graph (MLMD-style): a dataset version, a model version, a file, an endpoint."""

    __tablename__ = "lineage_artifacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    # dataset_version | model_version | file | endpoint | ...: free text, so new producers need no migration.
    type: Mapped[str] = mapped_column(String(50), index=True)
    # The artifact's identity: dataset:NAME:VERSION, models:/NAME/VERSION, file:///path, ...
    uri: Mapped[str] = mapped_column(String(1000), unique=True)
    name: Mapped[str] = mapped_column(String(500))
    version: Mapped[str | None] = mapped_column(String(100))
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LineageExecution(Base):
    """A run that read and wrote artifacts: a batch job, a training run, a deployment, a pipeline step."""

    __tablename__ = "lineage_executions"

    id: Mapped[int] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(String(50), index=True)
    name: Mapped[str] = mapped_column(String(500))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    state: Mapped[str] = mapped_column(String(20), default="completed")
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LineageEvent(Base):
    """An edge: ``execution`` read (``input``) or wrote (``output``) ``artifact``."""

    __tablename__ = "lineage_events"
    __table_args__ = (UniqueConstraint("execution_id", "artifact_id", "kind", name="uq_lineage_events_edge"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    execution_id: Mapped[int] = mapped_column(ForeignKey("lineage_executions.id", ondelete="CASCADE"), index=True)
    artifact_id: Mapped[int] = mapped_column(ForeignKey("lineage_artifacts.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Schedule(Base):
    """A cron schedule that submits a job of ``kind`` with ``spec`` as its parameters (fired by the worker)."""

    __tablename__ = "schedules"
    __table_args__ = (Index("ix_schedules_due", "paused", "next_run_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(50))
    cron: Mapped[str] = mapped_column(String(200))
    # IANA name; the cron expression is read in this zone ("0 2 * * *" = 02:00 there, DST included).
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # once | skip: what happens to runs missed while no worker ran.
    catch_up: Mapped[str] = mapped_column(String(10), default="once")
    paused: Mapped[bool] = mapped_column(default=False)
    # None while paused.
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ScheduleRun(Base):
    """One firing of a schedule: the job it submitted, or why it submitted none (a skipped catch-up)."""

    __tablename__ = "schedule_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    # submitted | skipped | failed
    outcome: Mapped[str] = mapped_column(String(20))
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime())
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    catch_up: Mapped[bool] = mapped_column(default=False)
    # Due times that passed without a run of their own (the worker was down).
    missed_runs: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
