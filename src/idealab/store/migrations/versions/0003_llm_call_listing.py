"""A covering index of the LLM calls' listing columns.

What the views and `status` read of the calls (costs, tokens, models, roles) is listed before the prompt
and the answer in each row, but a row is read whole up to the last column asked for: every listing went
through the prompts and answers (hundreds of MB at ten thousand experiments). With the listing columns in
an index, SQLite answers those reads from the index alone. Nothing else changes; a read-only command
reads a 0002 database as it is (just slower).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

LISTING = ["run_id", "id", "role", "idea_id", "model", "input_tokens", "output_tokens", "cost_usd", "error",
           "extra", "created_at"]  # fmt: skip


def upgrade() -> None:
    op.create_index("ix_llm_calls_listing", "llm_calls", LISTING)


def downgrade() -> None:
    op.drop_index("ix_llm_calls_listing", table_name="llm_calls")
