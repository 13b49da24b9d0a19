"""Where each new document goes: a new source, an existing source left as it is (a duplicate,
or a key whose text and fields did not change), or an existing source replaced (an update or
an upsert). Resolved under the engine's lock, against the space."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from msa_agent.errors import InvalidInputError, UnknownMemoryError
from msa_agent.store import NewMemory, Space, StoredMemory
from msa_agent.store.history import sha256, whole_text

Plan = list[tuple[list[int], NewMemory]]  # (token ids, row) per part
FIELDS = ("kind", "session_id", "user_id", "agent_id")


@dataclass(frozen=True)
class NewDoc:
    """A memory to store: its text and row fields (the facade has validated them)."""

    text: str
    namespace: str
    kind: str = "document"
    metadata: dict[str, Any] | None = None
    session_id: str | None = None
    user_id: str | None = None
    agent_id: str | None = None
    created_at: datetime | None = None  # None = now (an update keeps the source's)
    key: str | None = None  # upsert: the source this key names is updated, if any
    dedupe: bool = False  # an identical text of the namespace returns its id instead
    replaces: str | None = None  # update: the source id whose every part this replaces
    expires_at: datetime | None = None  # aware UTC; None = never (an update keeps the source's)


@dataclass(frozen=True)
class Target:
    """``action``: "add", "same" (nothing written; ``id`` is the existing source) or
    "replace" (``old``: the source's parts; ``reuse``: same text, its rows are kept)."""

    action: str
    id: str
    old: tuple[StoredMemory, ...] = ()
    reuse: bool = False

    @property
    def encode(self) -> bool:
        return self.action == "add" or (self.action == "replace" and not self.reuse)


def resolve(space: Space, docs: Sequence[NewDoc], planned: Sequence[Plan]) -> list[Target]:
    """One target per doc. Within the batch a key may appear once, and a deduplicated text
    already added by an earlier doc returns that doc's id."""
    keys = [(d.namespace, d.key) for d in docs if d.key is not None]
    if len(set(keys)) != len(keys):
        raise InvalidInputError("a key appears twice in one call")
    out: list[Target] = []
    first: dict[tuple[str, str], str] = {}
    for d, plan in zip(docs, planned):
        t = _target(space, d, plan)
        if t.action == "add" and d.dedupe:
            t = Target("same", first[d.namespace, d.text]) if (d.namespace, d.text) in first \
                else t
            first.setdefault((d.namespace, d.text), t.id)
        out.append(t)
    return out


def _target(space: Space, d: NewDoc, plan: Plan) -> Target:
    if d.replaces is not None:
        parts = source_parts(space, d.namespace, d.replaces)
        if not parts:
            raise UnknownMemoryError(f"no memory with id {d.replaces!r}")
        return _versus(d, parts)
    if d.key is not None:
        sid = space.keyed(d.namespace, d.key)
        parts = source_parts(space, d.namespace, sid) if sid else []
        if parts:
            return _versus(d, parts)
    if d.dedupe:
        dup = duplicate(space, d.namespace, d.text, plan[0][1].text)
        if dup is not None:
            return Target("same", dup)
    return Target("add", plan[0][1].id or "")


def _versus(d: NewDoc, parts: list[StoredMemory]) -> Target:
    """Replace ``parts`` by ``d``, or leave them (text, metadata and fields unchanged)."""
    head, same_text = parts[0], whole_text(parts) == d.text
    same = same_text and head.metadata == (d.metadata or {}) and all(
        getattr(head, f) == getattr(d, f) for f in FIELDS) and (
        d.created_at is None or d.created_at == head.created_at) and (
        d.expires_at == head.expires_at)
    sid = head.source_id or head.id
    return Target("same", sid) if same else Target("replace", sid, tuple(parts), same_text)


def source_parts(space: Space, namespace: str, sid: str) -> list[StoredMemory]:
    """Every part of the source ``sid`` in ``namespace``, in order ([] if there is none)."""
    parts = space.find(namespace, {"source_id": sid})
    if not parts:
        m = space.get(sid)
        parts = [m] if m is not None and m.namespace == namespace else []
    return sorted(parts, key=lambda m: m.part)


def duplicate(space: Space, namespace: str, text: str, head: str) -> str | None:
    """The id of a source of ``namespace`` whose whole text is ``text`` (``head``: its first
    part's text, found by the indexed hash), or None."""
    for m in space.with_hash(namespace, sha256(head)):
        sid = m.source_id or m.id
        if whole_text(source_parts(space, namespace, sid)) == text:
            return sid
    return None
