"""``MsaStore.search`` over a LangGraph namespace of 1,200 keys (issue 16, item 4): its
recall filters by an IN list of every key, which raised ``StoreCorruptedError: Expression
tree is too large`` from 998 values."""
# ruff: noqa: F811 - pytest fixtures imported from lc_fixtures are parameters here

from __future__ import annotations

import uuid

from langgraph.store.base import PutOp
from lc_fixtures import memory  # noqa: F401

from msa_agent.integrations import MsaStore
from msa_agent.memory import Memory


def test_search_a_namespace_of_1200_keys(memory: Memory) -> None:
    store = MsaStore(memory, prefix=f"t{uuid.uuid4().hex[:8]}")
    ns = ("notes",)
    store.batch([PutOp(ns, f"k{i}", {"text": f"note {i}"}) for i in range(1_199)]
                + [PutOp(ns, "paris", {"text": "Paris is the capital of France"})])
    hits = store.search(ns, query="capital of France", limit=5)
    assert len(hits) == 5 and all(h.score is not None for h in hits)
    assert len(store.search(ns, limit=2_000)) == 1_200
