"""Metrics over ranked memory keys: recall@k of the gold set, newest-first, latency.

A ranking is the list of memory keys a system returned for a query, best first (no
duplicates). For a multi-gold query, recall@k counts only when *all* gold keys are in the top
k. For a changed fact (``metric == "newest"``, gold = ``(new, old)``), recall@k is about the
new memory, and ``newest_first`` asks that the new one be in the top k and ranked above the
old one (an old one outside the top k counts as below).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from msa_agent.bench.tasks.base import Query

KS = (1, 5)


def hit_at(ranking: Sequence[str], query: Query, k: int) -> bool:
    """Whether the query counts as recalled at ``k``."""
    top = set(ranking[:k])
    gold = query.gold[:1] if query.metric == "newest" else query.gold
    return all(g in top for g in gold)


def newest_first(ranking: Sequence[str], query: Query, k: int = 5) -> bool:
    """For a changed fact: the new memory is in the top ``k`` and ranked above the old one."""
    new, old = query.gold[0], query.gold[1]
    top = list(ranking[:k])
    if new not in top:
        return False
    return old not in top or top.index(new) < top.index(old)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 100]) of ``values``; nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def score(queries: Sequence[Query], rankings: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
    """One row per (split, kind) and per (split, ``"all"``): n, r1, r5 (+ newest_first)."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, q in enumerate(queries):
        groups[q.split, q.kind].append(i)
        groups[q.split, "all"].append(i)
    rows = []
    for (split, kind), idx in sorted(groups.items()):
        row: dict[str, Any] = {"split": split, "kind": kind, "n": len(idx)}
        for k in KS:
            row[f"r{k}"] = sum(hit_at(rankings[i], queries[i], k) for i in idx) / len(idx)
        newest = [i for i in idx if queries[i].metric == "newest"]
        if newest:
            row["newest_first"] = sum(newest_first(rankings[i], queries[i])
                                      for i in newest) / len(newest)
        rows.append(row)
    return rows
