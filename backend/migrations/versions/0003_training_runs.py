"""training runs: the dataset version each run learnt from and the model version it registered

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "training_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("mlflow_run_id", sa.String(64), nullable=False, unique=True),
        sa.Column("mlflow_experiment_id", sa.String(64), nullable=False),
        sa.Column("experiment", sa.String(500), nullable=False),
        sa.Column(
            "dataset_version_id",
            sa.Integer,
            sa.ForeignKey("dataset_versions.id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column("target", sa.String(500), nullable=False),
        sa.Column("framework", sa.String(20), nullable=False),
        sa.Column("task", sa.String(20), nullable=False),
        sa.Column("registered_model_name", sa.String(200), nullable=True),
        sa.Column("registered_model_version", sa.Integer, nullable=True),
        sa.Column("metrics_json", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_training_runs_job_id", "training_runs", ["job_id"])
    op.create_index("ix_training_runs_dataset_version_id", "training_runs", ["dataset_version_id"])


def downgrade() -> None:
    op.drop_index("ix_training_runs_dataset_version_id", "training_runs")
    op.drop_index("ix_training_runs_job_id", "training_runs")
    op.drop_table("training_runs")
