"""recall's paging and trimming (issue 17): offset, min_score and grouping by source."""

from __future__ import annotations

from pathlib import Path

import pytest

from msa_agent import Memory
from msa_agent.errors import InvalidInputError

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")

NOTES = [f"note {i}: the green tea shop on street {i} opens at {i} am." for i in range(12)]
LONG = " ".join(f"The green tea ledger line {i} lists a cup sold." for i in range(40))


def open_mem(path: Path, pair, **kw) -> Memory:  # noqa: ANN001
    return Memory.open(path, model=pair, chunk_size=8, max_doc_tokens=32, **kw)


def test_offset_pages_through_the_ranking(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        mem.remember_many(NOTES)
        whole = [h.id for h in mem.recall("green tea shop", k=9)]
        pages = [[h.id for h in mem.recall("green tea shop", k=3, offset=o)] for o in (0, 3, 6)]
        assert sum(pages, []) == whole
        assert mem.recall("green tea shop", k=3, offset=100) == []


def test_min_score_drops_weaker_hits(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        mem.remember_many(NOTES)
        hits = mem.recall("green tea shop", k=8)
        cut = hits[3].score
        kept = mem.recall("green tea shop", k=8, min_score=cut)
        assert [h.id for h in kept] == [h.id for h in hits if h.score >= cut]
        assert all(h.score >= cut for h in kept) and len(kept) < len(hits)


def test_group_keeps_the_best_part_of_each_source(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        source = mem.remember(LONG)  # many parts of one text
        mem.remember_many(NOTES[:4])
        loose = mem.recall("green tea ledger", k=5)
        assert sum(h.source_id == source for h in loose) > 1  # the parts fill the slots
        grouped = mem.recall("green tea ledger", k=5, group=True)
        sources = [h.source_id or h.id for h in grouped]
        assert len(sources) == len(set(sources)) == 5
        assert grouped[0].id == loose[0].id  # the best part leads
    with open_mem(tmp_path / "m", tiny_pair, group_by_source=True) as mem:  # the setting
        assert [h.id for h in mem.recall("green tea ledger", k=5)] == [h.id for h in grouped]


@pytest.mark.parametrize("bad", [{"offset": -1}, {"offset": 1.5}, {"min_score": "high"},
                                 {"min_score": float("nan")}, {"group": "yes"}])
def test_bad_paging_arguments_are_refused(tmp_path: Path, tiny_pair, bad: dict) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        mem.remember_many(NOTES[:2])
        with pytest.raises(InvalidInputError):
            mem.recall("green tea", **bad)
