"""Multi-hop rounds: chain following, exclusion of found memories, stopping, ordering."""

from __future__ import annotations

import pytest

from msa_agent.runtime.interleave import interleave, max_rounds
from msa_agent.runtime.routing import Ranked

TEXTS = {0: "alice works for acme", 1: "acme is based in lisbon", 2: "bob likes tea",
         3: "lisbon is in portugal"}
LINKS = {"question": [0, 2], "alice works for acme": [1, 2], "acme is based in lisbon": [3]}


def fake_route(text: str, exclude: set[int]) -> Ranked:
    """Ranks by a fixed table keyed by the last line of the query text."""
    docs = [d for d in LINKS.get(text.splitlines()[-1], []) if d not in exclude]
    scores = [1.0 - 0.1 * i for i in range(len(docs))]
    return Ranked(docs, scores, [[s] for s in scores], [0] * len(docs))


def test_two_hops_follow_the_chain_and_record_it() -> None:
    hits = interleave(fake_route, TEXTS.get, "question", k=5, hops=2)
    assert [(h.doc, h.round, h.via) for h in hits] == [(0, 1, []), (1, 2, [0]), (2, 1, [])]


def test_auto_stops_when_nothing_new() -> None:
    hits = interleave(fake_route, TEXTS.get, "question", k=10, hops="auto")
    assert [h.doc for h in hits] == [0, 1, 3, 2]
    assert {h.doc: h.round for h in hits} == {0: 1, 1: 2, 3: 3, 2: 1}


def test_min_score_stops_later_rounds() -> None:
    hits = interleave(fake_route, TEXTS.get, "question", k=5, hops=3, min_score=1.5)
    assert {h.round for h in hits} == {1}


@pytest.mark.parametrize("bad", [0, -1, "two", 1.5, True])
def test_bad_hops(bad) -> None:
    with pytest.raises(ValueError):
        max_rounds(bad)


def test_low_ranked_round_one_memory_rises_once_its_bridge_is_read() -> None:
    links = {"question": [0, 2, 1], "alice works for acme": [1, 2]}

    def route(text: str, exclude: set[int]) -> Ranked:
        docs = [d for d in links.get(text.splitlines()[-1], []) if d not in exclude]
        return Ranked(docs, [1.0] * len(docs), [[1.0]] * len(docs), [0] * len(docs))

    hits = interleave(route, TEXTS.get, "question", k=2, hops=2)
    assert [(h.doc, h.round, h.via) for h in hits] == [(0, 1, []), (1, 2, [0])]
