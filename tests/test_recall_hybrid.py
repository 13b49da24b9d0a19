"""Hybrid recall: both channels respect namespaces, filters and time; explain shows both;
the lexical channel stays consistent with the memories through forget, compaction and
export/import; a rare name is found even where MSA routing is blind (a random model)."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msa_agent import Memory
from msa_agent.errors import InvalidInputError
from msa_testing import make_llama, make_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.errors.RoutingQualityWarning")
MODES = ("hybrid", "msa", "lexical")
WORDS = ["violin", "tuesday", "garage", "kelvarth", "brakel", "lisbon", "acme", "tea"]
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def open_mem(path: Path, **kw) -> Memory:  # noqa: ANN003
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Memory.open(path, (make_llama(), make_tokenizer()), **kw)


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    path = tmp_path_factory.mktemp("hybrid") / "s"
    mem = open_mem(path)
    items = [{"text": f"note {i}: {WORDS[i % 8]} and {WORDS[(i * 3) % 8]} {i}",
              "namespace": "abc"[i % 3], "metadata": {"i": i, "even": i % 2 == 0},
              "at": T0 + timedelta(days=i)} for i in range(24)]
    mem.remember_many(items)
    yield mem
    mem.close()


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ns=st.sampled_from("abcz"), word=st.sampled_from(WORDS), mode=st.sampled_from(MODES),
       even=st.sampled_from([None, True, False]), k=st.integers(1, 12))
def test_isolation_of_both_channels(space: Memory, ns: str, word: str, mode: str,
                                    even: bool | None, k: int) -> None:
    where = None if even is None else {"even": even}
    hits = space.recall(f"{word}?", k=k, namespace=ns, where=where, routing=mode)
    assert len(hits) <= k
    assert all(h.namespace == ns for h in hits)
    if even is not None:
        assert all(h.metadata["even"] is even for h in hits)
    if mode != "lexical":  # MSA routing ranks every memory in scope
        scope = {m.id for m in space.list(namespace=ns, where=where, limit=None)}
        assert len(hits) == min(k, len(scope))


def test_time_filter_before_top_k(space: Memory) -> None:
    for mode in MODES:
        hits = space.recall("violin note", k=20, namespace="a", routing=mode,
                            since=T0 + timedelta(days=6), until=T0 + timedelta(days=15))
        days = sorted((h.created_at - T0).days for h in hits)
        assert days and all(6 <= d < 15 for d in days)


def test_explain_shows_both_channels(space: Memory) -> None:
    hit = space.recall("kelvarth brakel", k=1, namespace="a", explain=True)[0]
    ch = hit.explanation.channels
    assert {"lexical", "lexical_rank", "msa", "msa_rank"} <= set(ch)
    assert hit.explanation.layer_scores and hit.explanation.best_chunk_text


def test_bad_routing_and_times_are_usage_errors(space: Memory) -> None:
    with pytest.raises(InvalidInputError):
        space.recall("x", routing="bm25")
    with pytest.raises(InvalidInputError):
        space.recall("x", since="yesterday")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        space.remember("x", at="2024-01-01")  # type: ignore[arg-type]


def test_rare_name_is_found_where_msa_routing_is_blind(tmp_path: Path) -> None:
    """A random model's routing is chance; the lexical channel still finds an invented name,
    and hybrid (the default) keeps it first."""
    with open_mem(tmp_path / "s") as mem:
        ids = mem.remember_many([f"filler memory number {i} about nothing much" for i in range(30)]
                                + ["Ticket KR-4432 was assigned to Brakel Vourn on db-prod-07."])
        for q in ("Who has ticket KR-4432?", "what happened on db-prod-07"):
            assert mem.recall(q, k=1)[0].id == ids[-1]
            assert mem.recall(q, k=1, routing="lexical")[0].id == ids[-1]


def test_newest_version_first_with_recency(tmp_path: Path) -> None:
    with open_mem(tmp_path / "s", recency_weight=0.2) as mem:
        old = mem.remember("My team lead is Darla Venn.", at=T0)
        new = mem.remember("Reorg news: my team lead is now Orrin Pask.", at=T0 + timedelta(30))
        mem.remember_many([f"unrelated note {i} about lunch" for i in range(10)])
        ranked = [h.id for h in mem.recall("Who is my team lead?", k=5)]
        assert ranked.index(new) < ranked.index(old)


@pytest.mark.parametrize("window", [0.0, 0.5])
def test_newer_version_first_by_default_window(tmp_path: Path, window: float) -> None:
    """The default ``newer_within`` puts the newer statement first; without it the older,
    shorter one wins on BM25 (so the window, not chance, is what orders them)."""
    with open_mem(tmp_path / "s", newer_within=window) as mem:
        old = mem.remember("My car is parked with a garage called Brakel this month.", at=T0)
        new = mem.remember("I moved the car: it now stays at a garage called Orvande.",
                           at=T0 + timedelta(30))
        mem.remember_many([f"unrelated note {i} about lunch" for i in range(10)])
        ranked = [h.id for h in mem.recall("Which garage is my car parked at?", k=5)]
        assert ranked[:2] == ([new, old] if window else [old, new])


@pytest.mark.parametrize("read_superseded", [True, False])
def test_answer_reads_the_newest_version_only_when_asked(tmp_path: Path,
                                                          read_superseded: bool) -> None:
    """Both versions of a changed fact are hits; ``read_superseded=False`` reads the newer
    one alone (the older is marked ``superseded_by`` it), so the prompt holds one memory."""
    with open_mem(tmp_path / "s", read_superseded=read_superseded) as mem:
        old = mem.remember("My car is parked with a garage called Brakel this month.", at=T0)
        new = mem.remember("I moved the car: it now stays at a garage called Orvande.",
                           at=T0 + timedelta(30))
        mem.remember_many([f"unrelated note {i} about lunch" for i in range(10)])
        question = "Which garage is my car parked at?"
        hits = mem._engine.recall(question, 2, mem._scope(None, None), mode="hybrid")
        assert {h.memory.id: h.superseded_by for h in hits} == {new: None, old: new}
        ans = mem.answer(question, k=2, read="text", max_new_tokens=1)
        assert {h.id for r in ans.rounds for h in r.memories} == {old, new}
        alone = mem.answer(question, k=1, read="text", max_new_tokens=1)
        both = ans.prompt_tokens
    if read_superseded:
        assert both > alone.prompt_tokens
    else:
        assert both == alone.prompt_tokens  # the same one memory in the same frame


def test_lexical_index_follows_forget_compact_and_import(tmp_path: Path) -> None:
    with open_mem(tmp_path / "a", compact_dead_fraction=0.1) as mem:
        keep = mem.remember("Quokka sightings on Rottnest island", at=T0)
        gone = mem.remember("Zanzibar spice market notes", at=T0)
        mem.forget(gone)  # past the threshold: compacted too
        assert mem.recall("Zanzibar spice", k=3, routing="lexical") == []
        mem.export(tmp_path / "bundle")
    with open_mem(tmp_path / "b") as mem:
        mem.import_(tmp_path / "bundle")
        hits = mem.recall("quokka", k=3, routing="lexical")
        assert [h.id for h in hits] == [keep] and hits[0].created_at == T0


@pytest.mark.parametrize("mode", MODES)
def test_recall_after_close_is_a_clear_error(tmp_path: Path, mode: str) -> None:
    mem = open_mem(tmp_path / "s")
    mem.remember("violin lessons on tuesday")
    assert mem.recall("violin", routing=mode)
    mem.close()
    with pytest.raises(InvalidInputError, match="closed"):
        mem.recall("violin", routing=mode)


def test_second_hop_bridges_from_the_lines_that_match_the_question(tmp_path: Path) -> None:
    """A long session holds the role's line among filler with rare words; the later round
    carries the name from the chunk that matches the question, not from the chunk routing
    preferred (a random model's: filler), and so finds the second session, which shares no
    word with the question."""
    filler = " ".join(f"zq{i}x psalm {i}." for i in range(12))
    with open_mem(tmp_path / "s", chunk_size=32) as mem:
        a = mem.remember(f"{filler} My new manager is Drashnair Stosneal, we met on Monday. "
                         f"{filler}", at=T0)
        b = mem.remember("Drashnair Stosneal was born and raised in Vrouthluthstol.",
                         at=T0 + timedelta(days=3))
        mem.remember_many([f"{filler} lunch note {i}" for i in range(3)])  # zq..x: 4 holders
        hits = mem.recall("Where did my manager grow up?", k=2, hops="auto", routing="lexical")
        assert [h.id for h in hits] == [a, b]
        assert hits[1].via == [a]


@pytest.mark.parametrize("complete", [True, False])
def test_lexical_finds_outside_msa_pool_get_their_real_routing_score(tmp_path: Path,
                                                                     complete: bool) -> None:
    """Each channel ranks a pool of k = 3 here; the lexical candidates outside MSA's pool,
    completed, carry the routing score MSA alone gives them; not completed, no MSA part."""
    mem = open_mem(tmp_path / "s", fusion_pool=1, fusion_complete=complete)
    try:
        mem.remember_many([f"the {w} note about kelvarth number {i}" for i, w in
                           enumerate(WORDS)])
        everyone = {h.id: h.score for h in mem.recall("kelvarth?", k=8, routing="msa")}
        msa_pool = {h.id for h in mem.recall("kelvarth?", k=3, routing="msa")}
        hits = mem.recall("kelvarth?", k=3, routing="hybrid", explain=True)
        lexical = {h.id for h in mem.recall("kelvarth?", k=3, routing="lexical")}
        outside = lexical - msa_pool
        assert {h.id for h in hits} & outside  # a lexical find outside MSA's pool is returned
        for h in hits:
            ch = h.explanation.channels
            if complete or h.id in msa_pool:
                assert ch["msa"] == pytest.approx(everyone[h.id], abs=1e-6)
            else:
                assert "msa" not in ch
    finally:
        mem.close()
