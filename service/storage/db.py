"""The database handle: one engine, explicit read and write transactions.

SQLite writes start with ``BEGIN IMMEDIATE`` so that check-then-write sequences (conditional
create, If-Match update) are serialised; PostgreSQL uses row and advisory locks for the same.

This package is the one home of SQL (an import-linter contract keeps SQLAlchemy out of the rest):
code outside it names a transaction's connection by :data:`Connection` from here and sees the
database's failures as :class:`StorageError`, and asks the :class:`Database` what the backend
can do (its capabilities) rather than which backend it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

# ``Connection`` is also the type of an open transaction's connection for the rest of telemon
# (the one SQLAlchemy name used outside this package; it is only ever passed back in here),
# hence exported explicitly.
from sqlalchemy import Connection as Connection
from sqlalchemy import Table, create_engine, event, text
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

_BEFORE_COMMIT = "telemon_before_commit"
_ON_COMMIT = "telemon_on_commit"
_AFTER_COMMIT = "telemon_after_commit"
C = TypeVar("C", bound=Callable[[], None])


def normalize_url(url: str) -> str:
    """Pick the driver telemon uses for a plain ``postgresql://`` URL (psycopg 3)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def fits_key(text: str, width: int) -> bool:
    """Whether ``text`` can be looked up in a key column of ``width`` characters on both
    backends: not longer (PostgreSQL refuses, SQLite keeps it) and without NUL (PostgreSQL
    cannot hold it in text at all)."""
    return len(text) <= width and "\x00" not in text


class StorageError(Exception):
    """The database refused a statement or a transaction, or could not be reached."""

    def __init__(self, cause: SQLAlchemyError) -> None:
        super().__init__(str(cause))
        #: The name of the driver's error (e.g. ``OperationalError``), safe to show: the
        #: message itself can name hosts and users.
        self.kind = type(cause).__name__


class DuplicateKey(StorageError):
    """An insert met a row with the same unique key (e.g. another worker's, a moment ago)."""


@contextmanager
def _translated() -> Iterator[None]:
    """SQLAlchemy's errors as :class:`StorageError` (and :class:`DuplicateKey`)."""
    try:
        yield
    except IntegrityError as exc:
        raise DuplicateKey(exc) from exc
    except SQLAlchemyError as exc:
        raise StorageError(exc) from exc


class Database:
    """Holds the engine; hands out connections inside a transaction."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 10) -> None:
        self.url = normalize_url(url)
        self.engine: Engine = _make_engine(self.url, sqlite_synchronous, pool_size)
        self.dialect = self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        """True on the embedded SQLite backend."""
        return self.dialect == "sqlite"

    @property
    def embedded(self) -> bool:
        """True when the database is a file this host opens itself (SQLite) rather than a
        server that several processes and hosts share: then ``serve`` does the background
        work and migrates the schema itself."""
        return self.is_sqlite

    @property
    def serializes_writes(self) -> bool:
        """True when one write transaction runs at a time (SQLite's ``BEGIN IMMEDIATE``), so
        write transactions must stay short, and a writer waits for the one before it."""
        return self.is_sqlite

    @property
    def notifications_supported(self) -> bool:
        """True when committing transactions can wake listeners (PostgreSQL's NOTIFY; see
        :mod:`service.storage.notifications`); otherwise listeners poll."""
        return not self.is_sqlite

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection in a write transaction; commits on success, rolls back on error.

        Just before the commit it runs the callbacks registered with :func:`before_commit`
        (still inside the transaction: one that raises rolls everything back), after it those
        registered with :func:`after_commit` and :func:`on_commit`. The database's errors
        arrive as :class:`StorageError`.
        """
        with _translated(), self.engine.connect() as conn:
            conn.info["telemon_write"] = True
            conn.info.pop(_BEFORE_COMMIT, None)
            conn.info.pop(_AFTER_COMMIT, None)
            conn.info.pop(_ON_COMMIT, None)
            try:
                with conn.begin():
                    yield conn
                    while pending := conn.info.pop(_BEFORE_COMMIT, None):
                        for callback in pending.values():
                            callback()
            finally:
                # ``conn.info`` belongs to the pooled DBAPI connection and outlives this block.
                conn.info.pop(_BEFORE_COMMIT, None)
                committed = conn.info.pop(_AFTER_COMMIT, {})
                actions = conn.info.pop(_ON_COMMIT, [])
            for callback in committed.values():
                callback()
            for action in actions:
                action()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection in a read-only transaction (a consistent snapshot); the database's
        errors arrive as :class:`StorageError`."""
        with _translated(), self.engine.connect() as conn:
            conn.info["telemon_write"] = False
            with conn.begin():
                yield conn

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read transaction that sees one snapshot for all its statements, however long it
        runs (REPEATABLE READ on PostgreSQL; a SQLite transaction is one already); the
        database's errors arrive as :class:`StorageError`."""
        with _translated(), self.engine.connect() as conn:
            if not self.is_sqlite:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    def ping(self) -> None:
        """Ask the database for a trivial answer; :class:`StorageError` when it gives none."""
        with self.read() as conn:
            conn.execute(text("SELECT 1"))

    def analyze(self, tables: Sequence[str]) -> None:
        """Refresh the planner's statistics of ``tables`` after a bulk load.

        PostgreSQL: ``ANALYZE`` (autovacuum may be off, or not yet awake). SQLite: ``ANALYZE``
        of each table, then ``PRAGMA optimize``.
        """
        with self.engine.connect() as conn:
            if self.is_sqlite:
                for table in tables:
                    conn.exec_driver_sql(f'ANALYZE "{table}"')
                conn.exec_driver_sql("PRAGMA optimize")
            else:
                conn.exec_driver_sql("ANALYZE " + ", ".join(f'"{t}"' for t in tables))
            conn.commit()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def before_commit(conn: Connection, key: str, callback: C) -> C:
    """Run ``callback`` at the end of the write transaction of ``conn``, just before it commits;
    returns the callback registered under ``key`` in this transaction (the first one), so that
    callers can gather work into it."""
    registered: C = conn.info.setdefault(_BEFORE_COMMIT, {}).setdefault(key, callback)
    return registered


def after_commit(conn: Connection, key: str, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the write transaction of ``conn`` has committed (never after a
    rollback); registering the same ``key`` again in one transaction keeps one callback."""
    conn.info.setdefault(_AFTER_COMMIT, {})[key] = callback


def on_commit(conn: Connection, action: Callable[[], None]) -> None:
    """Run ``action`` once the write transaction of ``conn`` has committed, dropped when it
    rolls back; unlike :func:`after_commit`, every action registered runs (e.g. count what the
    transaction wrote)."""
    conn.info.setdefault(_ON_COMMIT, []).append(action)


def dialect_insert(conn: Connection, table: Table) -> PgInsert | SqliteInsert:
    """An INSERT into ``table`` in the backend's own dialect (for ``ON CONFLICT``)."""
    if conn.dialect.name == "postgresql":
        return pg_insert(table)
    return sqlite_insert(table)


#: psycopg's prepare_threshold: executions before it prepares a statement by itself.
_NEVER_AUTO_PREPARE = 2**31 - 1


def _make_engine(url: str, sqlite_synchronous: str, pool_size: int) -> Engine:
    if make_url(url).get_backend_name() != "sqlite":
        # Only the hot write-path statements that ask for it (service.storage.pg_bulk,
        # prepare=True) are prepared, so PostgreSQL may reuse their generic plan and skip
        # planning. Everything else, searches above all, is sent unnamed and planned with the
        # actual values: a generic plan for "one patient's weights" ignores the patient and
        # scans every patient's weights (~1000x slower), which psycopg's default automatic
        # preparation after five executions would bring about.
        return create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size * 2,
            pool_recycle=1800,
            connect_args={"prepare_threshold": _NEVER_AUTO_PREPARE},
        )
    # isolation_level=None hands transaction control to the "begin" hook below.
    engine = create_engine(
        url,
        connect_args={"isolation_level": None, "check_same_thread": False, "timeout": 30},
        pool_size=pool_size,
        max_overflow=pool_size * 2,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        if make_url(url).database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={sqlite_synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("telemon_write") else "BEGIN")

    return engine
