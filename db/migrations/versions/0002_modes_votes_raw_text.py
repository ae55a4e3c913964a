"""Quick rounds and their votes, and the untrimmed answer: rounds.mode, outputs.raw_text, the votes table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

Every existing round was rated in full, so `mode` is added NOT NULL with the server default 'full', which fills the
rows already there. `raw_text` is nullable: the untrimmed answers of old rows were never kept, and NULL says so
rather than pretending the shown text was the raw one. Both are plain ADD COLUMNs, so no table is copied.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_MODE_CHECKS = {
    "ck_rounds_mode": "mode IN ('full', 'quick')",
    "ck_rounds_quick_is_blind": "kind = 'blind' OR mode = 'full'",
}


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite cannot add a constraint to an existing table, and the batch (copy and move) way would drop
        # `rounds`, which outputs, ratings and picks reference, under foreign keys that cannot be switched off
        # inside the store's transaction. It does accept CHECKs on the added column itself, and checks them
        # against the rows already there; a column constraint may name other columns.
        checks = " ".join(f"CONSTRAINT {name} CHECK ({sql})" for name, sql in _MODE_CHECKS.items())
        op.execute(f"ALTER TABLE rounds ADD COLUMN mode VARCHAR(8) DEFAULT 'full' NOT NULL {checks}")
    else:
        op.add_column("rounds", sa.Column("mode", sa.String(8), server_default="full", nullable=False))
        for name, sql in _MODE_CHECKS.items():
            op.create_check_constraint(name, "rounds", sql)

    with op.batch_alter_table("outputs") as batch:  # an ADD COLUMN even on SQLite: batch copies nothing for it
        batch.add_column(sa.Column("raw_text", sa.Text(), nullable=True))

    op.create_table(
        "votes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("round_id", sa.String(32), nullable=False),
        sa.Column("rater_id", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(4), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("round_id", name="uq_votes_round"),
        sa.CheckConstraint("outcome IN ('a', 'b', 'tie', 'bad')", name="ck_votes_outcome"),
        sa.ForeignKeyConstraint(["round_id"], ["rounds.id"]),
        sa.ForeignKeyConstraint(["rater_id"], ["raters.id"]),
    )
    op.create_index("ix_votes_rater_id", "votes", ["rater_id"])


def downgrade() -> None:
    raise NotImplementedError("Persona Studio migrations only go forward (a downgrade would drop rows); restore a copy")
