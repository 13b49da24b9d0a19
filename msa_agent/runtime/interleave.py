"""Routing-driven multi-hop recall (MSA's memory interleave, without generation).

Round 1 routes with the question. Each later round routes again with the question plus the
text of the best memory of the round before, among memories not yet appended. Rounds stop at
the limit, after a round whose best memory was already found (``"auto"``; the round is kept,
so that memory moves up), or when a round's best score falls below ``min_score``. The
evidence chain is kept: each hit records its round and the memories whose
text led to it. The final list interleaves rounds by rank (r1#1, r2#1, ..., r1#2, r2#2, ...),
since scores of different rounds come from different queries and are not comparable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Literal

from msa_agent.errors import InvalidInputError
from msa_agent.runtime.results import Recalled

Hops = int | Literal["auto"]
AUTO_MAX_ROUNDS = 3
# (query text, ids to leave out) -> routed memories, best first
Route = Callable[[str, set[str]], list[Recalled]]


def max_rounds(hops: Hops) -> int:
    if hops == "auto":
        return AUTO_MAX_ROUNDS
    if not isinstance(hops, int) or isinstance(hops, bool) or hops < 1:
        raise InvalidInputError(f"hops must be a positive integer or 'auto', got {hops!r}")
    return hops


def interleave(route: Route, question: str, k: int, hops: Hops, *,
               min_score: float | None = None,
               bridge: Callable[[Recalled, str], str] | None = None) -> list[Recalled]:
    """Run the rounds; ``route(text, exclude)`` ranks memories not in ``exclude``.

    ``bridge(hit, question)``: the text a later round appends for the best memory of the
    round before (default: its whole text; the runtime passes its most specific words, so
    the next query is about what is new in it rather than everything the memory says).

    A later round excludes only the memory already appended to the query (``via``), so a
    memory that round 1 ranked low can still come first once its bridge is known. With
    ``"auto"``, a round whose best memory was already found adds no new memory: it is kept
    (it moves that memory up the interleaved list) and ends the rounds.
    """
    rounds: list[list[Recalled]] = []
    seen: set[str] = set()
    expanded: set[str] = set()
    query, via, last = question, (), max_rounds(hops)
    for r in range(1, last + 1):
        new = [replace(h, round=r, via=via) for h in route(query, expanded)]
        if not new or (r > 1 and _below(new[0].score, min_score)):
            break
        rounds.append(new)
        if hops == "auto" and r > 1 and new[0].memory.id in seen:
            break  # its best was already found: keep the round (it promotes it), then stop
        seen |= {h.memory.id for h in new}
        if r == last:
            break  # no later round: skip building its query (a bridge costs SQL and tokenising)
        via = (new[0].memory.id,)
        expanded.add(new[0].memory.id)
        query = "\n".join([question, bridge(new[0], question) if bridge else new[0].memory.text])
    return _round_robin(rounds, k)


def _below(score: float, floor: float | None) -> bool:
    return floor is not None and score < floor


def _round_robin(rounds: list[list[Recalled]], k: int) -> list[Recalled]:
    """r1#1, r2#1, ..., r1#2, r2#2, ...; a memory keeps its first (best) appearance."""
    out: list[Recalled] = []
    taken: set[str] = set()
    for rank in range(max((len(r) for r in rounds), default=0)):
        for hit in (r[rank] for r in rounds if rank < len(r)):
            if hit.memory.id not in taken:
                taken.add(hit.memory.id)
                out.append(hit)
    return out[:k]
