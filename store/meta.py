"""SQLite metadata of a space (SQLAlchemy 2.0). The source of truth for what is committed.

ORM rows never leave this module: every public method returns domain objects.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    and_,
    create_engine,
    delete,
    event,
    false,
    func,
    inspect,
    literal_column,
    or_,
    select,
    table,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from . import lexical
from .errors import InvalidQueryError, StoreCorruptedError, StoreInputError
from .history import events
from .types import HistoryEvent, StoredMemory
from .validate import check_scalar, check_text

SCHEMA_VERSION = 4  # 2: the FTS5 lexical index (store/lexical.py); 3: history and keys tables;
# 4: the expiries table
SPACE_ID = "space"
FILTER_COLUMNS = ("kind", "session_id", "user_id", "agent_id", "source_id")
Scalar = str | int | float | bool | None


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=False)}


class SchemaVersionRow(Base):
    __tablename__ = "schema_version"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)


class SpaceRow(Base):
    __tablename__ = "spaces"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    fingerprint: Mapped[dict[str, Any]]
    arrays: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    n_chunk_rows: Mapped[int] = mapped_column(default=0)
    n_token_rows: Mapped[int] = mapped_column(default=0)
    arrays_dir: Mapped[str] = mapped_column(String(64), default="arrays.zarr")


class MemoryRow(Base):
    __tablename__ = "memories"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    namespace: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    session_id: Mapped[str | None] = mapped_column(String(255))
    user_id: Mapped[str | None] = mapped_column(String(255))
    agent_id: Mapped[str | None] = mapped_column(String(255))
    source_id: Mapped[str | None] = mapped_column(String(255))
    part: Mapped[int]
    created_at: Mapped[datetime]
    token_start: Mapped[int]
    n_tokens: Mapped[int]
    chunk_start: Mapped[int]
    n_chunks: Mapped[int]
    content_hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_memories_namespace_created", "namespace", "created_at"),
        Index("ix_memories_namespace_kind", "namespace", "kind"),
        Index("ix_memories_namespace_session", "namespace", "session_id"),
        Index("ix_memories_namespace_user", "namespace", "user_id"),
        Index("ix_memories_source_part", "source_id", "part"),
        Index("ix_memories_content_hash", "content_hash"),
        Index("ix_memories_chunk_start", "chunk_start"),
    )

    def to_domain(self) -> StoredMemory:
        return to_domain(self)

    @classmethod
    def from_domain(cls, m: StoredMemory) -> MemoryRow:
        return cls(
            id=m.id, namespace=m.namespace, kind=m.kind, text=m.text, meta=m.metadata,
            session_id=m.session_id, user_id=m.user_id, agent_id=m.agent_id,
            source_id=m.source_id, part=m.part,
            created_at=m.created_at.astimezone(timezone.utc).replace(tzinfo=None),
            token_start=m.token_start, n_tokens=m.n_tokens, chunk_start=m.chunk_start,
            n_chunks=m.n_chunks, content_hash=m.content_hash,
        )


def to_domain(r: Any) -> StoredMemory:
    """A ``MemoryRow`` or a Core row of ``MEMORY_COLUMNS`` as a domain object."""
    return StoredMemory(
        id=r.id, namespace=r.namespace, kind=r.kind, text=r.text,
        metadata=dict(r.meta or {}), session_id=r.session_id, user_id=r.user_id,
        agent_id=r.agent_id, source_id=r.source_id, part=r.part,
        created_at=r.created_at.replace(tzinfo=timezone.utc),
        token_start=r.token_start, n_tokens=r.n_tokens,
        chunk_start=r.chunk_start, n_chunks=r.n_chunks, content_hash=r.content_hash,
        expires_at=_aware(getattr(r, "expires_at", None)),
    )


def _aware(dt: datetime | None) -> datetime | None:
    return None if dt is None else dt.replace(tzinfo=timezone.utc)


# Bulk reads select plain columns (no ORM identity map): ~8x faster for 100k-row scans.
MEMORY_COLUMNS = [getattr(MemoryRow, a.key) for a in inspect(MemoryRow).column_attrs]
LIVE_ORDER = (MemoryRow.chunk_start, MemoryRow.token_start, MemoryRow.id)


class SettingRow(Base):
    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)


class HistoryRow(Base):
    """One add, update or forget of a source (``store/history.py``); hashes, never text."""

    __tablename__ = "history"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    memory_id: Mapped[str] = mapped_column(String(64))
    namespace: Mapped[str] = mapped_column(String(255))
    event: Mapped[str] = mapped_column(String(8))
    at: Mapped[datetime]
    text_hash: Mapped[str | None] = mapped_column(String(64))
    text_chars: Mapped[int | None]
    parts: Mapped[int]
    old_text_hash: Mapped[str | None] = mapped_column(String(64))
    old_text_chars: Mapped[int | None]
    metadata_keys: Mapped[list[str] | None] = mapped_column(JSON)
    changed: Mapped[list[str]] = mapped_column(JSON)

    __table_args__ = (Index("ix_history_memory", "memory_id", "id"),)

    @classmethod
    def from_domain(cls, e: HistoryEvent) -> HistoryRow:
        return cls(memory_id=e.memory_id, namespace=e.namespace, event=e.event,
                   at=e.at.astimezone(timezone.utc).replace(tzinfo=None), text_hash=e.text_hash,
                   text_chars=e.text_chars, parts=e.parts, old_text_hash=e.old_text_hash,
                   old_text_chars=e.old_text_chars, metadata_keys=e.metadata_keys,
                   changed=e.changed)

    def to_domain(self) -> HistoryEvent:
        return HistoryEvent(
            memory_id=self.memory_id, namespace=self.namespace, event=self.event,
            at=self.at.replace(tzinfo=timezone.utc), text_hash=self.text_hash,
            text_chars=self.text_chars, parts=self.parts, old_text_hash=self.old_text_hash,
            old_text_chars=self.old_text_chars, metadata_keys=self.metadata_keys,
            changed=list(self.changed or []))


class KeyRow(Base):
    """A caller's key of a source, unique in its namespace (``remember(key=...)``)."""

    __tablename__ = "memory_keys"
    namespace: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    memory_id: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("ix_memory_keys_memory", "memory_id"),)


Key = tuple[str, str, str]  # (namespace, key, source id)


class ExpiryRow(Base):
    """When a memory part stops being recalled (``remember(expires_at=...)``); a separate
    table, so a space of schema 3 opened read-only still reads (it has no expiries)."""

    __tablename__ = "expiries"
    memory_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime]

    __table_args__ = (Index("ix_expiries_at", "expires_at"),)


class PendingWipeRow(Base):
    """Array row ranges of deleted memories not yet zeroed (redone at next open)."""

    __tablename__ = "pending_wipes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    unit: Mapped[str] = mapped_column(String(8))
    start: Mapped[int]
    stop: Mapped[int]


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
    """Turn any SQLAlchemy/sqlite failure into ``StoreCorruptedError``."""
    try:
        yield
    except SQLAlchemyError as e:
        cause = getattr(e, "orig", None) or e
        raise StoreCorruptedError(f"{what}: metadata database error: {cause}") from None
    except sqlite3.Error as e:
        raise StoreCorruptedError(f"{what}: metadata database error: {e}") from None


def _meta_path(key: str) -> str:
    """The JSON path of top-level metadata ``key``; refuses keys SQLite cannot address."""
    if not key or '"' in key or "\x00" in key:
        raise StoreInputError(f"bad metadata key {key!r} (empty, or holds a quote or NUL)")
    return f'$."{key}"'


def _metadata_equals(key: str, value: Scalar) -> ColumnElement[bool]:
    """Strict JSON equality of top-level metadata ``key`` with ``value``.

    Strings match only strings, bools only bools, numbers only numbers (1 == 1.0), and
    None matches JSON null or a missing key. SQLite-specific (``json_type``); PostgreSQL
    would use ``jsonb_typeof`` here, the only dialect-specific spot.
    """
    path = _meta_path(key)
    jtype = func.json_type(MemoryRow.meta, path)
    extracted = func.json_extract(MemoryRow.meta, path)
    if value is None:
        return or_(jtype.is_(None), jtype == "null")
    if isinstance(value, bool):
        return jtype == ("true" if value else "false")
    if isinstance(value, int | float):
        return and_(jtype.in_(["integer", "real"]), extracted == value)
    return and_(jtype == "text", extracted == value)


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
    return col.is_(None) if value is None else col == value


def _json_values(values: list[Any]) -> Any:
    """``SELECT value FROM json_each(:values)``: ONE bound parameter for any number of values
    (an OR of thousands of ``=`` overflows SQLite's expression depth of 1000)."""
    return select(func.json_each(json.dumps(values)).table_valued("value").c.value)


def _in_list(key: str, values: list[Any]) -> ColumnElement[bool]:
    """``key`` equals any of ``values``, with ``_equals``'s type rules."""
    singles = {(type(v), v) for v in values if v is None or isinstance(v, bool)}
    parts = [_equals(key, v) for _, v in sorted(singles, key=repr)]
    strs = [v for v in values if isinstance(v, str)]
    nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    name, is_meta = _split_key(key)
    if not is_meta:
        if strs or nums:
            parts.append(getattr(MemoryRow, name).in_(_json_values(strs + nums)))
        return or_(false(), *parts)
    path = _meta_path(name)
    jtype = func.json_type(MemoryRow.meta, path)
    extracted = func.json_extract(MemoryRow.meta, path)
    if strs:
        parts.append(and_(jtype == "text", extracted.in_(_json_values(strs))))
    if nums:
        parts.append(and_(jtype.in_(["integer", "real"]), extracted.in_(_json_values(nums))))
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


class MetaStore:
    """The SQL side of a space: allocation ends, memory rows, settings, pending wipes."""

    def __init__(self, path: Path, durable: bool = True, read_only: bool = False) -> None:
        self.engine = _make_engine(path, durable, read_only)
        self.lexical_ready = False  # the FTS index exists (schema >= 2); set by create/load
        self.history_ready = False  # the history and keys tables exist (schema >= 3)
        self.expiry_ready = False  # the expiries table exists (schema >= 4)

    def close(self) -> None:
        self.engine.dispose()

    # -- lifecycle ---------------------------------------------------------------------------
    def create(self, fingerprint: dict[str, Any], arrays: list[dict[str, Any]]) -> None:
        """Create the schema, the lexical index and the single ``spaces`` row."""
        lexical.require_fts5()
        with sql_errors("create"):
            Base.metadata.create_all(self.engine)
            with Session(self.engine) as s, s.begin():
                lexical.create_index(s.connection())
                s.add(SchemaVersionRow(version=SCHEMA_VERSION))
                s.add(SpaceRow(id=SPACE_ID, fingerprint=fingerprint, arrays=arrays,
                               created_at=datetime.now(timezone.utc).replace(tzinfo=None),
                               n_chunk_rows=0, n_token_rows=0, arrays_dir="arrays.zarr"))
        self.lexical_ready = self.history_ready = self.expiry_ready = True

    def load(self) -> SpaceInfo:
        """Read the space row, checking the schema version (and that FTS5 is there)."""
        lexical.require_fts5()
        with sql_errors("open"), Session(self.engine) as s:
            versions = s.scalars(select(SchemaVersionRow.version)).all()
            if len(versions) != 1:
                raise StoreCorruptedError(f"schema_version table has {len(versions)} rows")
            if versions[0] > SCHEMA_VERSION:
                raise StoreCorruptedError(
                    f"space schema version {versions[0]} is newer than supported "
                    f"({SCHEMA_VERSION}); upgrade msa-agent")
            self.lexical_ready = versions[0] >= 2
            self.history_ready = versions[0] >= 3
            self.expiry_ready = versions[0] >= 4
            row = s.get(SpaceRow, SPACE_ID)
            if row is None:
                raise StoreCorruptedError("spaces row missing")
            return SpaceInfo(dict(row.fingerprint), list(row.arrays), row.n_chunk_rows,
                             row.n_token_rows, row.arrays_dir)

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

    def _select(self) -> Any:
        """``MEMORY_COLUMNS`` plus each row's expiry (outer join), where the table exists."""
        if not self.expiry_ready:
            return select(*MEMORY_COLUMNS)
        return select(*MEMORY_COLUMNS, ExpiryRow.expires_at).outerjoin(
            ExpiryRow, ExpiryRow.memory_id == MemoryRow.id)

    # -- writes ------------------------------------------------------------------------------
    def commit_add(self, memories: Sequence[StoredMemory], ends: tuple[int, int],
                   replaced: Sequence[str] = (), keys: Sequence[Key] = ()) -> None:
        """Insert ``memories`` and advance the committed ends in ONE transaction (the FTS
        index is written in it too, by the ``memories`` insert trigger), deleting first every
        part of the ``replaced`` sources (their ranges become pending wipes). ``keys`` are
        set, and one history event is recorded per source, in the same transaction."""
        with sql_errors("add"), Session(self.engine) as s, s.begin():
            gone = self._remove(s, [or_(MemoryRow.id.in_(list(replaced)),
                                        MemoryRow.source_id.in_(list(replaced)))]
                                ) if replaced else []
            s.add_all([MemoryRow.from_domain(m) for m in memories])
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
            s.execute(delete(MemoryRow).where(MemoryRow.id.in_(ids)))
            if self.expiry_ready:
                s.execute(delete(ExpiryRow).where(ExpiryRow.memory_id.in_(ids)))
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
            gone = self._remove(s, conds)
            self._drop_keys(s, {m.id for m in gone})
            self._record(s, gone, [])
        if gone:
            self.checkpoint()
        return gone

    def checkpoint(self) -> None:
        """Fold the WAL into the database and truncate it, so deleted text does not linger
        in old WAL frames (``secure_delete`` already zeroes it in the database pages)."""
        with sql_errors("checkpoint"), self.engine.connect() as c:
            c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def optimize_lexical(self) -> None:
        """Merge the FTS index into one segment, then truncate the WAL (used by compact)."""
        with sql_errors("optimize"), Session(self.engine) as s, s.begin():
            lexical.optimize(s.connection())
        self.checkpoint()

    def pending_wipes(self) -> list[tuple[int, str, int, int]]:
        with sql_errors("read pending wipes"), Session(self.engine) as s:
            rows = s.scalars(select(PendingWipeRow)).all()
            return [(r.id, r.unit, r.start, r.stop) for r in rows if r.stop > r.start]

    def clear_wipes(self, ids: Sequence[int] | None = None) -> None:
        with sql_errors("clear pending wipes"), Session(self.engine) as s, s.begin():
            stmt = delete(PendingWipeRow)
            s.execute(stmt if ids is None else stmt.where(PendingWipeRow.id.in_(list(ids))))

    def relocate(self, moves: list[dict[str, Any]], ends: tuple[int, int],
                 arrays_dir: str) -> None:
        """After compaction: new offsets for every memory, new ends and arrays folder."""
        with sql_errors("compact"), Session(self.engine) as s, s.begin():
            if moves:
                s.execute(update(MemoryRow), moves)
            s.execute(update(SpaceRow).where(SpaceRow.id == SPACE_ID).values(
                n_chunk_rows=ends[0], n_token_rows=ends[1], arrays_dir=arrays_dir))
            s.execute(delete(PendingWipeRow))

    # -- reads -------------------------------------------------------------------------------
    def get_many(self, ids: Sequence[str]) -> dict[str, StoredMemory]:
        return {r.id: to_domain(r) for r in self._rows_by_id(ids, self._select())}

    def created_times(self, ids: Sequence[str]) -> dict[str, datetime]:
        """``created_at`` (UTC) of the known ``ids``; reads no text or metadata."""
        rows = self._rows_by_id(ids, select(MemoryRow.id, MemoryRow.created_at))
        return {r.id: r.created_at.replace(tzinfo=timezone.utc) for r in rows}

    def _rows_by_id(self, ids: Sequence[str], stmt: Any) -> list[Any]:
        """The rows ``stmt`` (a select) gives for the distinct known ``ids``, in batches that
        stay under SQLite's bound-variable limit."""
        ids, out = list(dict.fromkeys(ids)), []
        with sql_errors("get"), Session(self.engine) as s:
            for i in range(0, len(ids), 10_000):
                stmt_i = stmt.where(MemoryRow.id.in_(ids[i:i + 10_000]))
                out += s.execute(stmt_i).all()
        return out

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
        match = " OR ".join(f'"{t}"' for t in terms)
        stmt = lexical_statement(match, conds, max(k, lexical.RESCORE_POOL))
        with sql_errors("lexical search"), Session(self.engine) as s:
            rows = s.execute(stmt).all()
            scores = lexical.rescore(s.connection(), terms, [r.rowid for r in rows])
        ranked = sorted(rows, key=lambda r: (-scores[r.rowid], -r.created_at.timestamp(), r.id))
        return [(r.id, scores[r.rowid]) for r in ranked[:k]]

    def matched_terms(self, terms: list[str], ids: list[str]) -> dict[str, set[str]]:
        """``lexical.matched_terms`` of the memories ``ids`` (unknown ids left out)."""
        rowid = literal_column(f"{MemoryRow.__tablename__}.rowid")
        with sql_errors("lexical terms"), Session(self.engine) as s:
            rows = s.execute(select(MemoryRow.id, rowid).where(MemoryRow.id.in_(ids))).all()
            found = lexical.matched_terms(s.connection(), terms, [r[1] for r in rows])
        return {r[0]: found[r[1]] for r in rows if r[1] in found}

    def rare_terms(self, text: str, n: int, exclude: set[str]) -> list[str]:
        with sql_errors("lexical terms"), Session(self.engine) as s:
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
        with sql_errors("namespaces"), Session(self.engine) as s:
            return {ns: int(n) for ns, n in s.execute(stmt).all()}

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
        stmt = select(ExpiryRow.memory_id).where(ExpiryRow.expires_at <= _naive_utc(at, "at"))
        if namespace is not None:
            stmt = stmt.join(MemoryRow, MemoryRow.id == ExpiryRow.memory_id).where(
                MemoryRow.namespace == namespace)
        with sql_errors("expired"), Session(self.engine) as s:
            return list(s.scalars(stmt))

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
            s.merge(SettingRow(key=key, value=value))
