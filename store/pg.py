"""PostgreSQL side of a remote space: its engine (one schema per space) and its writer lock.

Locking (docs/store.md, "Remote storage"): a writer holds a session-level advisory lock,
``pg_try_advisory_lock(LOCK_CLASS, hash(name))``, on a connection of its own for as long as
the space is open. PostgreSQL drops it when that session ends, so a killed writer leaves no
stale lock. Every write transaction first checks, inside itself, that the lock's session still
holds it (``AdvisoryLock.check``): a writer whose lock connection dropped cannot commit after
another writer took over.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from .errors import SpaceLockedError, StoreUnavailableError
from .location import RemoteLocation, require

CONNECT_TIMEOUT_S = 10
_HELD = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = :pid "
    "AND classid::int8 = :a AND objid::int8 = :b AND objsubid = 2")


def make_engine(loc: RemoteLocation, durable: bool, read_only: bool) -> Engine:
    """An engine whose sessions see only ``loc.name``'s schema (``search_path``); checked to
    reach the server (``StoreUnavailableError`` naming the host, never the password)."""
    require("psycopg", "PostgreSQL metadata")
    options = [f"-c search_path={loc.name}"]  # name is a checked identifier
    if not durable:
        options.append("-c synchronous_commit=off")
    if read_only:
        options.append("-c default_transaction_read_only=on")
    engine = create_engine(loc.sql_url(), pool_pre_ping=True, connect_args={
        "options": " ".join(options), "connect_timeout": CONNECT_TIMEOUT_S,
        "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
        "keepalives_count": 3})  # a dead writer's session (and lock) ends within ~1 min
    try:
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
    except SQLAlchemyError as e:
        engine.dispose()
        raise StoreUnavailableError(f"cannot reach the metadata database of {loc}: "
                                    f"{_first_line(e)}") from None
    return engine


def _first_line(e: SQLAlchemyError) -> str:
    cause = getattr(e, "orig", None) or e
    return str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__


def space_exists(engine: Engine, schema: str) -> bool:
    """Whether ``schema`` holds a space (its ``spaces`` table)."""
    with engine.connect() as c:
        n = c.execute(text("SELECT count(*) FROM information_schema.tables "
                           "WHERE table_schema = :s AND table_name = 'spaces'"),
                      {"s": schema}).scalar()
    return bool(n)


def create_schema(conn: Connection, schema: str) -> None:
    conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")  # checked identifier


class AdvisoryLock:
    """The writer lock of one space: held by a dedicated autocommit connection."""

    def __init__(self, engine: Engine, loc: RemoteLocation) -> None:
        self.key = loc.lock_key
        args = {"a": self.key[0], "b": self.key[1]}
        try:
            self.conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            got = self.conn.execute(text("SELECT pg_try_advisory_lock(:a, :b)"), args).scalar()
            self.pid = self.conn.execute(text("SELECT pg_backend_pid()")).scalar()
        except SQLAlchemyError as e:
            raise StoreUnavailableError(f"lock of {loc}: {_first_line(e)}") from None
        if not got:
            self.conn.close()
            raise SpaceLockedError(f"space {loc} is open for writing elsewhere (another "
                                   "session holds its PostgreSQL advisory lock)")

    def check(self, session: Any) -> None:
        """Inside a write transaction: refuse to commit unless our session holds the lock."""
        held = session.execute(_HELD, {"pid": self.pid, "a": self.key[0],
                                       "b": self.key[1]}).scalar()
        if not held:
            raise SpaceLockedError("this writer lost its PostgreSQL advisory lock (its "
                                   "connection closed); reopen the space to write")

    def release(self) -> None:
        try:
            self.conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"),
                              {"a": self.key[0], "b": self.key[1]})
        except SQLAlchemyError:
            pass  # the session is gone, and the lock with it
        finally:
            self.conn.close()
