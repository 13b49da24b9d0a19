"""Multi-hop rounds: chain following, exclusion of found memories, stopping, ordering."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from msa_agent.errors import InvalidInputError
from msa_agent.runtime.interleave import interleave, max_rounds
from msa_agent.runtime.results import Recalled
from msa_agent.store import StoredMemory

TEXTS = {"0": "alice works for acme", "1": "acme is based in lisbon", "2": "bob likes tea",
         "3": "lisbon is in portugal"}
LINKS = {"question": ["0", "2"], "alice works for acme": ["1", "2"],
         "acme is based in lisbon": ["3"]}


def stored(id: str) -> StoredMemory:
    return StoredMemory(id=id, namespace="n", kind="document", text=TEXTS[id], metadata={},
                        session_id=None, user_id=None, agent_id=None, source_id=id, part=0,
                        created_at=datetime(2026, 1, 1, tzinfo=timezone.utc), token_start=0,
                        n_tokens=1, chunk_start=0, n_chunks=1, content_hash="")


def table_route(links: dict[str, list[str]], step: float = 0.1):  # noqa: ANN201
    """Ranks by a fixed table keyed by the last line of the query text."""
    def route(text: str, exclude: set[str]) -> list[Recalled]:
        docs = [d for d in links.get(text.splitlines()[-1], []) if d not in exclude]
        return [Recalled(stored(d), 1.0 - step * i) for i, d in enumerate(docs)]

    return route


def chain(hits: list[Recalled]) -> list[tuple[str, int, tuple[str, ...]]]:
    return [(h.memory.id, h.round, h.via) for h in hits]


def test_two_hops_follow_the_chain_and_record_it() -> None:
    hits = interleave(table_route(LINKS), "question", k=5, hops=2)
    assert chain(hits) == [("0", 1, ()), ("1", 2, ("0",)), ("2", 1, ())]


def test_auto_stops_when_nothing_new() -> None:
    hits = interleave(table_route(LINKS), "question", k=10, hops="auto")
    assert [h.memory.id for h in hits] == ["0", "1", "3", "2"]
    assert {h.memory.id: h.round for h in hits} == {"0": 1, "1": 2, "3": 3, "2": 1}


def test_min_score_stops_later_rounds() -> None:
    hits = interleave(table_route(LINKS), "question", k=5, hops=3, min_score=1.5)
    assert {h.round for h in hits} == {1}


@pytest.mark.parametrize("bad", [0, -1, "two", 1.5, True])
def test_bad_hops(bad) -> None:
    with pytest.raises(InvalidInputError):
        max_rounds(bad)


def test_low_ranked_round_one_memory_rises_once_its_bridge_is_read() -> None:
    links = {"question": ["0", "2", "1"], "alice works for acme": ["1", "2"]}
    hits = interleave(table_route(links, step=0.0), "question", k=2, hops=2)
    assert chain(hits) == [("0", 1, ()), ("1", 2, ("0",))]
