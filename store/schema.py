"""The tables of a space (SQLAlchemy 2.0 ORM), the same on SQLite and PostgreSQL except the
``lex_*`` tables, which only a PostgreSQL space has (its lexical index, store/postings.py; a
SQLite space has FTS5 instead, store/lexical.py). ORM rows never leave the store:
``to_domain`` converts them at the boundary.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    inspect,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from .types import HistoryEvent, StoredMemory


def Str(n: int) -> TypeEngine[str]:  # noqa: N802 (a type, like String)
    """``VARCHAR(n)`` on SQLite (which does not enforce it), ``TEXT`` on PostgreSQL (which
    would): the store's input limits are its own (store/validate.py), the same on both."""
    return String(n).with_variant(Text(), "postgresql")


PG_ONLY = {"postgresql_only": True}  # ``Table.info`` of the tables only a PostgreSQL space has


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=False),
                           int: Integer().with_variant(BigInteger(), "postgresql")}


class SchemaVersionRow(Base):
    __tablename__ = "schema_version"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)


class SpaceRow(Base):
    __tablename__ = "spaces"
    id: Mapped[str] = mapped_column(Str(32), primary_key=True)
    fingerprint: Mapped[dict[str, Any]]
    arrays: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    n_chunk_rows: Mapped[int] = mapped_column(default=0)
    n_token_rows: Mapped[int] = mapped_column(default=0)
    arrays_dir: Mapped[str] = mapped_column(Str(64), default="arrays.zarr")


class MemoryRow(Base):
    __tablename__ = "memories"
    id: Mapped[str] = mapped_column(Str(64), primary_key=True)
    namespace: Mapped[str] = mapped_column(Str(255))
    kind: Mapped[str] = mapped_column(Str(64))
    text: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    session_id: Mapped[str | None] = mapped_column(Str(255))
    user_id: Mapped[str | None] = mapped_column(Str(255))
    agent_id: Mapped[str | None] = mapped_column(Str(255))
    source_id: Mapped[str | None] = mapped_column(Str(255))
    part: Mapped[int]
    created_at: Mapped[datetime]
    token_start: Mapped[int]
    n_tokens: Mapped[int]
    chunk_start: Mapped[int]
    n_chunks: Mapped[int]
    content_hash: Mapped[str] = mapped_column(Str(64))

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
    key: Mapped[str] = mapped_column(Str(255), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)


class HistoryRow(Base):
    """One add, update or forget of a source (``store/history.py``); hashes, never text."""

    __tablename__ = "history"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    memory_id: Mapped[str] = mapped_column(Str(64))
    namespace: Mapped[str] = mapped_column(Str(255))
    event: Mapped[str] = mapped_column(Str(8))
    at: Mapped[datetime]
    text_hash: Mapped[str | None] = mapped_column(Str(64))
    text_chars: Mapped[int | None]
    parts: Mapped[int]
    old_text_hash: Mapped[str | None] = mapped_column(Str(64))
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
    namespace: Mapped[str] = mapped_column(Str(255), primary_key=True)
    key: Mapped[str] = mapped_column(Str(255), primary_key=True)
    memory_id: Mapped[str] = mapped_column(Str(64))

    __table_args__ = (Index("ix_memory_keys_memory", "memory_id"),)


Key = tuple[str, str, str]  # (namespace, key, source id)


class ExpiryRow(Base):
    """When a memory part stops being recalled (``remember(expires_at=...)``); a separate
    table, so a space of schema 3 opened read-only still reads (it has no expiries)."""

    __tablename__ = "expiries"
    memory_id: Mapped[str] = mapped_column(Str(64), primary_key=True)
    expires_at: Mapped[datetime]

    __table_args__ = (Index("ix_expiries_at", "expires_at"),)


class PendingWipeRow(Base):
    """Array row ranges of deleted memories not yet zeroed (redone at next open)."""

    __tablename__ = "pending_wipes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    unit: Mapped[str] = mapped_column(Str(8))
    start: Mapped[int]
    stop: Mapped[int]


# -- PostgreSQL only: the lexical index (store/postings.py) ------------------------------
class PostingRow(Base):
    __tablename__ = "lex_postings"
    term: Mapped[str] = mapped_column(Text, primary_key=True)
    memory_id: Mapped[str] = mapped_column(
        Text, ForeignKey("memories.id", ondelete="CASCADE"), primary_key=True)
    tf: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_lex_postings_memory", "memory_id"), {"info": PG_ONLY})


class LexDocRow(Base):
    __tablename__ = "lex_docs"
    memory_id: Mapped[str] = mapped_column(
        Text, ForeignKey("memories.id", ondelete="CASCADE"), primary_key=True)
    length: Mapped[int] = mapped_column(Integer)

    __table_args__ = ({"info": PG_ONLY},)


class LexStatsRow(Base):
    __tablename__ = "lex_stats"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    n_docs: Mapped[int]
    n_tokens: Mapped[int]

    __table_args__ = ({"info": PG_ONLY},)
