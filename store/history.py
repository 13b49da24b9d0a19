"""History events of a write, computed from the rows it removes and the rows it adds.

A *source* is a memory and its other parts (rows sharing ``source_id``; the first part's id is
the source's id). Events keep hashes and lengths of text, never the text itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from .types import HistoryEvent, StoredMemory

FIELDS = ("kind", "session_id", "user_id", "agent_id", "created_at")


def source_of(m: StoredMemory) -> str:
    """The id of the source ``m`` belongs to (its own id for a memory of one part)."""
    return m.source_id or m.id


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def group(rows: Sequence[StoredMemory]) -> dict[str, list[StoredMemory]]:
    """Rows by source, each source's parts in order (sources in order of appearance)."""
    out: dict[str, list[StoredMemory]] = {}
    for m in rows:
        out.setdefault(source_of(m), []).append(m)
    return {s: sorted(parts, key=lambda m: m.part) for s, parts in out.items()}


def whole_text(parts: Sequence[StoredMemory]) -> str:
    """A source's text: its parts joined in order (parts cover the text contiguously)."""
    return "".join(m.text for m in parts)


def events(removed: Sequence[StoredMemory], added: Sequence[StoredMemory],
           at: datetime) -> list[HistoryEvent]:
    """One event per source: added only = "add", both = "update", removed only = "forget"."""
    old, new = group(removed), group(added)
    out = [_event(sid, old.get(sid), parts, at) for sid, parts in new.items()]
    return out + [_event(sid, parts, None, at) for sid, parts in old.items() if sid not in new]


def _event(sid: str, old: list[StoredMemory] | None, new: list[StoredMemory] | None,
           at: datetime) -> HistoryEvent:
    head = (new or old or [])[0]
    before = whole_text(old) if old else None
    after = whole_text(new) if new else None
    kind = "update" if old and new else ("add" if new else "forget")
    return HistoryEvent(
        memory_id=sid, namespace=head.namespace, event=kind, at=at,
        text_hash=None if after is None else sha256(after),
        text_chars=None if after is None else len(after), parts=len(new or old or []),
        old_text_hash=None if before is None else sha256(before),
        old_text_chars=None if before is None else len(before),
        metadata_keys=sorted(head.metadata) if new else None,
        changed=_changed(old[0], new[0], before, after) if old and new else [])


def _changed(old: StoredMemory, new: StoredMemory, before: str | None,
             after: str | None) -> list[str]:
    """Which of text, metadata and the row fields differ between two versions."""
    out = ["text"] if before != after else []
    if old.metadata != new.metadata:
        out.append("metadata")
    return out + [f for f in FIELDS if getattr(old, f) != getattr(new, f)]
