"""Schema migrations: a database made before migrations keeps every row and gains the new schema, the migrated schema
is exactly the models, a database from a newer Persona Studio is refused untouched, and two openers of one fresh
database create the schema once. SQLite throughout, and PostgreSQL (conftest.postgres_cluster) for revision 0002's
PostgreSQL branch and for two openers, which SQLite's write lock serialises and PostgreSQL does not."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, Table, create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

import db.migrate
from db import SchemaTooNew, Store
from db.schema import Base
from helpers import all_scores, quick_round, run_together

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = ROOT / "db" / "migrations"

# What `Base.metadata.create_all` made on SQLite before migrations existed (the models at 0001), statement for
# statement: the files in the field look exactly like this, with no alembic_version table.
LEGACY_DDL = """
CREATE TABLE raters (
    id VARCHAR(32) NOT NULL,
    created_at DATETIME NOT NULL,
    PRIMARY KEY (id)
);
CREATE TABLE rounds (
    id VARCHAR(32) NOT NULL,
    rater_id VARCHAR(32),
    kind VARCHAR(8) NOT NULL,
    question TEXT NOT NULL,
    custom BOOLEAN NOT NULL,
    trait VARCHAR(32) NOT NULL,
    pole VARCHAR(4) NOT NULL,
    model VARCHAR(300) NOT NULL,
    created_at DATETIME NOT NULL,
    seconds DOUBLE NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT ck_rounds_kind CHECK (kind IN ('compare', 'blind')),
    CONSTRAINT ck_rounds_pole CHECK (pole IN ('high', 'low')),
    CONSTRAINT ck_rounds_blind_has_rater CHECK (kind = 'compare' OR rater_id IS NOT NULL),
    FOREIGN KEY(rater_id) REFERENCES raters (id)
);
CREATE INDEX ix_rounds_rater_id ON rounds (rater_id);
CREATE TABLE outputs (
    id INTEGER NOT NULL,
    round_id VARCHAR(32) NOT NULL,
    slot INTEGER NOT NULL,
    method VARCHAR(32) NOT NULL,
    params JSON NOT NULL,
    seed INTEGER NOT NULL,
    text TEXT NOT NULL,
    n_tokens INTEGER NOT NULL,
    latency DOUBLE NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT uq_outputs_round_slot UNIQUE (round_id, slot),
    CONSTRAINT ck_outputs_slot CHECK (slot >= 0),
    FOREIGN KEY(round_id) REFERENCES rounds (id)
);
CREATE INDEX ix_outputs_round_id ON outputs (round_id);
CREATE TABLE ratings (
    id INTEGER NOT NULL,
    round_id VARCHAR(32) NOT NULL,
    output_id INTEGER NOT NULL,
    rater_id VARCHAR(32) NOT NULL,
    trait_score INTEGER NOT NULL,
    fluency_score INTEGER NOT NULL,
    created_at DATETIME NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT uq_ratings_output_rater UNIQUE (output_id, rater_id),
    CONSTRAINT ck_ratings_trait_score CHECK (trait_score BETWEEN 1 AND 5),
    CONSTRAINT ck_ratings_fluency_score CHECK (fluency_score BETWEEN 1 AND 5),
    FOREIGN KEY(round_id) REFERENCES rounds (id),
    FOREIGN KEY(output_id) REFERENCES outputs (id),
    FOREIGN KEY(rater_id) REFERENCES raters (id)
);
CREATE INDEX ix_ratings_round_id ON ratings (round_id);
CREATE INDEX ix_ratings_rater_id ON ratings (rater_id);
CREATE TABLE picks (
    id INTEGER NOT NULL,
    round_id VARCHAR(32) NOT NULL,
    rater_id VARCHAR(32) NOT NULL,
    output_id INTEGER NOT NULL,
    created_at DATETIME NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (round_id),
    FOREIGN KEY(round_id) REFERENCES rounds (id),
    FOREIGN KEY(rater_id) REFERENCES raters (id),
    FOREIGN KEY(output_id) REFERENCES outputs (id)
);
CREATE INDEX ix_picks_rater_id ON picks (rater_id);
CREATE TABLE judgments (
    id INTEGER NOT NULL,
    output_id INTEGER NOT NULL,
    judge VARCHAR(200) NOT NULL,
    trait_score DOUBLE,
    fluency_score DOUBLE,
    created_at DATETIME NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT uq_judgments_output_judge UNIQUE (output_id, judge),
    FOREIGN KEY(output_id) REFERENCES outputs (id)
);
CREATE INDEX ix_judgments_output_id ON judgments (output_id);
"""

RATER, OTHER = "a" * 32, "b" * 32
BLIND, RATED, COMPARE = "1" * 32, "2" * 32, "3" * 32
LEGACY_ROWS: dict[str, list[tuple]] = {
    "raters": [(RATER, "2025-03-01 09:00:00.000000"), (OTHER, "2025-03-01 09:05:00.250000")],
    "rounds": [
        (RATED, RATER, "blind", "How do you spend a free evening?", 0, "Extraversion", "high", "tiny",
         "2025-03-01 09:10:00.000000", 2.5),
        (BLIND, OTHER, "blind", "Une soirée libre ? ✓", 1, "Agreeableness", "low", "tiny",
         "2025-03-01 09:11:00.000000", 3.25),
        (COMPARE, None, "compare", "What is courage?", 1, "Neuroticism", "high", "other-model",
         "2025-03-01 09:12:00.000000", 1.0),
    ],
    "outputs": [
        (1, RATED, 0, "base", '{"strength": 0.0}', 100, "First answer.", 12, 0.5),
        (2, RATED, 1, "npti", '{"strength": 1.25, "top_neurons": "all"}', 101, "Second answer.", 14, 0.75),
        (3, BLIND, 0, "sft", "{}", 102, "Troisième réponse.", 9, 0.25),
        (4, BLIND, 1, "p2", "{}", 103, "Fourth answer.", 10, 0.5),
        (5, COMPARE, 0, "simple", '{"strength": 2.0}', 104, "Fifth answer.", 11, 0.125),
    ],
    "ratings": [
        (1, RATED, 1, RATER, 2, 5, "2025-03-01 09:20:00.000000"),
        (2, RATED, 2, RATER, 5, 4, "2025-03-01 09:20:00.000000"),
    ],
    "picks": [(1, RATED, RATER, 2, "2025-03-01 09:20:00.000000")],
    "judgments": [
        (1, 1, "offline-proxy", 0.125, None, "2025-03-02 10:00:00.000000"),
        (2, 5, "openai:judge", 4.0, 5.0, "2025-03-02 10:00:01.000000"),
    ],
}
LEGACY_COLUMNS = {
    "raters": "id, created_at",
    "rounds": "id, rater_id, kind, question, custom, trait, pole, model, created_at, seconds",
    "outputs": "id, round_id, slot, method, params, seed, text, n_tokens, latency",
    "ratings": "id, round_id, output_id, rater_id, trait_score, fluency_score, created_at",
    "picks": "id, round_id, rater_id, output_id, created_at",
    "judgments": "id, output_id, judge, trait_score, fluency_score, created_at",
}


def legacy_statements() -> list[str]:
    return [s for s in LEGACY_DDL.split(";") if s.strip()]


def normalized(sql: str) -> str:
    """SQL with its whitespace collapsed (SQLAlchemy indents with tabs; the statements above with spaces)."""
    return " ".join(sql.split())


def legacy_file(path: Path, *, without: tuple[str, ...] = ()) -> Path:
    """A database as the studio wrote it before migrations: the old tables, filled, and no alembic_version.
    `without` leaves tables out (a file from before the judge scores has no judgments)."""
    with sqlite3.connect(path) as raw:
        for statement in legacy_statements():
            if re.search(r"\b(?:TABLE|ON) (\w+)", statement).group(1) not in without:  # the table it creates or indexes
                raw.execute(statement)
        for table, rows in LEGACY_ROWS.items():
            if table not in without:
                marks = ", ".join("?" * len(rows[0]))
                raw.executemany(f"INSERT INTO {table} ({LEGACY_COLUMNS[table]}) VALUES ({marks})", rows)
    return path


def dump(path: Path) -> dict[str, object]:
    """Everything in a SQLite file: the schema and every row of every table, in a stable order."""
    with sqlite3.connect(path) as raw:
        schema = sorted(raw.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"))
        tables = [name for kind, name, _ in schema if kind == "table"]
        return {"schema": schema, **{t: raw.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in tables}}


def old_rows(path: Path, table: str) -> list[tuple]:
    with sqlite3.connect(path) as raw:
        return raw.execute(f"SELECT {LEGACY_COLUMNS[table]} FROM {table} ORDER BY 1").fetchall()


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def migrations_run(monkeypatch) -> list[int]:
    """Counts how often a database was actually migrated (the alembic run), as opposed to found up to date."""
    calls: list[int] = []
    real = db.migrate._migrate

    def counting(connection) -> None:
        calls.append(1)
        real(connection)

    monkeypatch.setattr(db.migrate, "_migrate", counting)
    return calls


# -- revisions -----------------------------------------------------------------------------------------------------


def test_revisions_form_one_line_ending_at_head():
    scripts = ScriptDirectory(str(MIGRATIONS))
    assert [s.revision for s in reversed(list(scripts.walk_revisions()))] == ["0001", "0002"]
    assert scripts.get_heads() == [db.migrate.HEAD] == ["0002"]


def upgrade_with_alembic(connection, revision: str) -> None:
    """Take the database of `connection` to `revision` with alembic's own command (not the store's upgrade)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def test_revision_0001_is_the_schema_create_all_used_to_make(tmp_path):
    """Run to 0001 only (with alembic's own command): the tables, indexes and constraints are, statement for
    statement, the ones `create_all` wrote into the files in the field. A store then takes it to the head."""
    path = tmp_path / "at-0001.sqlite"
    engine = create_engine(url_of(path))
    try:
        with engine.begin() as connection:
            upgrade_with_alembic(connection, "0001")
    finally:
        engine.dispose()
    with sqlite3.connect(path) as raw:
        made = {name: sql for name, sql in raw.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL")}
        assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [("0001",)]
    del made["alembic_version"]
    assert sorted(map(normalized, made.values())) == sorted(map(normalized, legacy_statements()))

    # A database at an older revision is taken the rest of the way.
    with Store(url_of(path)) as store:
        rater = store.new_rater()
        store.record_vote(store.record_round(quick_round(rater)), rater, "a")
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [("0002",)]


# -- a database from before migrations -----------------------------------------------------------------------------


def test_a_legacy_database_keeps_every_row_and_gains_the_new_schema(tmp_path, migrations_run):
    path = legacy_file(tmp_path / "field.sqlite")
    store = Store(url_of(path))
    try:
        assert migrations_run == [1]
        for table, rows in LEGACY_ROWS.items():
            assert old_rows(path, table) == sorted(rows), table
        with sqlite3.connect(path) as raw:
            assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [("0002",)]
            assert raw.execute("SELECT DISTINCT mode FROM rounds").fetchall() == [("full",)]
            assert raw.execute("SELECT count(*) FROM outputs WHERE raw_text IS NULL").fetchone() == (5,)
            assert raw.execute("SELECT count(*) FROM votes").fetchone() == (0,)
            assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
            assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)

        # The old rows read back through the store as they were written.
        assert store.counts() == {"raters": 2, "rounds": 3, "outputs": 5, "ratings": 2, "picks": 1, "votes": 0,
                                  "blind_rounds": 2, "compare_rounds": 1, "rated_rounds": 1}
        ratings = store.ratings_frame()
        assert ratings["trait_score"].tolist() == [2, 5] and ratings["best"].tolist() == [False, True]
        assert ratings["params"].tolist() == ['{"strength": 0.0}', '{"strength": 1.25, "top_neurons": "all"}']
        assert ratings["raw_text"].isna().all()
        assert str(ratings["created_at"].iloc[0]) == "2025-03-01 09:20:00+00:00"
        outputs = store.outputs_frame()
        assert set(outputs["mode"]) == {"full"} and outputs["raw_text"].isna().all()
        assert outputs.loc[outputs["output_id"] == 3, "text"].item() == "Troisième réponse."
        assert store.judgments_frame()["fluency_score"].isna().tolist() == [True, False]

        # And the migrated file takes the new kinds of rows, while its old unrated round still takes a rating.
        store.record_rating(BLIND, OTHER, all_scores(2), best=1)
        quick = store.record_round(quick_round(RATER))
        store.record_vote(quick, RATER, "a")
        assert store.rated_rounds(RATER) == 2 and store.unrated_rounds(OTHER) == 0
        with sqlite3.connect(path) as raw, pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            raw.execute(f"UPDATE rounds SET mode = 'arena' WHERE id = '{RATED}'")
    finally:
        store.close()

    before = dump(path)
    again = Store(url_of(path))  # at head now: nothing to do, nothing written
    again.close()
    assert migrations_run == [1]
    assert dump(path) == before


def test_a_database_from_before_the_judge_scores_gains_that_table_too(tmp_path):
    path = legacy_file(tmp_path / "older.sqlite", without=("judgments",))
    assert "judgments" not in dump(path)
    with Store(url_of(path)) as store:
        assert store.record_judgments("offline-proxy", {1: (1.0, 2.0)}) == 1
        assert store.counts()["ratings"] == 2
    for table in ("raters", "rounds", "outputs", "ratings", "picks"):
        assert old_rows(path, table) == sorted(LEGACY_ROWS[table])


# -- the migrated schema is the models -----------------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["fresh", "legacy"])
def test_migrated_schema_matches_the_models(tmp_path, origin):
    path = tmp_path / f"{origin}.sqlite"
    if origin == "legacy":
        legacy_file(path)
    Store(url_of(path)).close()
    engine = create_engine(url_of(path))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()
    with sqlite3.connect(path) as raw:
        checks = " ".join(sql for (sql,) in raw.execute("SELECT sql FROM sqlite_master WHERE name = 'rounds'"))
    for name in ("ck_rounds_kind", "ck_rounds_pole", "ck_rounds_blind_has_rater", "ck_rounds_mode",
                 "ck_rounds_quick_is_blind"):
        assert name in checks


def test_in_memory_store_is_migrated_and_stamped():
    store = Store("sqlite://")
    try:
        with store._engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_heads() == ("0002",)
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        store.close()


# -- a database from a newer Persona Studio ------------------------------------------------------------------------


def test_a_database_from_a_newer_version_is_refused_untouched(tmp_path, migrations_run):
    path = tmp_path / "newer.sqlite"
    with Store(url_of(path)) as store:
        store.new_rater()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '9999'")
    before = dump(path)
    migrations_run.clear()

    with pytest.raises(SchemaTooNew) as refused:
        Store(url_of(path))
    message = str(refused.value)
    assert "9999" in message and "0002" in message and str(path) in message and "upgrade Persona Studio" in message
    assert "\n" not in message
    assert migrations_run == [] and dump(path) == before


def test_the_refusal_hides_the_password(tmp_path):
    path = tmp_path / "newer.sqlite"
    Store(url_of(path)).close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '9999'")
    engine = create_engine(url_of(path))
    engine.url = engine.url.set(username="studio", password="s3cret")  # as a server URL would carry one
    try:
        with pytest.raises(SchemaTooNew, match=r"studio:\*\*\*@") as refused:
            db.migrate.upgrade(engine)
        assert "s3cret" not in str(refused.value)
    finally:
        engine.dispose()


# -- a database at 0001 on PostgreSQL ------------------------------------------------------------------------------


def pg_rows(table: str) -> list[dict[str, object]]:
    """LEGACY_ROWS[table] as the old studio would have written them to PostgreSQL: booleans, UTC-aware datetimes and
    JSON objects instead of SQLite's integers and strings."""
    rows = []
    for row in LEGACY_ROWS[table]:
        values = dict(zip(LEGACY_COLUMNS[table].split(", "), row))
        for name, value in values.items():
            if name == "created_at":
                values[name] = datetime.fromisoformat(value).replace(tzinfo=timezone.utc)
            elif name == "custom":
                values[name] = bool(value)
            elif name == "params":
                values[name] = json.loads(value)
        rows.append(values)
    return rows


def pg_dump(engine: Engine) -> dict[str, object]:
    """Everything in a PostgreSQL database that a migration could change: per table its columns, constraints and
    indexes, and every row in a stable order."""
    found: dict[str, object] = {}
    insp = inspect(engine)
    with engine.connect() as connection:
        for table in sorted(insp.get_table_names()):
            found[table] = {
                "columns": [(c["name"], str(c["type"]), c["nullable"], c["default"]) for c in insp.get_columns(table)],
                "checks": sorted((c["name"], c["sqltext"]) for c in insp.get_check_constraints(table)),
                "uniques": sorted((u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(table)),
                "indexes": sorted((i["name"], tuple(i["column_names"])) for i in insp.get_indexes(table)),
                "foreign_keys": sorted((tuple(f["constrained_columns"]), f["referred_table"])
                                       for f in insp.get_foreign_keys(table)),
                "rows": [tuple(r) for r in connection.execute(text(f"SELECT * FROM {table} ORDER BY 1"))],
            }
    return found


def test_a_0001_database_on_postgresql_keeps_every_row_and_gains_the_new_schema(postgres_url, migrations_run):
    """Revision 0002's PostgreSQL branch (plain ADD COLUMN with a server default, ADD CONSTRAINT ... CHECK, a new
    table), which no SQLite test runs: a database at 0001 holding the old rows reaches the head with every row as it
    was, the new columns filled by their defaults, the schema exactly the models; and opening it again changes
    nothing."""
    engine = create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            upgrade_with_alembic(connection, "0001")
            for table in LEGACY_ROWS:
                connection.execute(Table(table, MetaData(), autoload_with=connection).insert(), pg_rows(table))
            for table in ("outputs", "ratings", "picks", "judgments"):  # as a restore does after explicit ids
                connection.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                        f"(SELECT max(id) FROM {table}))"))
        assert migrations_run == []

        with Store(postgres_url) as store:
            assert migrations_run == [1]
            with engine.connect() as connection:
                for table in LEGACY_ROWS:
                    stored = connection.execute(text(f"SELECT {LEGACY_COLUMNS[table]} FROM {table} ORDER BY 1"))
                    assert [dict(r._mapping) for r in stored] == sorted(pg_rows(table), key=lambda r: r["id"]), table
                assert connection.execute(text("SELECT version_num FROM alembic_version")).all() == [("0002",)]
                assert connection.execute(text("SELECT DISTINCT mode FROM rounds")).all() == [("full",)]
                assert connection.execute(text("SELECT count(*) FROM outputs WHERE raw_text IS NULL")).scalar() == 5
                assert connection.execute(text("SELECT count(*) FROM votes")).scalar() == 0
            mode = next(c for c in inspect(engine).get_columns("rounds") if c["name"] == "mode")
            assert not mode["nullable"] and "'full'" in str(mode["default"])
            checks = {c["name"] for c in inspect(engine).get_check_constraints("rounds")}
            assert checks == {"ck_rounds_kind", "ck_rounds_pole", "ck_rounds_blind_has_rater", "ck_rounds_mode",
                              "ck_rounds_quick_is_blind"}
            with engine.connect() as connection:
                context = MigrationContext.configure(connection, opts={"compare_type": True})
                assert compare_metadata(context, Base.metadata) == []

            # The old rows read back through the store, and the database takes the new kinds of rows.
            assert store.counts() == {"raters": 2, "rounds": 3, "outputs": 5, "ratings": 2, "picks": 1, "votes": 0,
                                      "blind_rounds": 2, "compare_rounds": 1, "rated_rounds": 1}
            ratings = store.ratings_frame()
            assert ratings["trait_score"].tolist() == [2, 5] and ratings["best"].tolist() == [False, True]
            assert str(ratings["created_at"].iloc[0]) == "2025-03-01 09:20:00+00:00"
            assert store.outputs_frame().set_index("output_id").loc[3, "text"] == "Troisième réponse."
            store.record_rating(BLIND, OTHER, all_scores(2), best=1)  # a new pick and ratings: the sequences go on
            store.record_vote(store.record_round(quick_round(RATER)), RATER, "a")
            assert store.record_judgments("offline-proxy", {2: (1.0, 2.0)}) == 1
            assert store.rated_rounds(RATER) == 2 and store.unrated_rounds(OTHER) == 0
            with pytest.raises(IntegrityError, match="ck_rounds_mode"), engine.begin() as connection:
                connection.execute(text(f"UPDATE rounds SET mode = 'arena' WHERE id = '{RATED}'"))
            with pytest.raises(IntegrityError, match="ck_rounds_quick_is_blind"), engine.begin() as connection:
                connection.execute(text(f"UPDATE rounds SET mode = 'quick' WHERE id = '{COMPARE}'"))

        before = pg_dump(engine)
        Store(postgres_url).close()  # at head now: nothing to do, nothing written
        assert migrations_run == [1]
        assert pg_dump(engine) == before
    finally:
        engine.dispose()


def test_a_fresh_postgresql_database_is_migrated_to_the_models(postgres_url, migrations_run):
    with Store(postgres_url):
        pass
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_heads() == ("0002",)
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()
    assert migrations_run == [1]


# -- two openers of one fresh database -----------------------------------------------------------------------------


@pytest.fixture(params=["sqlite-file", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database no store has opened yet: a new SQLite file, or a new PostgreSQL database (where the write lock
    that serialises SQLite's openers does not exist: `db.migrate` takes an advisory lock there)."""
    if request.param == "sqlite-file":
        return url_of(tmp_path / "fresh.sqlite")
    return request.getfixturevalue("postgres_url")


def version_and_raters(url: str) -> tuple[list[tuple], int]:
    """The database's alembic version rows and its number of raters, read without a Store."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return ([tuple(r) for r in connection.execute(text("SELECT version_num FROM alembic_version"))],
                    connection.execute(text("SELECT count(*) FROM raters")).scalar_one())
    finally:
        engine.dispose()


def test_threads_opening_one_fresh_database_create_the_schema_once(fresh_url, migrations_run):
    stores = run_together(6, lambda i: Store(fresh_url))
    try:
        assert all(isinstance(s, Store) for s in stores), stores
        assert migrations_run == [1]
        rater = stores[0].new_rater()
        round_id = stores[1].record_round(quick_round(rater))
        assert stores[2].record_vote(round_id, rater, "tie")[0].slot == 0
    finally:
        for s in stores:
            if isinstance(s, Store):
                s.close()
    assert version_and_raters(fresh_url) == ([("0002",)], 1)


def test_processes_opening_one_fresh_database_both_succeed(fresh_url, tmp_path):
    """Two interpreters (as two studio servers would be) open the same new database at the same moment: both
    succeed and the schema is made once. On PostgreSQL, without the advisory lock, both would see no tables and both
    run CREATE TABLE, and the second would fail on a duplicate key in the catalog."""
    go = tmp_path / "go"
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from db import Store
        Path(sys.argv[1]).touch()
        while not Path({str(go)!r}).exists():
            time.sleep(0.001)
        with Store({fresh_url!r}) as store:
            store.new_rater()
        print("opened")
    """)
    ready = [tmp_path / f"ready{i}" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", script, str(r)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for r in ready]
    try:
        deadline = time.monotonic() + 60
        while not all(r.exists() for r in ready):
            running = all(p.poll() is None for p in procs)
            assert time.monotonic() < deadline and running, [p.communicate() for p in procs]
            time.sleep(0.01)
        go.touch()
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert all(out.strip() == "opened" for out, _ in outputs), outputs
    assert version_and_raters(fresh_url) == ([("0002",)], 2)

