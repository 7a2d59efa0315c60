"""endpoints: deployments of registry model versions with traffic shares, and the gateway's request log

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "endpoints",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "endpoint_deployments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("endpoint_id", sa.Integer, sa.ForeignKey("endpoints.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.Integer, nullable=False),
        sa.Column("alias", sa.String(100), nullable=True),
        sa.Column("traffic_percent", sa.Integer, nullable=False),
        sa.Column("triton_name", sa.String(200), nullable=False),
        sa.Column("framework", sa.String(20), nullable=False),
        sa.Column("task", sa.String(20), nullable=False),
        sa.Column("classes_json", sa.JSON, nullable=True),
        sa.Column("inputs_json", sa.JSON, nullable=False),
        sa.Column("example_json", sa.JSON, nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_endpoint_deployments_endpoint_id", "endpoint_deployments", ["endpoint_id"])
    op.create_index("ix_endpoint_deployments_model_name", "endpoint_deployments", ["model_name"])
    op.create_table(
        "endpoint_requests",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("endpoint", sa.String(100), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=True),
        sa.Column("model_version", sa.Integer, nullable=True),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Double, nullable=False),
        sa.Column("instances", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_endpoint_requests_endpoint_time", "endpoint_requests", ["endpoint", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_endpoint_requests_endpoint_time", "endpoint_requests")
    op.drop_table("endpoint_requests")
    op.drop_index("ix_endpoint_deployments_model_name", "endpoint_deployments")
    op.drop_index("ix_endpoint_deployments_endpoint_id", "endpoint_deployments")
    op.drop_table("endpoint_deployments")
    op.drop_table("endpoints")
