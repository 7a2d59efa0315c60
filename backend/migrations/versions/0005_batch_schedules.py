"""batch prediction: lineage (artifacts, executions, events) and cron schedules with their run history

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lineage_artifacts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("type", sa.String(50), nullable=False),
        sa.Column("uri", sa.String(1000), nullable=False, unique=True),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("version", sa.String(100), nullable=True),
        sa.Column("properties", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_lineage_artifacts_type", "lineage_artifacts", ["type"])
    op.create_table(
        "lineage_executions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("type", sa.String(50), nullable=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("properties", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_lineage_executions_type", "lineage_executions", ["type"])
    op.create_index("ix_lineage_executions_job_id", "lineage_executions", ["job_id"])
    op.create_table(
        "lineage_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "execution_id",
            sa.Integer,
            sa.ForeignKey("lineage_executions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("artifact_id", sa.Integer, sa.ForeignKey("lineage_artifacts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("execution_id", "artifact_id", "kind", name="uq_lineage_events_edge"),
    )
    op.create_index("ix_lineage_events_execution_id", "lineage_events", ["execution_id"])
    op.create_index("ix_lineage_events_artifact_id", "lineage_events", ["artifact_id"])
    op.create_table(
        "schedules",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("cron", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("catch_up", sa.String(10), nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_schedules_due", "schedules", ["paused", "next_run_at"])
    op.create_table(
        "schedule_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("schedule_id", sa.Integer, sa.ForeignKey("schedules.id", ondelete="CASCADE"), nullable=False),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("catch_up", sa.Boolean, nullable=False),
        sa.Column("missed_runs", sa.Integer, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_schedule_runs_schedule_id", "schedule_runs", ["schedule_id"])
    op.create_index("ix_schedule_runs_job_id", "schedule_runs", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_schedule_runs_job_id", "schedule_runs")
    op.drop_index("ix_schedule_runs_schedule_id", "schedule_runs")
    op.drop_table("schedule_runs")
    op.drop_index("ix_schedules_due", "schedules")
    op.drop_table("schedules")
    op.drop_index("ix_lineage_events_artifact_id", "lineage_events")
    op.drop_index("ix_lineage_events_execution_id", "lineage_events")
    op.drop_table("lineage_events")
    op.drop_index("ix_lineage_executions_job_id", "lineage_executions")
    op.drop_index("ix_lineage_executions_type", "lineage_executions")
    op.drop_table("lineage_executions")
    op.drop_index("ix_lineage_artifacts_type", "lineage_artifacts")
    op.drop_table("lineage_artifacts")
