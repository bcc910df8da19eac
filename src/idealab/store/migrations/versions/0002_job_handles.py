"""Jobs keep their backend and its durable handle, so a restarted orchestrator reattaches to them.

Jobs of schema 0001 all ran on the local backend, whose handle is "local:<supervisor pid>:<GPU ids>": the
jobs still in flight get theirs from the pid and GPU ids stored then.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("handle", sa.Text(), nullable=True))
        batch.add_column(sa.Column("backend", sa.String(), nullable=True))
    op.execute(
        "UPDATE jobs SET backend = 'local', handle = 'local:' || pid || ':' || gpu_ids "
        "WHERE pid IS NOT NULL AND finished_at IS NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("backend")
        batch.drop_column("handle")
