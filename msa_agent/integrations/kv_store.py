"""``MsaKVStore``: LangChain key-value ``BaseStore`` (``mget``/``mset``/...) over ``MsaStore``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.stores import BaseStore
from langgraph.store.base import GetOp, PutOp

from msa_agent.integrations.langgraph_store import MsaStore
from msa_agent.memory import Memory


class MsaKVStore(BaseStore[str, Any]):
    """JSON values by string key in one LangGraph namespace of a memory.

    Values are stored as ``{"value": v}`` items of :class:`MsaStore`, so they are also
    recallable by text; ``mset`` of an existing key replaces it.
    """

    def __init__(self, memory: Memory, namespace: tuple[str, ...] = ("kv",), *,
                 prefix: str = "lg") -> None:
        self.store, self.namespace = MsaStore(memory, prefix=prefix), tuple(namespace)

    def mget(self, keys: Sequence[str]) -> list[Any | None]:
        """The value of each key, None where absent."""
        items = self.store.batch([GetOp(self.namespace, k) for k in keys])
        return [None if i is None else i.value["value"] for i in items]

    def mset(self, key_value_pairs: Sequence[tuple[str, Any]]) -> None:
        """Store values (one batched write)."""
        self.store.batch([PutOp(self.namespace, k, {"value": v}) for k, v in key_value_pairs])

    def mdelete(self, keys: Sequence[str]) -> None:
        """Delete keys (absent keys are ignored)."""
        self.store.batch([PutOp(self.namespace, k, None) for k in keys])

    def yield_keys(self, *, prefix: str | None = None) -> Iterator[str]:
        """Keys, optionally only those starting with ``prefix``."""
        for item in self.store.latest_items(self.namespace):
            if prefix is None or item.key.startswith(prefix):
                yield item.key
