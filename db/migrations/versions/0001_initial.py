"""The schema as it stood before migrations: raters, rounds, outputs, ratings, picks and judgments.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Written out by hand from the models of that time, with their constraint and index names, so that a fresh database
gets exactly the tables `Base.metadata.create_all` used to make. A revision is a frozen snapshot: it names its types
with plain SQLAlchemy (never `db.schema`), so later edits to the models cannot change what it does.

A database made before migrations existed has no `alembic_version` table but has some or all of these tables
(`create_all` made them; a file from before the judge scores lacks `judgments`). This revision adopts such a file:
it creates only the tables that are missing and never touches one that is there, so its rows stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    present = set(sa.inspect(op.get_bind()).get_table_names())
    for name, create in _TABLES:
        if name not in present:
            create()


def _raters() -> None:
    op.create_table(
        "raters",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def _rounds() -> None:
    op.create_table(
        "rounds",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("rater_id", sa.String(32), nullable=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("custom", sa.Boolean(), nullable=False),
        sa.Column("trait", sa.String(32), nullable=False),
        sa.Column("pole", sa.String(4), nullable=False),
        sa.Column("model", sa.String(300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seconds", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.CheckConstraint("kind IN ('compare', 'blind')", name="ck_rounds_kind"),
        sa.CheckConstraint("pole IN ('high', 'low')", name="ck_rounds_pole"),
        sa.CheckConstraint("kind = 'compare' OR rater_id IS NOT NULL", name="ck_rounds_blind_has_rater"),
        sa.ForeignKeyConstraint(["rater_id"], ["raters.id"]),
    )
    op.create_index("ix_rounds_rater_id", "rounds", ["rater_id"])


def _outputs() -> None:
    op.create_table(
        "outputs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("round_id", sa.String(32), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("n_tokens", sa.Integer(), nullable=False),
        sa.Column("latency", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("round_id", "slot", name="uq_outputs_round_slot"),
        sa.CheckConstraint("slot >= 0", name="ck_outputs_slot"),
        sa.ForeignKeyConstraint(["round_id"], ["rounds.id"]),
    )
    op.create_index("ix_outputs_round_id", "outputs", ["round_id"])


def _ratings() -> None:
    op.create_table(
        "ratings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("round_id", sa.String(32), nullable=False),
        sa.Column("output_id", sa.Integer(), nullable=False),
        sa.Column("rater_id", sa.String(32), nullable=False),
        sa.Column("trait_score", sa.Integer(), nullable=False),
        sa.Column("fluency_score", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("output_id", "rater_id", name="uq_ratings_output_rater"),
        sa.CheckConstraint("trait_score BETWEEN 1 AND 5", name="ck_ratings_trait_score"),
        sa.CheckConstraint("fluency_score BETWEEN 1 AND 5", name="ck_ratings_fluency_score"),
        sa.ForeignKeyConstraint(["round_id"], ["rounds.id"]),
        sa.ForeignKeyConstraint(["output_id"], ["outputs.id"]),
        sa.ForeignKeyConstraint(["rater_id"], ["raters.id"]),
    )
    op.create_index("ix_ratings_round_id", "ratings", ["round_id"])
    op.create_index("ix_ratings_rater_id", "ratings", ["rater_id"])


def _picks() -> None:
    op.create_table(
        "picks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("round_id", sa.String(32), nullable=False),
        sa.Column("rater_id", sa.String(32), nullable=False),
        sa.Column("output_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("round_id"),  # unnamed, as `unique=True` made it
        sa.ForeignKeyConstraint(["round_id"], ["rounds.id"]),
        sa.ForeignKeyConstraint(["rater_id"], ["raters.id"]),
        sa.ForeignKeyConstraint(["output_id"], ["outputs.id"]),
    )
    op.create_index("ix_picks_rater_id", "picks", ["rater_id"])


def _judgments() -> None:
    op.create_table(
        "judgments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("output_id", sa.Integer(), nullable=False),
        sa.Column("judge", sa.String(200), nullable=False),
        sa.Column("trait_score", sa.Double(), nullable=True),
        sa.Column("fluency_score", sa.Double(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("output_id", "judge", name="uq_judgments_output_judge"),
        sa.ForeignKeyConstraint(["output_id"], ["outputs.id"]),
    )
    op.create_index("ix_judgments_output_id", "judgments", ["output_id"])


# Each table with the function that creates it (and its indexes), in the order of their foreign keys.
_TABLES: tuple[tuple[str, Callable[[], None]], ...] = (
    ("raters", _raters), ("rounds", _rounds), ("outputs", _outputs), ("ratings", _ratings), ("picks", _picks),
    ("judgments", _judgments),
)


def downgrade() -> None:
    raise NotImplementedError("Persona Studio migrations only go forward (a downgrade would drop rows); restore a copy")
