"""The lexical (FTS5 / BM25) channel: ranking, isolation, consistency, hostile input, upgrade."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lexical_helpers import add_texts, assert_fts_consistent, db_bytes
from store_helpers import FP, SPECS

from msa_agent.store import (
    FTS5UnavailableError,
    InvalidQueryError,
    Space,
    SpaceReadOnlyError,
    StoreError,
    lexical,
)
from msa_agent.store.lexical import FTS_TABLE
from msa_agent.store.meta import SCHEMA_VERSION

FILLER = [
    "The weekly sync moved to Thursday afternoon because of the holiday.",
    "Remember to renew the TLS certificates on the staging cluster next month.",
    "User prefers short answers and metric units.",
    "The quarterly report needs the revenue table from finance.",
    "Deploys are frozen during the conference week.",
    "The database migration finished without errors on the replica.",
]


def test_rare_name_found_first(space: Space) -> None:
    add_texts(space, FILLER * 5)
    (target,) = add_texts(space, ["Ticket KR-4432: Zorblatt reported that db-prod-07 drops "
                                  "connections; contact anna.berg@example.com."])
    for q in ["What did Zorblatt say?", "kr-4432", "status of 4432", "db-prod-07",
              "which host is prod 07", "anna.berg@example.com", "mail from Berg", "ZORBLATT"]:
        hits = space.lexical_search(q, 3, "default")
        assert hits and hits[0][0] == target, q
        assert all(a[1] >= b[1] for a, b in zip(hits, hits[1:])), "best first"
    assert space.lexical_search("Zorblatt", 3, "other") == []


def test_a_k_past_64_bits_means_all_of_them(space: Space) -> None:
    """SQL's LIMIT holds 64 bits: a larger k (``answer(k=2**63)`` in the API fuzz test
    reached SQLite as an OverflowError) returns every match, as any k past the count does."""
    ids = add_texts(space, ["a quokka at noon", "a quokka at dusk", "a wombat"])
    for k in (2**63 - 1, 2**63, 10**30):
        assert {i for i, _ in space.lexical_search("quokka", k, "default")} == set(ids[:2])


def test_matched_terms_are_the_query_words_each_memory_contains(space: Space) -> None:
    add_texts(space, FILLER * 3)
    old, new, other = add_texts(space, [
        "I train at the Brakel gym on weekday mornings.",
        "These days I train at the Vourn gym instead.",
        "Training for the conference talk starts next week."])
    found = space.matched_terms("Which gym do I train at?", [old, new, other, "nope"])
    assert found == {old: {"gym", "train"}, new: {"gym", "train"}, other: {"train"}}  # porter
    assert space.matched_terms("the and of", [old]) == {}  # stop words only: no terms
    assert space.matched_terms("gym", []) == {}


def test_stemming_and_diacritics(space: Space) -> None:
    (violin,) = add_texts(space, ["Maya starts violin lessons on Tuesdays at the Café Müller."])
    add_texts(space, FILLER)
    for q in ["When are Maya's lessons?", "lesson", "cafe muller", "started"]:
        assert space.lexical_search(q, 1, None)[0][0] == violin, q


def test_stop_words_only_and_empty_return_nothing(space: Space) -> None:
    add_texts(space, ["the and of to it is", *FILLER])
    for q in ["", "   ", "the and of", "?!", "_", "'s"]:
        assert space.lexical_search(q, 5, None) == [], q


def test_verb_particles_are_search_terms(space: Space) -> None:
    """A phrasal verb's particle names what happened: "grow up" reaches "grew up" only
    through "up" (porter leaves grew and grow apart), "log out" tells two logins apart. Each
    gold memory is the longer one, so without its particle BM25 would rank the other first."""
    add_texts(space, FILLER * 3)
    grew, logged = add_texts(space, ["My manager grew up in Tertathtin, near the coast.",
                                     "Anna logged out of the VPN at five in the evening."])
    add_texts(space, ["My manager likes Tertathtin.", "Anna logged in to the VPN."])
    assert space.lexical_search("Where did my manager grow up?", 1, None)[0][0] == grew
    assert space.lexical_search("When did Anna log out of the VPN?", 1, None)[0][0] == logged


HOSTILE = ['"', '""', "'", 'a"b', "NEAR(a b)", "NEAR", "*", "a*", "* OR *", "OR", "AND", "NOT",
           "a OR", "OR b", "(", ")", "((a)", ":", "text:weekly", "memories_fts:weekly", "^weekly",
           "-weekly", "+", "{text}: weekly", "weekly NOT sync", "\x00", "\ud800", "日本語 テキスト",
           "🙂🙂", "ß", "Ǆ", "a" * 10_000, " ".join(["weekly"] * 5000), "NEAR(weekly sync, 2)"]


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_queries_never_raise(space: Space, query: str) -> None:
    add_texts(space, FILLER)
    hits = space.lexical_search(query, 5, None, where={"kind": "document"})
    assert isinstance(hits, list)


@settings(max_examples=150, deadline=None)
@given(query=st.text(max_size=60))
def test_any_text_query_never_raises(query: str) -> None:
    with tempfile.TemporaryDirectory() as tmp, \
            Space.create(Path(tmp) / "s", FP, SPECS, durable=False) as s:
        add_texts(s, FILLER)
        assert isinstance(s.lexical_search(query, 3, "default"), list)


def test_match_expression_is_only_quoted_terms() -> None:
    assert lexical.match_expression('NEAR("a" b*) OR c:d') == '"near" OR "b" OR "c" OR "d" OR "c d"'
    assert lexical.match_expression("Kr-4432") == '"kr" OR "4432" OR "kr 4432"'
    assert lexical.match_expression("the of") is None


def test_bad_arguments_raise_store_errors(space: Space) -> None:
    for kw in ({"query": b"x", "k": 1}, {"query": "x", "k": -1}, {"query": "x", "k": 1.5},
               {"query": "x", "k": True}):
        with pytest.raises(InvalidQueryError):
            space.lexical_search(namespace=None, **kw)  # type: ignore[arg-type]
    assert issubclass(InvalidQueryError, StoreError) and issubclass(InvalidQueryError, ValueError)
    assert space.lexical_search("weekly", 0, None) == []


# -- namespace isolation and filters: property test ----------------------------------------
WORDS = ["alpha", "bravo", "delta", "echo", "foxtrot", "golf", "hotel", "kilo", "lima", "oscar"]
memory_st = st.tuples(
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=6),  # text
    st.sampled_from(["n1", "n2", "n3"]),                         # namespace
    st.sampled_from(["note", "doc"]),                             # kind
    st.sampled_from([1, 2, "1", None]),                           # metadata "topic"
)
where_st = st.one_of(st.none(), st.fixed_dictionaries({"kind": st.sampled_from(["note", "doc"])}),
                     st.fixed_dictionaries({"topic": st.sampled_from([1, "1", [1, 2], None])}))


def _expected(rows: list[tuple], ns: str | None, where: dict | None, query: set[str]) -> set[int]:
    def ok(r: tuple) -> bool:
        words, namespace, kind, topic = r
        w = where or {}
        return ((ns is None or namespace == ns) and set(words) & query != set()
                and ("kind" not in w or kind == w["kind"])
                and ("topic" not in w or _topic_ok(topic, w["topic"])))
    return {i for i, r in enumerate(rows) if ok(r)}


def _topic_ok(have: object, want: object) -> bool:
    wants = want if isinstance(want, list) else [want]
    return any(type(have) is type(w) and have == w for w in wants)


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(memory_st, min_size=1, max_size=12),
       query=st.lists(st.sampled_from(WORDS), min_size=1, max_size=3),
       ns=st.sampled_from(["n1", "n2", None]), where=where_st, k=st.integers(1, 15))
def test_lexical_isolation_property(rows: list[tuple], query: list[str], ns: str | None,
                                    where: dict | None, k: int) -> None:
    """Never a memory of another namespace or one failing ``where``; exactly the matching set
    when ``k`` is large enough; and the same set ``find`` gives for the filters."""
    with tempfile.TemporaryDirectory() as tmp, \
            Space.create(Path(tmp) / "s", FP, SPECS, durable=False) as s:
        ids = [add_texts(s, [" ".join(w)], namespace=n, kind=kd,
                         metadata={} if t is None else {"topic": t})[0]
               for w, n, kd, t in rows]
        want = {ids[i] for i in _expected(rows, ns, where, set(query))}
        got = [i for i, _ in s.lexical_search(" ".join(query), k, ns, where)]
        assert len(got) == len(set(got)) == min(k, len(want))
        assert set(got) <= want
        assert want <= {m.id for m in s.find(ns, where)} | set()
        if k >= len(want):
            assert set(got) == want


# -- consistency ------------------------------------------------------------------------------
def test_consistent_through_add_delete_reopen_compact(space_path: Path) -> None:
    s = Space.create(space_path, FP, SPECS, durable=False)
    a = add_texts(s, [f"alphaword{i} shared" for i in range(10)], session_id="s1")
    add_texts(s, [f"betaword{i} shared" for i in range(10)], session_id="s2")
    assert_fts_consistent(space_path)
    assert s.delete(a[:3]) == 3
    assert s.delete_where("default", {"session_id": "s2"}) == 10
    assert_fts_consistent(space_path)
    assert s.lexical_search("alphaword0", 5, None) == []
    assert s.lexical_search("betaword4", 5, None) == []
    assert {i for i, _ in s.lexical_search("shared", 50, None)} == set(a[3:])
    s.close()
    with Space.open(space_path, FP) as s:
        assert [h[0] for h in s.lexical_search("alphaword5", 5, None)] == [a[5]]
        s.compact()
        assert [h[0] for h in s.lexical_search("alphaword5", 5, None)] == [a[5]]
        assert s.lexical_search("betaword4", 5, None) == []
    assert_fts_consistent(space_path)
    assert b"betaword" not in db_bytes(space_path)


def test_deleted_words_leave_the_db_file(space: Space, space_path: Path) -> None:
    """The FTS segments keep no trace of a forgotten memory's words: not after delete (the
    delete's transaction optimizes the index), not after compaction."""
    add_texts(space, FILLER)
    secret = "xylophonequartz plumbuszebra 5550199"
    (victim,) = add_texts(space, [secret])
    space.lexical_search("xylophonequartz", 1, None)  # index in use
    assert b"xylophonequartz" in db_bytes(space_path)  # the check below can see it
    space.delete([victim])
    for word in secret.split():
        assert word.encode() not in db_bytes(space_path), word
    space.compact()
    for word in secret.split():
        assert word.encode() not in db_bytes(space_path), word
    assert space.lexical_search("weekly", 1, None)


def test_failed_add_leaves_index_unchanged(space: Space, space_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from msa_agent.store.meta import MetaStore

    add_texts(space, FILLER)
    real = MetaStore.commit_add

    def broken(self: MetaStore, memories: object, ends: tuple[int, int], *rest: object) -> None:
        real(self, [*memories, memories[0]], ends, *rest)  # type: ignore[list-item,index]
    monkeypatch.setattr(MetaStore, "commit_add", broken)  # duplicate id: the commit fails
    with pytest.raises(StoreError):
        add_texts(space, ["uniqueterm appears once"])
    assert space.lexical_search("uniqueterm", 5, None) == []
    assert_fts_consistent(space_path)


# -- FTS5 availability and schema upgrade -----------------------------------------------------
def test_missing_fts5_is_a_clear_error(space_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Space.create(space_path, FP, SPECS, durable=False).close()
    monkeypatch.setattr(lexical, "fts5_available", lambda: False)
    for _ in range(2):  # the failed open releases the lock
        with pytest.raises(FTS5UnavailableError, match="FTS5"):
            Space.open(space_path)
    with pytest.raises(FTS5UnavailableError, match="without FTS5"):
        Space.create(space_path.parent / "other", FP, SPECS)
    assert not (space_path.parent / "other").exists()
    monkeypatch.undo()
    Space.open(space_path).close()


def _downgrade_to_v1(path: Path) -> None:
    """Make a space look as if made before the lexical index (schema version 1)."""
    con = sqlite3.connect(path / "meta.sqlite")
    with con:
        for t in ("memories_fts_ai", "memories_fts_ad", "memories_fts_au"):
            con.execute(f"DROP TRIGGER {t}")
        con.execute(f"DROP TABLE {FTS_TABLE}")
        con.execute("UPDATE schema_version SET version = 1")
    con.close()


def test_older_space_gets_index_at_write_open(space_path: Path) -> None:
    with Space.create(space_path, FP, SPECS, durable=False) as s:
        ids = add_texts(s, [*FILLER, "the zorblatt incident"])
    _downgrade_to_v1(space_path)
    with Space.open(space_path, read_only=True) as ro:
        assert ro.count() == len(ids)
        with pytest.raises(SpaceReadOnlyError, match="open it once for writing"):
            ro.lexical_search("zorblatt", 1, None)
        with Space.open(space_path, FP) as s:  # the writer upgrades; the reader follows
            assert [h[0] for h in s.lexical_search("zorblatt", 1, None)] == [ids[-1]]
            assert [h[0] for h in ro.lexical_search("zorblatt", 1, None)] == [ids[-1]]
    assert_fts_consistent(space_path)
    with sqlite3.connect(space_path / "meta.sqlite") as con:
        assert con.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_read_only_reader_follows_writer(space_path: Path) -> None:
    with Space.create(space_path, FP, SPECS, durable=False) as w:
        (first,) = add_texts(w, ["quokka sighting"])
        with Space.open(space_path, read_only=True) as ro:
            assert [h[0] for h in ro.lexical_search("quokka", 5, None)] == [first]
            (second,) = add_texts(w, ["another quokka, a larger quokka"])
            assert [h[0] for h in ro.lexical_search("quokka", 5, None)] == [second, first]
            w.delete([second])
            assert [h[0] for h in ro.lexical_search("quokka", 5, None)] == [first]


def test_idf_survives_counts_taken_across_a_commit() -> None:
    """A read-only reader counts rows and term hits in two queries; a writer's commit between
    them can make hits exceed rows. That once raised ``math domain error`` mid-recall."""
    from msa_agent.store.lexical import fts_idf, lucene_idf

    assert fts_idf(10, 12) == fts_idf(10, 10) > 0
    assert lucene_idf(10, 12) == lucene_idf(10, 10) > 0
