"""Forgetting erases in memory too: the resident routing index and the host K/V tier drop a
forgotten memory at once, not at the next open (issue 16: the index grew 72 -> 132 rows over
remember/forget cycles with 24 live)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from msa_agent import Memory
from msa_agent.kernels.route_topk.naive import unit
from msa_agent.store import Space

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")

TEXTS = ["Paris is the capital of France and sits on the Seine.",
         "Alice works for Acme in Lisbon, near the river.",
         "Bob likes green tea and quick brown foxes in the morning."]


def open_mem(path: Path, pair, **kw) -> Memory:  # noqa: ANN001
    # no compaction: it reloads the index from disk and would hide rows left behind
    return Memory.open(path, model=pair, chunk_size=8, compact_dead_fraction=None, **kw)


def test_index_holds_exactly_the_live_chunks_over_cycles(tmp_path: Path, tiny_pair) -> None:
    """Remember three, forget two or three (by id, then by where), six times: after every
    step the index holds the live memories' chunk rows and nothing else."""
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        keep = mem.remember_many(TEXTS)
        for cycle in range(6):
            ids = mem.remember_many([{"text": f"cycle {cycle}: {t}", "session_id": str(cycle)}
                                     for t in TEXTS])
            for i in ids[:2]:
                mem.forget(i)
            if cycle % 2:
                mem.forget(where={"session_id": str(cycle)})
            index, stats = mem._engine.index, mem.stats()
            assert index.rows == stats.chunks and len(index.doc_ids) == stats.memories
        assert set(index.doc_ids) == {r.id for r in mem.list(limit=None)} >= set(keep)
        assert stats.memories == len(TEXTS) + 3  # one left by each even cycle


def test_forgotten_memory_leaves_no_key_nor_kv_in_memory(tmp_path: Path, tiny_pair) -> None:
    """Its routing rows leave the index, its K/V rows leave (and are zeroed in) the host
    cache, and recall no longer finds its unique marker; the others are still served."""
    with open_mem(tmp_path / "m", tiny_pair, keep_full_kv=True) as mem:
        ids = mem.remember_many([*TEXTS, "zebracorn marker 4711 " + TEXTS[0]])
        marked = ids[-1]
        mem.answer("zebracorn marker", k=4, read="full", max_new_tokens=1)  # fills the cache
        engine = mem._engine
        cache = engine.kv_cache["full"]
        assert marked in cache.rows
        with engine.lock:
            (route_k,) = engine._space.read("route_k", [engine._space.get(marked)])
            (full_k,) = engine._space.read("full_k", [engine._space.get(marked)])
        mem.forget(marked)
        resident = unit(torch.from_numpy(np.ascontiguousarray(route_k)))
        assert marked not in engine.index.doc_ids
        assert not any(torch.equal(row, resident[0]) for row in engine.index.keys)
        assert marked not in cache.rows
        held = cache.k[: cache.used].numpy()
        assert not any(np.array_equal(row, full_k[0]) for row in held)
        assert all(h.id != marked for h in mem.recall("zebracorn marker 4711", k=4))
        assert mem.recall("zebracorn", k=4, routing="lexical") == []
        answer = mem.answer("capital of France", k=3, read="full", max_new_tokens=1)
        assert marked not in {h.id for r in answer.rounds for h in r.memories}
    with Space.open(tmp_path / "m") as space:
        assert space.get(marked) is None
