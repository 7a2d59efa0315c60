"""dataset versions: the content hash is indexed, not unique (one file may be re-read with another header)

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dataset_versions") as batch:
        batch.drop_constraint("uq_dataset_versions_hash", type_="unique")
        batch.create_index("ix_dataset_versions_hash", ["dataset_id", "content_hash"])


def downgrade() -> None:
    with op.batch_alter_table("dataset_versions") as batch:
        batch.drop_index("ix_dataset_versions_hash")
        batch.create_unique_constraint("uq_dataset_versions_hash", ["dataset_id", "content_hash"])
