"""Invented-name fact chains (see :mod:`msa_agent.bench.facts`), single-hop and two-hop.

All ``2 * n_chains`` documents share one namespace (one haystack); the *questions* are split
by chain: even chains are validation, odd chains test. Two-hop questions ("In which city does
X work?") have two gold documents and are scored "both in the top k".
"""

from __future__ import annotations

from msa_agent.bench.facts import fact_chains
from msa_agent.bench.tasks.base import MemoryItem, Query, Stage, Task

NAMESPACE = "facts"


def build(n_chains: int = 100, seed: int = 0) -> Task:
    """One stage: ``2 * n_chains`` memories, ``3 * n_chains`` questions (2 single, 1 two-hop)."""
    fs = fact_chains(n_chains, seed)
    memories = tuple(MemoryItem(f"f{i}", text, NAMESPACE, order=i)
                     for i, text in enumerate(fs.docs))
    queries = []
    for i, q in enumerate(fs.questions):
        chain = i // 3
        queries.append(Query(
            qid=f"facts-{i}", text=q.text, gold=tuple(f"f{g}" for g in q.gold),
            kind="two-hop" if q.hops == 2 else "single-hop",
            split="val" if chain % 2 == 0 else "test", namespace=NAMESPACE, hops=q.hops,
            answer=q.answer))
    desc = (f"{len(memories)} one-sentence fact documents about invented people, companies and "
            f"cities ({n_chains} chains, seed {seed}); questions split by chain (even: val, "
            "odd: test). Two-hop: both documents in the top k.")
    return Task("facts", desc, (Stage("all", memories, tuple(queries)),),
                {"n_chains": n_chains, "seed": seed})
