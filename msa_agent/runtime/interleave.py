"""Routing-driven multi-hop recall (MSA's memory interleave, without generation).

Round 1 routes with the question. Each later round routes again with the question plus the
text of the best memory of the round before, among memories not yet appended. Rounds stop at
the limit, when a round's best memory was already found, or when its score falls below
``min_score``. The evidence chain is kept: each hit records its round and the memories whose
text led to it. The final list interleaves rounds by rank (r1#1, r2#1, ..., r1#2, r2#2, ...),
since scores of different rounds come from different queries and are not comparable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from msa_agent.runtime.routing import Ranked

Hops = int | Literal["auto"]
AUTO_MAX_ROUNDS = 3


@dataclass
class Hit:
    """One recalled document: its index position, score, round, and what led to it."""

    doc: int
    score: float
    round: int
    via: list[int] = field(default_factory=list)
    layer_scores: list[float] = field(default_factory=list)
    best_chunk: int = 0


def max_rounds(hops: Hops) -> int:
    if hops == "auto":
        return AUTO_MAX_ROUNDS
    if not isinstance(hops, int) or isinstance(hops, bool) or hops < 1:
        raise ValueError(f"hops must be a positive integer or 'auto', got {hops!r}")
    return hops


def interleave(
    route: Callable[[str, set[int]], Ranked],
    text_of: Callable[[int], str],
    question: str,
    k: int,
    hops: Hops,
    *,
    expand: int = 1,
    min_score: float | None = None,
) -> list[Hit]:
    """Run the rounds; ``route(text, exclude)`` ranks documents not in ``exclude``.

    A later round excludes only the memories already appended to the query (``via``), so a
    memory that round 1 ranked low can still come first once its bridge is known. With
    ``"auto"``, a round whose best memory was already found adds no evidence and ends them.
    """
    rounds: list[list[Hit]] = []
    seen: set[int] = set()
    expanded: set[int] = set()
    query, via = question, []
    for r in range(1, max_rounds(hops) + 1):
        ranked = route(query, expanded)
        new = [Hit(d, s, r, list(via), ls, c) for d, s, ls, c in
               zip(ranked.docs, ranked.scores, ranked.layer_scores, ranked.best_chunk)]
        stale = hops == "auto" and new and new[0].doc in seen
        if not new or (r > 1 and (stale or _below(new[0].score, min_score))):
            break
        rounds.append(new)
        seen |= {h.doc for h in new}
        via = [h.doc for h in new[:expand]]
        expanded |= set(via)
        query = "\n".join([question, *(text_of(d) for d in via)])
    return _round_robin(rounds, k)


def _below(score: float, floor: float | None) -> bool:
    return floor is not None and score < floor


def _round_robin(rounds: list[list[Hit]], k: int) -> list[Hit]:
    """r1#1, r2#1, ..., r1#2, r2#2, ...; a memory keeps its first (best) appearance."""
    out: list[Hit] = []
    taken: set[int] = set()
    for rank in range(max((len(r) for r in rounds), default=0)):
        for hit in (r[rank] for r in rounds if rank < len(r)):
            if hit.doc not in taken:
                taken.add(hit.doc)
                out.append(hit)
    return out[:k]
