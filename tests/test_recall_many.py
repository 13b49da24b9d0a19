"""``Memory.recall_many``: several queries, their forwards and first routing round batched
(one ``RoutingIndex.rank_many`` pass over the keys), each ranked as alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from msa_agent import Memory
from msa_agent.errors import InvalidInputError
from msa_agent.runtime.routing import RoutingIndex
from msa_agent.types import RecallHit

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


@pytest.fixture()
def parted(tmp_path: Path, tiny_pair):  # noqa: ANN001, ANN201
    """Two namespaces, metadata, and long texts stored as several parts (grouping thins a
    page: the pool doubles)."""
    with Memory.open(tmp_path / "p", tiny_pair, routing="own_qk", chunk_size=8,
                     max_doc_tokens=64) as m:  # fmt: skip
        m.remember_many([{"text": t, "namespace": "alice" if i % 2 else "bob",
                          "metadata": {"topic": "a" if i % 3 else "b"}}
                         for i, t in enumerate(TEXTS)])  # fmt: skip
        for i in range(3):
            m.remember(" ".join(TEXTS[i:] + TEXTS[:i]) * 3, namespace="alice",
                       metadata={"topic": "a"})
        yield m


def assert_as_alone(mem: Memory, queries: list[str], **kw: Any) -> list[list[RecallHit]]:
    """recall_many equals [recall(q) for q]: ids, scores (to the padded forwards' rounding),
    rounds, via and explanations."""
    many = mem.recall_many(queries, **kw)
    assert len(many) == len(queries)
    for query, hits in zip(queries, many):
        alone = mem.recall(query, **kw)
        assert [h.id for h in hits] == [h.id for h in alone]
        assert [h.score for h in hits] == pytest.approx([h.score for h in alone], abs=1e-5)
        assert [(h.round, h.via) for h in hits] == [(h.round, h.via) for h in alone]
        if kw.get("explain"):
            for h, a in zip(hits, alone):
                assert h.explanation is not None and a.explanation is not None
                assert h.explanation.best_chunk == a.explanation.best_chunk
                assert h.explanation.layer_scores == pytest.approx(a.explanation.layer_scores,
                                                                   abs=1e-5)
    return many


@pytest.mark.parametrize("routing", ["msa", "hybrid", "lexical"])
@pytest.mark.parametrize("hops", [1, 2])
def test_each_query_ranked_as_alone(mem: Memory, routing: str, hops: int) -> None:
    many = assert_as_alone(mem, QUERIES, k=5, routing=routing, explain=True, hops=hops)
    if routing != "lexical":  # BM25 finds only memories sharing a word with the query
        assert all(len(hits) == 5 for hits in many)
        assert any(h.round == 2 for hits in many for h in hits) == (hops == 2)


@pytest.mark.parametrize("routing", ["msa", "hybrid", "lexical"])
def test_scoped_and_k_past_the_scope(parted: Memory, routing: str) -> None:
    """namespace and where restrict every query's candidates; k above the scope's size."""
    many = assert_as_alone(parted, QUERIES, k=30, routing=routing, namespace="alice",
                           where={"topic": "a"}, explain=True)
    ids = {r.id for r in parted.list(namespace="alice", where={"topic": "a"})}
    assert all({h.id for h in hits} <= ids for hits in many)
    assert_as_alone(parted, QUERIES[:2], k=30, routing=routing, namespace="nobody")


@pytest.mark.parametrize("routing", ["msa", "hybrid"])
@pytest.mark.parametrize("hops", [1, "auto"])
def test_grouped_pages(parted: Memory, routing: str, hops: int | str) -> None:
    """Grouping by source with an offset: a query whose first pool (batched) is thinned by
    the parts of the long texts recalls a larger one on its own, as recall does."""
    many = assert_as_alone(parted, QUERIES, k=3, offset=2, group=True, routing=routing,
                           hops=hops, namespace="alice")  # fmt: skip
    assert all(len(hits) == 3 for hits in many)
    assert_as_alone(parted, QUERIES, k=2, group=False, routing=routing, min_score=-1.0,
                    namespace="alice")  # fmt: skip


@pytest.mark.parametrize("routing", ["msa", "hybrid"])
@pytest.mark.parametrize("hops", [1, 2])
def test_first_round_is_one_pass(tmp_path: Path, tiny_pair, routing: str, hops: int,  # noqa: ANN001
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Round 1 of every query is one ``rank_many`` call over the keys; later rounds (hops 2,
    routed as the request: ``hop_routing="same"``) rank each query's bridged question alone."""
    calls: list[int] = []
    real = RoutingIndex.rank_many

    def counted(self: RoutingIndex, qs: Any, *a: Any, **kw: Any) -> Any:
        calls.append(len(qs))
        return real(self, qs, *a, **kw)

    monkeypatch.setattr(RoutingIndex, "rank_many", counted)
    with Memory.open(tmp_path / "m", tiny_pair, routing="own_qk", hop_routing="same") as mem:
        mem.remember_many(TEXTS)
        calls.clear()
        many = mem.recall_many(QUERIES, k=3, routing=routing, hops=hops)
        batched = list(calls)
        alone = [mem.recall(q, k=3, routing=routing, hops=hops) for q in QUERIES]
    assert [[h.id for h in hits] for hits in many] == [[h.id for h in hits] for hits in alone]
    assert batched[0] == len(QUERIES)
    assert batched[1:] == [1] * (len(QUERIES) if hops == 2 else 0)


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


@pytest.mark.parametrize("routing", ["msa", "hybrid"])
@pytest.mark.parametrize("hops", [1, 2])
def test_explaining_changes_no_ranking(parted: Memory, routing: str, hops: int) -> None:
    """Without ``explain`` a recall skips the routing evidence pass (``evidence=False``);
    ids, scores and rounds are those of an explained recall, alone and batched."""
    for batch in (QUERIES[:1], QUERIES):
        plain = parted.recall_many(batch, k=6, routing=routing, hops=hops, namespace="alice")
        told = parted.recall_many(batch, k=6, routing=routing, hops=hops, namespace="alice",
                                  explain=True)
        for p, t in zip(plain, told):
            assert [(h.id, h.round, h.via) for h in p] == [(h.id, h.round, h.via) for h in t]
            assert [h.score for h in p] == pytest.approx([h.score for h in t], abs=1e-6)
            assert all(h.explanation is None for h in p)


@pytest.mark.parametrize("routing", ["msa", "hybrid"])
def test_evidence_is_left_out_only_in_one_round(mem: Memory, routing: str) -> None:
    """``Recall.recall(evidence=False)``: no per-layer scores in one round; rounds after the
    first need the best chunk for their bridge, so ``hops`` > 1 computes it anyway."""
    engine, scope = mem._engine, mem._scope(None, None)
    bare = engine.recall(QUERIES[0], 3, scope, 1, mode=routing, evidence=False)
    full = engine.recall(QUERIES[0], 3, scope, 1, mode=routing)
    assert [h.memory.id for h in bare] == [h.memory.id for h in full]
    assert all(not h.layer_scores for h in bare) and all(h.layer_scores for h in full)
    hops = engine.recall(QUERIES[0], 3, scope, 2, mode=routing, evidence=False)
    assert all(h.layer_scores for h in hops if h.round == 1)  # later: lexical by default
