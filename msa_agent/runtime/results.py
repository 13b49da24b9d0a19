"""What the runtime hands back: stored memories with their routing evidence, never positions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from msa_agent.store import HistoryEvent, StoredMemory
from msa_agent.types import Explanation, MemoryEvent, MemoryRecord, RecallHit


@dataclass(frozen=True)
class Scope:
    """Which memories a request may see: one namespace, narrowed by ``where`` equality filters
    and by creation time (``since <= created_at < until``); with ``alive_at``, only those not
    expired then (``expires_at`` after it, or none)."""

    namespace: str
    where: Mapping[str, Any] | None = None
    since: datetime | None = None
    until: datetime | None = None
    alive_at: datetime | None = None

    @property
    def narrowed(self) -> bool:
        return bool(self.where) or self.since is not None or self.until is not None


@dataclass(frozen=True)
class Recalled:
    """One routed memory: its routing score, the round that found it and why.

    ``via`` holds the ids of the memories whose text led to it (memory interleave);
    ``layer_scores`` maps each MSA layer to the memory's score there; ``best_chunk`` is the
    chunk (offset within the memory) that scored highest; ``superseded_by``, a newer hit of
    the same request that restates it (an older version of a changed fact; hybrid recall's
    version rule, ``fusion.superseded``).
    """

    memory: StoredMemory
    score: float
    round: int = 1
    via: tuple[str, ...] = ()
    layer_scores: dict[int, float] = field(default_factory=dict)
    best_chunk: int = 0
    channels: dict[str, float] = field(default_factory=dict)
    superseded_by: str | None = None


def page(hits: Sequence[Recalled], k: int, offset: int = 0, min_score: float | None = None,
         group: bool = False) -> list[Recalled]:
    """The ``offset``-th to ``offset + k``-th of ranked ``hits``: those scoring below
    ``min_score`` dropped, and with ``group`` only the best part of each source (so the parts
    of one long text do not fill the slots). ``hits`` must hold enough for the page."""
    kept, sources = [], set()
    for h in hits:
        if min_score is not None and h.score < min_score:
            continue
        source = h.memory.source_id or h.memory.id
        if group and source in sources:
            continue
        sources.add(source)
        kept.append(h)
    return kept[offset:offset + k]


def recall_hit(r: Recalled, explanation: Explanation | None = None) -> RecallHit:
    """The public form of a routed memory."""
    m = r.memory
    return RecallHit(id=m.id, text=m.text, score=r.score, kind=m.kind, namespace=m.namespace,
                     metadata=m.metadata, created_at=m.created_at, source_id=m.source_id,
                     expires_at=m.expires_at, round=r.round, via=list(r.via),
                     explanation=explanation)


def explanation(r: Recalled, chunk_text: str, combine: str) -> Explanation:
    """Why ``r`` was recalled: per-layer scores, the matched chunk, each channel's part."""
    return Explanation(layer_scores=r.layer_scores, best_chunk=r.best_chunk,
                       best_chunk_text=chunk_text, combine=combine, channels=r.channels)


def memory_event(e: HistoryEvent) -> MemoryEvent:
    """The public form of a history event."""
    return MemoryEvent(
        id=e.memory_id, namespace=e.namespace, event=e.event, at=e.at,
        text_sha256=e.text_hash, text_chars=e.text_chars, parts=e.parts,
        old_text_sha256=e.old_text_hash, old_text_chars=e.old_text_chars,
        metadata_keys=e.metadata_keys, changed=e.changed)


def memory_record(m: StoredMemory) -> MemoryRecord:
    """The public form of a stored memory."""
    return MemoryRecord(
        id=m.id, namespace=m.namespace, kind=m.kind, text=m.text, metadata=m.metadata,
        session_id=m.session_id, user_id=m.user_id, agent_id=m.agent_id, source_id=m.source_id,
        part=m.part, created_at=m.created_at, n_tokens=m.n_tokens, n_chunks=m.n_chunks,
        expires_at=m.expires_at,
    )
