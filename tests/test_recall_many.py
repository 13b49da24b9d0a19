"""``Memory.recall_many``: several queries, their forwards batched, each ranked as alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from msa_agent import Memory
from msa_agent.errors import InvalidInputError

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")

TEXTS = [f"note {i}: the {w} is kept in room {i} near the {v}" for i, (w, v) in enumerate(
    [("anvil", "door"), ("kettle", "window"), ("ledger", "stairs"), ("violin", "lamp"),
     ("compass", "desk"), ("lantern", "shelf"), ("teapot", "garden"), ("atlas", "bench")])]
QUERIES = ["where is the violin", "kettle by the window?", "which room holds the atlas and "
           "the bench, and is it near the garden", "ledger"]


@pytest.fixture()
def mem(tmp_path: Path, tiny_pair):  # noqa: ANN001, ANN201
    with Memory.open(tmp_path / "m", tiny_pair, routing="own_qk") as m:
        m.remember_many(TEXTS)
        yield m


@pytest.mark.parametrize("routing", ["msa", "hybrid", "lexical"])
def test_each_query_ranked_as_alone(mem: Memory, routing: str) -> None:
    many = mem.recall_many(QUERIES, k=5, routing=routing, explain=True)
    assert len(many) == len(QUERIES)
    for query, hits in zip(QUERIES, many):
        alone = mem.recall(query, k=5, routing=routing, explain=True)
        assert [h.id for h in hits] == [h.id for h in alone]
        assert [h.score for h in hits] == pytest.approx([h.score for h in alone], abs=1e-5)
        assert [h.explanation.best_chunk for h in hits] == \
            [h.explanation.best_chunk for h in alone]


def test_one_query_is_recall_exactly(mem: Memory) -> None:
    one = mem.recall_many([QUERIES[0]], k=4, hops="auto")[0]
    again = mem.recall(QUERIES[0], k=4, hops="auto")
    assert [(h.id, h.score, h.round) for h in one] == [(h.id, h.score, h.round) for h in again]


def test_bad_input(mem: Memory) -> None:
    assert mem.recall_many([]) == []
    with pytest.raises(InvalidInputError, match="sequence of strings"):
        mem.recall_many("where is the violin")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"queries\[1\]"):
        mem.recall_many(["ok", ""])
    with pytest.raises(InvalidInputError, match=r"queries\[0\]"):
        mem.recall_many([b"\x00\xff"])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="k must be"):
        mem.recall_many(["ok"], k=0)
