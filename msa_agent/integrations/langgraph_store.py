"""``MsaStore``: LangGraph long-term memory (``langgraph.store.base.BaseStore``) on MSA.

Mapping:

* a LangGraph namespace ``("users", "alice")`` is our namespace ``"lg/users/alice"`` (prefix
  configurable; each label percent-encoded, so ``/`` inside a label survives the round trip);
* an item is one memory (``kind="langgraph"``) whose metadata holds ``lg_key``, the value
  dict ``lg_value`` and ``lg_created_at``; its text is the value's ``text``/``content``/
  ``memory`` string, the fields named by ``index=[...]``, or else the value as JSON;
* ``put`` of an existing key stores the new value, then forgets the old one (newest wins);
* ``search`` with a query ranks by MSA routing score; without one, newest first.

The core is :meth:`MsaStore.batch`; ``abatch`` runs it in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, unquote

from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)

from msa_agent.errors import InvalidInputError
from msa_agent.memory import Memory
from msa_agent.types import MemoryRecord

KIND = "langgraph"
TEXT_FIELDS = ("text", "content", "memory")


class MsaStore(BaseStore):
    """LangGraph ``BaseStore`` backed by a :class:`~msa_agent.memory.Memory`.

    >>> store = MsaStore(Memory.open("./mem"))  # doctest: +SKIP
    >>> store.put(("users", "alice"), "food", {"text": "Alice is vegetarian"})  # doctest: +SKIP
    >>> store.search(("users", "alice"), query="what does Alice eat?")  # doctest: +SKIP
    """

    supports_ttl = False

    def __init__(self, memory: Memory, *, prefix: str = "lg") -> None:
        self.memory, self.prefix = memory, prefix
        self._lock = threading.RLock()

    # ----------------------------------------------------------------------------- batch
    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ops in order; consecutive puts are written together (last put of a key wins)."""
        results: list[Result] = []
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        with self._lock:
            for op in ops:
                if isinstance(op, PutOp):
                    puts[(tuple(op.namespace), op.key)] = op
                    results.append(None)
                    continue
                self._write(list(puts.values()))
                puts.clear()
                results.append(self._read(op))
            self._write(list(puts.values()))
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """``batch`` in a worker thread, as :class:`AsyncMemory` runs each ``Memory`` call:
        the whole batch is one call here, because it holds the store's lock across its ops
        (their order and the grouping of puts are ``batch``'s)."""
        return await asyncio.to_thread(self.batch, list(ops))

    def _read(self, op: Op) -> Result:
        if isinstance(op, GetOp):
            return self._get(op)
        if isinstance(op, SearchOp):
            return self._search(op)
        if isinstance(op, ListNamespacesOp):
            return self._list_namespaces(op)
        raise ValueError(f"unknown store operation {type(op).__name__}")

    # ----------------------------------------------------------------------------- writes
    def _write(self, puts: list[PutOp]) -> None:
        """Store new values, then forget the versions they replace (and deleted keys)."""
        if not puts:
            return
        old = {(tuple(p.namespace), p.key): self._versions(p.namespace, p.key) for p in puts}
        items = [self._item(p, old[(tuple(p.namespace), p.key)]) for p in puts
                 if p.value is not None]
        self.memory.remember_many(items)
        for (ns, _key), records in old.items():
            sources = sorted({r.source_id or r.id for r in records})
            if sources:
                self.memory.forget(where={"source_id": sources}, namespace=self.encode(ns))

    def _item(self, op: PutOp, previous: list[MemoryRecord]) -> dict[str, Any]:
        now = datetime.now(timezone.utc).isoformat()
        created = previous[0].metadata.get("lg_created_at", now) if previous else now
        value = dict(op.value or {})
        return {"text": value_text(value, op.index), "kind": KIND,
                "namespace": self.encode(op.namespace),
                "metadata": {"lg_key": op.key, "lg_value": value, "lg_created_at": created,
                             "lg_indexed": op.index is not False}}

    def _versions(self, namespace: tuple[str, ...], key: str) -> list[MemoryRecord]:
        """Every stored version (all parts) of a key, oldest first."""
        return self.memory.list(namespace=self.encode(namespace), where={"lg_key": key},
                                limit=None)

    # ----------------------------------------------------------------------------- reads
    def _get(self, op: GetOp) -> Item | None:
        latest = [r for r in self._versions(op.namespace, op.key) if r.part == 0]
        if not latest:
            return None
        found = self._to_item(latest[-1])
        return Item(value=found.value, key=found.key, namespace=found.namespace,
                    created_at=found.created_at, updated_at=found.updated_at)

    def _search(self, op: SearchOp) -> list[SearchItem]:
        if op.filter is not None and not isinstance(op.filter, dict):
            raise InvalidInputError(f"filter must be a dict, got {type(op.filter).__name__}")
        spaces = [ns for ns in self._namespaces() if ns[: len(op.namespace_prefix)]
                  == tuple(op.namespace_prefix)]
        items = [i for ns in spaces for i in self.latest_items(ns)
                 if matches_filter(i.value, op.filter)]
        if op.query:
            items = self._rank(op.query, items, op.offset + op.limit)
        else:
            items.sort(key=lambda i: i.updated_at, reverse=True)
        return items[op.offset: op.offset + op.limit]

    def latest_items(self, namespace: tuple[str, ...]) -> list[SearchItem]:
        """Latest version of every key of a namespace."""
        rows = self.memory.list(namespace=self.encode(namespace), where={"kind": KIND},
                                limit=None)
        latest = {r.metadata["lg_key"]: r for r in rows if r.part == 0}
        return [self._to_item(r) for r in latest.values()]

    def _rank(self, query: str, items: list[SearchItem], want: int) -> list[SearchItem]:
        """Items ordered by MSA routing score (best part of each key), unscored ones dropped.

        Each namespace is asked for ``2 * want + 8`` documents (a long value has several).
        """
        by_ref = {(i.namespace, i.key): i for i in items}
        scores: dict[tuple[tuple[str, ...], str], float] = {}
        for ns in {i.namespace for i in items}:
            keys = [i.key for i in items if i.namespace == ns]
            hits = self.memory.recall(query, k=2 * want + 8, namespace=self.encode(ns),
                                      where={"lg_key": keys, "lg_indexed": True})
            for h in hits:
                ref = (ns, h.metadata["lg_key"])
                scores[ref] = max(scores.get(ref, float("-inf")), h.score)
        out = []
        for ref in sorted(scores, key=scores.__getitem__, reverse=True):
            by_ref[ref].score = scores[ref]
            out.append(by_ref[ref])
        return out

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        found = [ns for ns in self._namespaces()
                 if all(matches_condition(c, ns) for c in op.match_conditions or ())]
        if op.max_depth is not None:
            found = [ns[: op.max_depth] for ns in found]
        unique = sorted(set(found))
        return unique[op.offset: op.offset + op.limit]

    def _namespaces(self) -> list[tuple[str, ...]]:
        head = self.prefix + "/"
        return [self.decode(ns) for ns in self.memory.namespaces() if ns.startswith(head)]

    def _to_item(self, r: MemoryRecord) -> SearchItem:
        return SearchItem(namespace=self.decode(r.namespace), key=r.metadata["lg_key"],
                          value=r.metadata["lg_value"],
                          created_at=datetime.fromisoformat(r.metadata["lg_created_at"]),
                          updated_at=r.created_at)

    # ----------------------------------------------------------------------------- names
    def encode(self, namespace: tuple[str, ...]) -> str:
        """``("users", "a/b")`` -> ``"lg/users/a%2Fb"``."""
        return "/".join([self.prefix, *(quote(label, safe="") for label in namespace)])

    def decode(self, namespace: str) -> tuple[str, ...]:
        """Inverse of :meth:`encode`."""
        return tuple(unquote(label) for label in namespace.split("/")[1:])


def value_text(value: dict[str, Any], index: Any = None) -> str:
    """The text a value is remembered (and recalled) by."""
    if isinstance(index, list) and index:
        parts = [_field(value, path) for path in index]
        text = "\n".join(p if isinstance(p, str) else json.dumps(p, ensure_ascii=False)
                         for p in parts if p is not None)
        if text.strip():
            return text
    for name in TEXT_FIELDS:
        if isinstance(value.get(name), str) and value[name].strip():
            return value[name]
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _field(value: Any, path: str) -> Any:
    """``"a.b"`` of a nested dict (None when absent)."""
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


_OPS = {"$eq": lambda a, b: a == b, "$ne": lambda a, b: a != b,
        "$gt": lambda a, b: a is not None and a > b, "$gte": lambda a, b: a is not None and a >= b,
        "$lt": lambda a, b: a is not None and a < b, "$lte": lambda a, b: a is not None and a <= b}


def matches_filter(value: dict[str, Any], filt: dict[str, Any] | None) -> bool:
    """LangGraph's filter: equality per key, or ``{"$op": x}`` comparisons."""
    for key, want in (filt or {}).items():
        have = _field(value, key) if "." in key and key not in value else value.get(key)
        if isinstance(want, dict) and want and all(k in _OPS for k in want):
            try:
                if not all(_OPS[k](have, v) for k, v in want.items()):
                    return False
            except TypeError:
                return False
        elif have != want:
            return False
    return True


def matches_condition(cond: MatchCondition, namespace: tuple[str, ...]) -> bool:
    """Prefix/suffix match of a namespace, ``"*"`` matching any one label."""
    path = tuple(cond.path)
    if len(path) > len(namespace):
        return False
    part = namespace[: len(path)] if cond.match_type == "prefix" else namespace[-len(path):]
    return all(p in ("*", n) for p, n in zip(path, part)) if path else True
