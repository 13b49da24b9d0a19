"""SQL metadata of a space (SQLAlchemy 2.0). The source of truth for what is committed.

SQLite for a local space; PostgreSQL for a remote one (store/pg.py), with the same schema
(store/schema.py): the few dialect-specific spots (JSON filters, the lexical index) are
marked. ORM rows never leave this module: every public method returns domain objects.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    and_,
    bindparam,
    cast,
    create_engine,
    delete,
    event,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    table,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DataError, SQLAlchemyError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from . import lexical
from .errors import (
    InvalidQueryError,
    StoreCorruptedError,
    StoreInputError,
    StoreUnavailableError,
)
from .history import events
from .postings import PostingsIndex
from .schema import (  # noqa: F401  (Key, Str, to_domain: re-exported for older imports)
    LIVE_ORDER,
    MEMORY_COLUMNS,
    Base,
    ExpiryRow,
    HistoryRow,
    Key,
    KeyRow,
    MemoryRow,
    PendingWipeRow,
    SchemaVersionRow,
    SettingRow,
    SpaceRow,
    Str,
    to_domain,
)
from .types import HistoryEvent, StoredMemory
from .validate import check_scalar, check_text

SCHEMA_VERSION = 4  # 2: the FTS5 lexical index (store/lexical.py); 3: history and keys tables;
# 4: the expiries table
SPACE_ID = "space"
FILTER_COLUMNS = ("kind", "session_id", "user_id", "agent_id", "source_id")
Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class SpaceInfo:
    fingerprint: dict[str, Any]
    arrays: list[dict[str, Any]]
    n_chunk_rows: int
    n_token_rows: int
    arrays_dir: str


def _make_engine(path: Path, durable: bool, read_only: bool = False) -> Engine:
    if read_only:  # no writes at all, not even the journal-mode switch
        engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    else:
        engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        if read_only:
            cur.execute("PRAGMA query_only=ON")
        else:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            cur.execute("PRAGMA secure_delete=ON")  # deleted text is zeroed in the pages
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return engine


@contextmanager
def sql_errors(what: str) -> Iterator[None]:
    """Turn any SQLAlchemy/sqlite failure into ``StoreCorruptedError``; on PostgreSQL, a lost
    connection into ``StoreUnavailableError`` and a refused value into ``StoreInputError``."""
    try:
        yield
    except SQLAlchemyError as e:
        cause = getattr(e, "orig", None) or e
        if type(cause).__module__.startswith("psycopg"):
            _raise_pg(what, e, cause)
        raise StoreCorruptedError(f"{what}: metadata database error: {cause}") from None
    except sqlite3.Error as e:
        raise StoreCorruptedError(f"{what}: metadata database error: {e}") from None


def _raise_pg(what: str, e: SQLAlchemyError, cause: BaseException) -> None:
    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    psycopg = sys.modules["psycopg"]
    if isinstance(cause, psycopg.OperationalError | psycopg.InterfaceError) or getattr(
            e, "connection_invalidated", False):
        raise StoreUnavailableError(f"{what}: metadata database unreachable: {first}") from None
    if isinstance(e, DataError):
        raise StoreInputError(f"{what}: PostgreSQL refused a value: {first}") from None


def _meta_path(key: str) -> str:
    """The JSON path of top-level metadata ``key``; refuses keys SQLite cannot address."""
    if not key or '"' in key or "\x00" in key:
        raise StoreInputError(f"bad metadata key {key!r} (empty, or holds a quote or NUL)")
    return f'$."{key}"'


class PerDialect(ColumnElement[bool]):
    """A condition written for each dialect: SQLite's JSON1 functions, PostgreSQL's jsonb.
    The compiler picks one, so ``build_filters`` stays free of any engine."""

    inherit_cache = False  # statements holding one are not cached (filters vary anyway)
    type = Boolean()

    def __init__(self, sqlite: ColumnElement[bool], postgresql: ColumnElement[bool]) -> None:
        self.sqlite, self.postgresql = sqlite, postgresql


@compiles(PerDialect)
def _compile_sqlite(element: PerDialect, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.sqlite, **kw)})"  # one operand, whatever surrounds it


@compiles(PerDialect, "postgresql")
def _compile_postgresql(element: PerDialect, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.postgresql, **kw)})"


def _pg_value(key: str) -> Any:
    """PostgreSQL: top-level metadata ``key`` as jsonb (NULL when missing)."""
    return cast(MemoryRow.meta, JSONB)[key]


def _metadata_equals(key: str, value: Scalar) -> ColumnElement[bool]:
    """Strict JSON equality of top-level metadata ``key`` with ``value``.

    Strings match only strings, bools only bools, numbers only numbers (1 == 1.0), and
    None matches JSON null or a missing key. SQLite: ``json_type`` and ``json_extract``;
    PostgreSQL: jsonb equality, which has exactly these rules (numbers compare as numeric).
    """
    path = _meta_path(key)
    jtype = func.json_type(MemoryRow.meta, path)
    extracted = func.json_extract(MemoryRow.meta, path)
    pg = _pg_value(key)
    if value is None:
        return PerDialect(or_(jtype.is_(None), jtype == "null"),
                          or_(pg.is_(None), func.jsonb_typeof(pg) == "null"))
    if isinstance(value, bool):
        sqlite = jtype == ("true" if value else "false")
    elif isinstance(value, int | float):
        sqlite = and_(jtype.in_(["integer", "real"]), extracted == value)
    else:
        sqlite = and_(jtype == "text", extracted == value)
    return PerDialect(sqlite, pg == literal(value, JSONB))


def _check_scalar(key: str, value: Any) -> None:
    if value is not None and not isinstance(value, str | int | float | bool):
        raise StoreInputError(f"filter {key!r}: values must be scalars or lists of scalars, "
                         f"got {type(value).__name__}")
    check_scalar(value, f"filter {key!r}")


def _split_key(key: str) -> tuple[str, bool]:
    """``(key, is_metadata)``: a ``metadata.`` prefix or a non-column key means metadata."""
    if key.startswith("metadata."):
        return key[len("metadata."):], True
    return key, key not in FILTER_COLUMNS


def _equals(key: str, value: Scalar) -> ColumnElement[bool]:
    key, is_meta = _split_key(key)
    if is_meta:
        return _metadata_equals(key, value)
    col = getattr(MemoryRow, key)
    if value is None:
        return col.is_(None)
    if isinstance(value, str):
        return col == value
    # a number or bool against a text column: SQLite compares the value's text (affinity);
    # PostgreSQL has no text = number operator, so it is given that text
    text = ("1" if value else "0") if isinstance(value, bool) else json.dumps(value)
    return PerDialect(col == value, col == text)


def _json_values(values: list[Any], pg_type: str = "jsonb") -> tuple[Any, Any]:
    """``SELECT value FROM json_each(:values)`` (SQLite) and its ``jsonb_array_elements``
    twin: ONE bound parameter for any number of values (an OR of thousands of ``=``
    overflows SQLite's expression depth of 1000). ``pg_type`` "text" gives text values."""
    fn = func.jsonb_array_elements_text if pg_type == "text" else func.jsonb_array_elements
    return (select(func.json_each(json.dumps(values)).table_valued("value").c.value),
            select(fn(literal(values, JSONB)).table_valued("value").c.value))


def _in_list(key: str, values: list[Any]) -> ColumnElement[bool]:
    """``key`` equals any of ``values``, with ``_equals``'s type rules."""
    singles = {(type(v), v) for v in values if v is None or isinstance(v, bool)}
    parts = [_equals(key, v) for _, v in sorted(singles, key=repr)]
    strs = [v for v in values if isinstance(v, str)]
    nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    name, is_meta = _split_key(key)
    if not is_meta:
        if strs or nums:
            col = getattr(MemoryRow, name)
            sqlite, pg = _json_values(strs + nums, "text")
            parts.append(PerDialect(col.in_(sqlite), col.in_(pg)))
        return or_(false(), *parts)
    path = _meta_path(name)
    jtype = func.json_type(MemoryRow.meta, path)
    extracted = func.json_extract(MemoryRow.meta, path)
    if strs:
        sqlite, pg = _json_values(strs)
        parts.append(PerDialect(and_(jtype == "text", extracted.in_(sqlite)),
                                _pg_value(name).in_(pg)))
    if nums:
        sqlite, pg = _json_values(nums)
        parts.append(PerDialect(and_(jtype.in_(["integer", "real"]), extracted.in_(sqlite)),
                                _pg_value(name).in_(pg)))
    return or_(false(), *parts)


def _condition(key: str, value: Any) -> ColumnElement[bool]:
    if isinstance(value, list | tuple):
        for v in value:
            _check_scalar(key, v)
        return _in_list(key, list(value))
    _check_scalar(key, value)
    return _equals(key, value)


def id_filter(ids: Sequence[str]) -> list[Any]:
    """SQL condition selecting memories by id."""
    return [MemoryRow.id.in_(list(ids))]


def build_filters(namespace: str | None, where: Mapping[str, Any] | None) -> list[Any]:
    """SQL conditions for ``namespace`` plus equality/IN filters of ``where``."""
    conds: list[Any] = [] if namespace is None else [MemoryRow.namespace == namespace]
    for key, value in (where or {}).items():
        if not isinstance(key, str):
            raise StoreInputError(f"filter keys must be strings, got {key!r}")
        check_text(key, "filter key")
        if "\x00" in key:
            raise StoreInputError(f"filter key {key!r} holds a NUL character")
        conds.append(_condition(key, value))
    return conds


def _naive_utc(dt: Any, what: str) -> datetime:
    """``dt`` as naive UTC, the form ``created_at`` is stored in; naive input is taken as UTC."""
    if not isinstance(dt, datetime):
        raise InvalidQueryError(f"{what} must be a datetime or None, got {type(dt).__name__}")
    return dt if dt.tzinfo is None else dt.astimezone(timezone.utc).replace(tzinfo=None)


def alive_filter(at: datetime) -> Any:
    """SQL condition: the memory has no expiry at or before ``at``."""
    expired = select(ExpiryRow.memory_id).where(ExpiryRow.expires_at <= _naive_utc(at, "at"))
    return MemoryRow.id.not_in(expired)  # uncorrelated: the (indexed) expired set, usually tiny


def time_filters(since: datetime | None, until: datetime | None) -> list[Any]:
    """SQL conditions ``since <= created_at < until`` (half-open, so windows tile); either
    bound may be None."""
    conds: list[Any] = []
    if since is not None:
        conds.append(MemoryRow.created_at >= _naive_utc(since, "since"))
    if until is not None:
        conds.append(MemoryRow.created_at < _naive_utc(until, "until"))
    return conds


_FTS = table(lexical.FTS_TABLE, literal_column("rowid"))
_FTS_ALL = literal_column(lexical.FTS_TABLE)  # the table-named column FTS5 matches against


def lexical_statement(match: str, conds: list[Any], k: int) -> Any:
    """Top-``k`` memory ids by BM25 among rows matching ``match`` AND ``conds``.

    The filters sit in the same WHERE as MATCH, so they apply before ORDER BY/LIMIT. FTS5's
    ``bm25()`` is lower-is-better; it is negated so higher is better. Ties: newer first.
    """
    bm25 = func.bm25(_FTS_ALL)
    on = literal_column(f"{MemoryRow.__tablename__}.rowid") == _FTS.c.rowid
    return (select(MemoryRow.id, (-bm25).label("score"),
                   literal_column(f"{MemoryRow.__tablename__}.rowid").label("rowid"),
                   MemoryRow.created_at)
            .select_from(_FTS.join(MemoryRow, on))
            .where(_FTS_ALL.op("MATCH")(match), *conds)
            .order_by(bm25, MemoryRow.created_at.desc(), MemoryRow.id).limit(k))


def _has_nul(value: Any) -> bool:
    """Whether a JSON tree holds a NUL character in any key or string (depth is bounded by
    the metadata check that ran before)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


def _expired_statement(by_namespace: bool) -> Any:
    """Ids whose expiry is at or before the parameter ``at`` (of the parameter ``namespace``
    when ``by_namespace``)."""
    stmt = select(ExpiryRow.memory_id).where(ExpiryRow.expires_at <= bindparam("at"))
    if by_namespace:  # looked up per expired row: a join made SQLite walk every memory of
        # the namespace instead (140 ms a recall at 200k memories)
        owner = select(MemoryRow.namespace).where(MemoryRow.id == ExpiryRow.memory_id)
        stmt = stmt.where(owner.scalar_subquery() == bindparam("namespace"))
    return stmt


class MetaStore:
    """The SQL side of a space: allocation ends, memory rows, settings, pending wipes."""

    def __init__(self, path: Path | Engine, durable: bool = True, read_only: bool = False,
                 schema: str | None = None) -> None:
        """A local space's ``meta.sqlite`` at ``path``, or a PostgreSQL ``Engine`` whose
        sessions see the space's ``schema`` (store/pg.py)."""
        self.engine = path if isinstance(path, Engine) else _make_engine(path, durable,
                                                                          read_only)
        self.schema = schema
        self.postings: Any = None  # the lexical index of a PostgreSQL space (store/postings.py)
        if self.engine.dialect.name == "postgresql":
            self.postings = PostingsIndex()
        self.lock_check: Callable[[Session], None] | None = None  # a remote writer's lock
        self.lexical_ready = False  # the FTS index exists (schema >= 2); set by create/load
        self.history_ready = False  # the history and keys tables exist (schema >= 3)
        self.expiry_ready = False  # the expiries table exists (schema >= 4)
        self._statements: dict[tuple[str, bool], Any] = {}  # hot reads, built once (_built)

    def close(self) -> None:
        self.engine.dispose()

    def _tables(self) -> list[Any]:
        pg = self.postings is not None
        return [t for t in Base.metadata.sorted_tables if pg or not t.info.get("postgresql_only")]

    def _guard(self, s: Session) -> None:
        """In a write transaction of a remote space: the writer still holds its lock."""
        if self.lock_check is not None:
            self.lock_check(s)

    # -- lifecycle ---------------------------------------------------------------------------
    def create(self, fingerprint: dict[str, Any], arrays: list[dict[str, Any]]) -> None:
        """Create the schema, the lexical index and the single ``spaces`` row (on
        PostgreSQL, the space's schema too: all in one transaction)."""
        lexical.require_fts5()
        with sql_errors("create"):
            if self.postings is None:
                Base.metadata.create_all(self.engine, tables=self._tables())
            with Session(self.engine) as s, s.begin():
                if self.postings is None:
                    lexical.create_index(s.connection())
                else:
                    s.connection().exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
                    Base.metadata.create_all(s.connection(), tables=self._tables())
                    self.postings.create(s)
                s.add(SchemaVersionRow(version=SCHEMA_VERSION))
                s.add(SpaceRow(id=SPACE_ID, fingerprint=fingerprint, arrays=arrays,
                               created_at=datetime.now(timezone.utc).replace(tzinfo=None),
                               n_chunk_rows=0, n_token_rows=0, arrays_dir="arrays.zarr"))
        self.lexical_ready = self.history_ready = self.expiry_ready = True

    def load(self) -> SpaceInfo:
        """Read the space row, checking the schema version (and that FTS5 is there)."""
        lexical.require_fts5()
        with sql_errors("open"), Session(self.engine) as s:
            self._check_schema(s.scalars(select(SchemaVersionRow.version)).all())
            row = s.get(SpaceRow, SPACE_ID)
            if row is None:
                raise StoreCorruptedError("spaces row missing")
            return SpaceInfo(dict(row.fingerprint), list(row.arrays), row.n_chunk_rows,
                             row.n_token_rows, row.arrays_dir)

    def ends(self) -> tuple[int, int, str]:
        """The committed chunk and token row ends and the arrays folder, with the schema
        checked again (a writer may upgrade it): what a read-only view follows before every
        read. Three columns on a Core connection, not :meth:`load`'s whole row, whose
        fingerprint JSON cost ~0.3 ms a read (docs/recall.md, "Fusion's reads")."""
        with sql_errors("open"), self.engine.connect() as conn:
            self._check_schema(conn.execute(self._built(
                "version", lambda: select(SchemaVersionRow.version))).scalars().all())
            row = conn.execute(self._built("ends", lambda: select(
                SpaceRow.n_chunk_rows, SpaceRow.n_token_rows, SpaceRow.arrays_dir).where(
                SpaceRow.id == SPACE_ID))).first()
        if row is None:
            raise StoreCorruptedError("spaces row missing")
        return int(row[0]), int(row[1]), str(row[2])

    def _check_schema(self, versions: Sequence[int]) -> None:
        """Refuse a space whose schema is missing or newer than this code; set the flags of
        the tables its version has."""
        if len(versions) != 1:
            raise StoreCorruptedError(f"schema_version table has {len(versions)} rows")
        if versions[0] > SCHEMA_VERSION:
            raise StoreCorruptedError(
                f"space schema version {versions[0]} is newer than supported "
                f"({SCHEMA_VERSION}); upgrade msa-agent")
        self.lexical_ready = versions[0] >= 2
        self.history_ready = versions[0] >= 3
        self.expiry_ready = versions[0] >= 4

    def upgrade(self) -> None:
        """Bring an older space to ``SCHEMA_VERSION`` in one transaction: version 1 -> 2
        creates the lexical index and fills it from the existing rows; 2 -> 3 creates the
        (empty) history and keys tables: memories stored before have no history; 3 -> 4 the
        (empty) expiries table. Writers only."""
        with sql_errors("upgrade"), Session(self.engine) as s, s.begin():
            version = s.scalars(select(SchemaVersionRow.version)).one()
            if version >= SCHEMA_VERSION:
                return
            if version < 2:
                lexical.create_index(s.connection())
                lexical.rebuild(s.connection())
            for t in (HistoryRow.__table__, KeyRow.__table__, ExpiryRow.__table__):
                t.create(s.connection(), checkfirst=True)  # type: ignore[attr-defined]
            s.execute(update(SchemaVersionRow).values(version=SCHEMA_VERSION))
        self.lexical_ready = self.history_ready = self.expiry_ready = True

    def alive(self, at: datetime | None) -> list[Any]:
        """Conditions keeping memories not expired at ``at`` (none for None, or for a space
        that predates expiries)."""
        return [alive_filter(at)] if at is not None and self.expiry_ready else []

    def _select(self, core: bool = False) -> Any:
        """``MEMORY_COLUMNS`` plus each row's expiry (outer join), where the table exists.
        ``core``: labelled by attribute name, for a Core connection's rows (an ORM session
        names them so itself; ``MemoryRow.meta`` is the column "metadata")."""
        columns = [c.label(c.key) for c in MEMORY_COLUMNS] if core else MEMORY_COLUMNS
        if not self.expiry_ready:
            return select(*columns)
        return select(*columns, ExpiryRow.expires_at).outerjoin(
            ExpiryRow, ExpiryRow.memory_id == MemoryRow.id)

    # -- writes ------------------------------------------------------------------------------
    def check_storable(self, memories: Sequence[Any]) -> None:
        """PostgreSQL text (and jsonb) cannot hold a NUL character, which SQLite stores: refuse
        it on a remote space before anything is written."""
        if self.postings is None:
            return
        for i, m in enumerate(memories):
            values = [m.text, m.namespace, m.kind, m.id, m.session_id, m.user_id, m.agent_id,
                      m.source_id, m.key]
            if any(isinstance(x, str) and "\x00" in x for x in values) or _has_nul(m.metadata):
                raise StoreInputError(f"memories[{i}] holds a NUL character, which a "
                                      "PostgreSQL space cannot store")

    def commit_add(self, memories: Sequence[StoredMemory], ends: tuple[int, int],
                   replaced: Sequence[str] = (), keys: Sequence[Key] = ()) -> None:
        """Insert ``memories`` and advance the committed ends in ONE transaction (the FTS
        index is written in it too, by the ``memories`` insert trigger), deleting first every
        part of the ``replaced`` sources (their ranges become pending wipes). ``keys`` are
        set, and one history event is recorded per source, in the same transaction."""
        with sql_errors("add"), Session(self.engine) as s, s.begin():
            self._guard(s)
            gone = self._remove(s, [or_(MemoryRow.id.in_(list(replaced)),
                                        MemoryRow.source_id.in_(list(replaced)))]
                                ) if replaced else []
            s.add_all([MemoryRow.from_domain(m) for m in memories])
            if self.postings is not None:  # SQLite: the insert trigger indexes the text
                s.flush()
                self.postings.add(s, memories)
            self._add_expiries(s, memories)
            self._drop_keys(s, {m.id for m in gone} - {m.id for m in memories})
            for ns, key, sid in keys:
                s.merge(KeyRow(namespace=ns, key=key, memory_id=sid))
            self._record(s, gone, memories)
            s.execute(update(SpaceRow).where(SpaceRow.id == SPACE_ID)
                      .values(n_chunk_rows=ends[0], n_token_rows=ends[1]))
        if replaced:
            self.checkpoint()

    def _add_expiries(self, s: Session, memories: Sequence[StoredMemory]) -> None:
        timed = [m for m in memories if m.expires_at is not None]
        if timed and not self.expiry_ready:
            raise StoreInputError("this space predates expiries: open it for writing once "
                                  "to upgrade it")
        s.add_all([ExpiryRow(memory_id=m.id, expires_at=_naive_utc(m.expires_at, "expires_at"))
                   for m in timed])

    def _drop_keys(self, s: Session, ids: set[str]) -> None:
        """Forget the keys that name any of ``ids`` (sources that are gone)."""
        if ids and self.history_ready:
            s.execute(delete(KeyRow).where(KeyRow.memory_id.in_(list(ids))))

    def _remove(self, s: Session, conds: list[Any]) -> list[StoredMemory]:
        """Delete the matching rows, recording their array ranges as pending wipes and
        dropping their words from the FTS index."""
        gone = [to_domain(r) for r in s.execute(self._select().where(*conds))]
        for m in gone:
            s.add(PendingWipeRow(unit="chunk", start=m.chunk_start,
                                 stop=m.chunk_start + m.n_chunks))
            s.add(PendingWipeRow(unit="token", start=m.token_start,
                                 stop=m.token_start + m.n_tokens))
        if gone:
            ids = [m.id for m in gone]
            if self.postings is not None:
                self.postings.remove(s, ids)
            s.execute(delete(MemoryRow).where(MemoryRow.id.in_(ids)))
            if self.expiry_ready:
                s.execute(delete(ExpiryRow).where(ExpiryRow.memory_id.in_(ids)))
            if self.postings is None:
                lexical.optimize(s.connection())
        return gone

    def _record(self, s: Session, removed: Sequence[StoredMemory],
                added: Sequence[StoredMemory]) -> None:
        """History events of this write; a forgotten source's metadata key names are blanked
        in its earlier events (no forgotten metadata survives in the history)."""
        if not self.history_ready:
            return
        found = events(removed, added, datetime.now(timezone.utc))
        forgotten = [e.memory_id for e in found if e.event == "forget"]
        if forgotten:
            s.execute(update(HistoryRow).where(HistoryRow.memory_id.in_(forgotten))
                      .values(metadata_keys=None))
        s.add_all([HistoryRow.from_domain(e) for e in found])

    def delete(self, conds: list[Any]) -> list[StoredMemory]:
        """Delete matching rows and record their array ranges as pending wipes.

        One transaction: the delete trigger removes the rows from the FTS index, and
        ``optimize`` then drops their tombstoned words from the index segments (about 30 ms
        for 2,000 memories and 0.3 s for 20,000: it grows with the index).
        """
        with sql_errors("delete"), Session(self.engine) as s, s.begin():
            self._guard(s)
            gone = self._remove(s, conds)
            self._drop_keys(s, {m.id for m in gone})
            self._record(s, gone, [])
        if gone:
            self.checkpoint()
        return gone

    def checkpoint(self) -> None:
        """Fold the WAL into the database and truncate it, so deleted text does not linger
        in old WAL frames (``secure_delete`` already zeroes it in the database pages)."""
        if self.postings is not None:
            return  # PostgreSQL: no WAL file of ours (docs/store.md, "Remote storage")
        with sql_errors("checkpoint"), self.engine.connect() as c:
            c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def optimize_lexical(self) -> None:
        """Merge the FTS index into one segment, then truncate the WAL (used by compact)."""
        if self.postings is not None:
            return  # the postings hold no tombstones: a delete removes its rows
        with sql_errors("optimize"), Session(self.engine) as s, s.begin():
            lexical.optimize(s.connection())
        self.checkpoint()

    def pending_wipes(self) -> list[tuple[int, str, int, int]]:
        with sql_errors("read pending wipes"), Session(self.engine) as s:
            rows = s.scalars(select(PendingWipeRow)).all()
            return [(r.id, r.unit, r.start, r.stop) for r in rows if r.stop > r.start]

    def clear_wipes(self, ids: Sequence[int] | None = None) -> None:
        with sql_errors("clear pending wipes"), Session(self.engine) as s, s.begin():
            self._guard(s)
            stmt = delete(PendingWipeRow)
            s.execute(stmt if ids is None else stmt.where(PendingWipeRow.id.in_(list(ids))))

    def relocate(self, moves: list[dict[str, Any]], ends: tuple[int, int],
                 arrays_dir: str) -> None:
        """After compaction: new offsets for every memory, new ends and arrays folder."""
        with sql_errors("compact"), Session(self.engine) as s, s.begin():
            self._guard(s)
            if moves:
                s.execute(update(MemoryRow), moves)
            s.execute(update(SpaceRow).where(SpaceRow.id == SPACE_ID).values(
                n_chunk_rows=ends[0], n_token_rows=ends[1], arrays_dir=arrays_dir))
            s.execute(delete(PendingWipeRow))

    # -- reads -------------------------------------------------------------------------------
    def get_many(self, ids: Sequence[str]) -> dict[str, StoredMemory]:
        return {r.id: to_domain(r) for r in self._rows_by_id(ids, "records")}

    def created_times(self, ids: Sequence[str]) -> dict[str, datetime]:
        """``created_at`` (UTC) of the known ``ids``; reads no text or metadata."""
        rows = self._rows_by_id(ids, "times")
        return {r.id: r.created_at.replace(tzinfo=timezone.utc) for r in rows}

    def _rows_by_id(self, ids: Sequence[str], what: str, conn: Connection | None = None
                    ) -> list[Any]:
        """The rows of :meth:`_by_ids` statement ``what`` for the distinct known ``ids``, in
        batches that stay under SQLite's bound-variable limit; on ``conn`` if given. A Core
        connection and a statement built once: every recall reads its fusion pool this way,
        and an ORM session plus a new ``IN`` clause cost ~10x the SQLite work (docs/recall.md,
        "Fusion's reads")."""
        ids, out, stmt = list(dict.fromkeys(ids)), [], self._by_ids(what)
        with sql_errors("get"), ExitStack() as stack:
            conn = conn or stack.enter_context(self.engine.connect())
            for i in range(0, len(ids), 10_000):
                out += conn.execute(stmt, {"ids": ids[i:i + 10_000]}).all()
        return out

    def _by_ids(self, what: str) -> Any:
        """A select of the rows whose id is in the expanding parameter ``ids``: "records"
        (:meth:`_select`'s columns), "times" (id, created_at) or "rowids" (id, rowid; SQLite)."""
        columns = {"records": lambda: self._select(core=True),
                   "times": lambda: select(MemoryRow.id, MemoryRow.created_at),
                   "rowids": lambda: select(MemoryRow.id, literal_column(
                       f"{MemoryRow.__tablename__}.rowid"))}[what]
        return self._built(what, lambda: columns().where(
            MemoryRow.id.in_(bindparam("ids", expanding=True))))

    def _built(self, key: str, build: Callable[[], Any]) -> Any:
        """``build()``'s statement, built once per ``key`` and schema (records join the
        expiries once that table exists): the reads of every recall bind new values only."""
        if (key, self.expiry_ready) not in self._statements:
            self._statements[key, self.expiry_ready] = build()
        return self._statements[key, self.expiry_ready]

    def find(self, conds: list[Any], limit: int | None, offset: int,
             descending: bool) -> list[StoredMemory]:
        keys = (MemoryRow.created_at, MemoryRow.chunk_start, MemoryRow.token_start)
        order = [k.desc() for k in keys] if descending else list(keys)
        stmt = self._select().where(*conds).order_by(*order).offset(offset)
        if limit is not None:
            stmt = stmt.limit(limit)
        with sql_errors("find"), Session(self.engine) as s:
            return [to_domain(r) for r in s.execute(stmt)]

    def lexical_search(self, terms: list[str], conds: list[Any], k: int
                       ) -> list[tuple[str, float]]:
        """``(id, score)`` of the best ``k`` memories for the search ``terms``: candidates by
        FTS5's OR match (filters applied), rescored with Lucene's idf (``lexical.rescore``);
        ties: newer first, then id."""
        if self.postings is not None:
            with sql_errors("lexical search"), Session(self.engine) as s:
                return self.postings.search(s, terms, conds, k)
        match = " OR ".join(f'"{t}"' for t in terms)
        stmt = lexical_statement(match, conds, max(k, lexical.RESCORE_POOL))
        with sql_errors("lexical search"), self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
            scores = lexical.rescore(conn, terms, [r.rowid for r in rows])
        ranked = sorted(rows, key=lambda r: (-scores[r.rowid], -r.created_at.timestamp(), r.id))
        return [(r.id, scores[r.rowid]) for r in ranked[:k]]

    def matched_terms(self, terms: list[str], ids: list[str]) -> dict[str, set[str]]:
        """``lexical.matched_terms`` of the memories ``ids`` (unknown ids left out)."""
        if self.postings is not None:
            with sql_errors("lexical terms"), Session(self.engine) as s:
                return self.postings.matched_terms(s, terms, ids)
        with sql_errors("lexical terms"), self.engine.connect() as conn:
            rows = self._rows_by_id(ids, "rowids", conn)
            found = lexical.matched_terms(conn, terms, [r[1] for r in rows])
        return {r[0]: found[r[1]] for r in rows if r[1] in found}

    def rare_terms(self, text: str, n: int, exclude: set[str]) -> list[str]:
        with sql_errors("lexical terms"), Session(self.engine) as s:
            if self.postings is not None:
                return self.postings.rare_terms(s, text, n, exclude)
            return lexical.rare_terms(s.connection(), text, n, exclude)

    def count(self, conds: list[Any]) -> int:
        with sql_errors("count"), Session(self.engine) as s:
            return int(s.scalar(select(func.count()).select_from(MemoryRow).where(*conds)) or 0)

    def live(self) -> list[StoredMemory]:
        """Every memory ordered by its array position."""
        stmt = self._select().order_by(*LIVE_ORDER)
        with sql_errors("live"), Session(self.engine) as s:
            return [to_domain(r) for r in s.execute(stmt)]

    def live_ranges(self, unit: str) -> list[tuple[int, int]]:
        """``[start, stop)`` of every memory in ``live()`` order, for one unit (narrow query)."""
        start, n = ((MemoryRow.chunk_start, MemoryRow.n_chunks) if unit == "chunk"
                    else (MemoryRow.token_start, MemoryRow.n_tokens))
        stmt = select(start, start + n).order_by(*LIVE_ORDER)
        with sql_errors("live"), Session(self.engine) as s:
            return [(a, b) for a, b in s.execute(stmt)]

    def namespace_counts(self) -> dict[str, int]:
        stmt = (select(MemoryRow.namespace, func.count()).group_by(MemoryRow.namespace)
                .order_by(MemoryRow.namespace))
        with sql_errors("namespaces"), Session(self.engine) as s:  # sorted by code point on
            return {ns: int(n) for ns, n in sorted(s.execute(stmt).all())}  # every collation

    def totals(self) -> tuple[int, int, int]:
        stmt = select(func.count(), func.coalesce(func.sum(MemoryRow.n_tokens), 0),
                      func.coalesce(func.sum(MemoryRow.n_chunks), 0))
        with sql_errors("stats"), Session(self.engine) as s:
            n, t, c = s.execute(stmt).one()
            return int(n), int(t), int(c)

    def history(self, memory_id: str) -> list[HistoryEvent]:
        """Every recorded event of the source ``memory_id``, oldest first."""
        if not self.history_ready:
            return []
        stmt = select(HistoryRow).where(HistoryRow.memory_id == memory_id).order_by(HistoryRow.id)
        with sql_errors("history"), Session(self.engine) as s:
            return [r.to_domain() for r in s.scalars(stmt)]

    def expired(self, at: datetime, namespace: str | None) -> list[str]:
        """Ids (of ``namespace``; None = all) whose expiry is at or before ``at``."""
        if not self.expiry_ready:
            return []
        values: dict[str, Any] = {"at": _naive_utc(at, "at")}
        if namespace is not None:
            values["namespace"] = namespace
        stmt = self._built("expired" if namespace is None else "expired-ns",
                           lambda: _expired_statement(namespace is not None))
        with sql_errors("expired"), self.engine.connect() as conn:  # each recall asks
            return list(conn.execute(stmt, values).scalars())

    def keyed(self, namespace: str, key: str) -> str | None:
        """The source id that ``key`` names in ``namespace``, or None."""
        if not self.history_ready:
            return None
        with sql_errors("key"), Session(self.engine) as s:
            row = s.get(KeyRow, (namespace, key))
            return None if row is None else row.memory_id

    def with_hash(self, namespace: str, content_hash: str) -> list[StoredMemory]:
        """First parts in ``namespace`` whose own text has this sha256 (indexed)."""
        stmt = self._select().where(
            MemoryRow.namespace == namespace, MemoryRow.content_hash == content_hash,
            MemoryRow.part == 0).order_by(*LIVE_ORDER)
        with sql_errors("find"), Session(self.engine) as s:
            return [to_domain(r) for r in s.execute(stmt)]

    def get_setting(self, key: str) -> Any:
        with sql_errors("get_setting"), Session(self.engine) as s:
            row = s.get(SettingRow, key)
            return None if row is None else row.value

    def set_setting(self, key: str, value: Any) -> None:
        json.dumps(value)  # raises TypeError early for non-JSON values
        with sql_errors("set_setting"), Session(self.engine) as s, s.begin():
            self._guard(s)
            s.merge(SettingRow(key=key, value=value))
