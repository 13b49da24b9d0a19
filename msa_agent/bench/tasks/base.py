"""The data model every benchmark task produces: memories, queries with gold keys, stages.

A task is a list of *stages*. Each stage's memories extend the previous stage's (a haystack
that grows), so a system ingests only the new memories at each stage; most tasks have one
stage. Gold answers are memory *keys* (strings unique within the task), never positions, so
that any system (which may split or reorder memories) is scored the same way.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

SPLITS = ("val", "test")
EPOCH = datetime(2020, 1, 1, tzinfo=timezone.utc)
_DATE = re.compile(r"(\d{4})[-/](\d{2})[-/](\d{2})(?:\D+(\d{2}):(\d{2}))?")


@dataclass(frozen=True)
class MemoryItem:
    """One memory to remember. ``order`` is its chronological position (older = smaller)."""

    key: str
    text: str
    namespace: str
    order: int = 0
    date: str | None = None


def memory_time(m: MemoryItem) -> datetime:
    """When ``m`` was written, as the systems are told (``remember(at=...)``): its own date
    where the task has one (sessions "2025-03-01", LongMemEval "2023/04/10 (Mon) 17:50"),
    plus ``order`` seconds to keep same-day memories in order; otherwise ``order`` seconds
    after a fixed epoch, as a bulk import of documents would date them."""
    found = _DATE.search(m.date or "")
    if found is None:
        return EPOCH + timedelta(seconds=m.order)
    y, mo, d, h, mi = (int(g) if g else 0 for g in found.groups())
    return datetime(y, mo, d, h, mi, tzinfo=timezone.utc) + timedelta(seconds=m.order)


@dataclass(frozen=True)
class Query:
    """One question.

    ``metric``: ``"all"`` = every gold key must be in the top k (multi-gold questions);
    ``"newest"`` = a changed fact, ``gold = (new, old)``: the newest must be ranked above the
    old one (and be in the top k). ``split`` is ``"val"`` (for any tuning) or ``"test"``.
    """

    qid: str
    text: str
    gold: tuple[str, ...]
    kind: str
    split: str
    namespace: str
    metric: str = "all"
    hops: int = 1
    answer: str | None = None


@dataclass(frozen=True)
class Stage:
    """Memories and questions at one memory size; ``label`` names the size (e.g. ``16K``)."""

    label: str
    memories: tuple[MemoryItem, ...]
    queries: tuple[Query, ...]


@dataclass(frozen=True)
class Task:
    """A named benchmark task with its stages and a one-paragraph description of the data."""

    name: str
    description: str
    stages: tuple[Stage, ...]
    params: dict[str, object] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """sha1 over every memory and query: two runs with equal fingerprints saw equal data."""
        h = hashlib.sha1()
        for st in self.stages:
            h.update(st.label.encode())
            for m in st.memories:
                h.update(f"{m.key}\x00{m.namespace}\x00{m.text}\x01".encode())
            for q in st.queries:
                h.update(f"{q.qid}\x00{q.text}\x00{'|'.join(q.gold)}\x00{q.split}\x01".encode())
        return h.hexdigest()


def split_of(key: str, seed: int = 0) -> str:
    """A stable val/test assignment from a hash of ``key`` (independent of list order)."""
    digest = hashlib.sha1(f"{seed}:{key}".encode()).digest()
    return SPLITS[digest[0] % 2]
