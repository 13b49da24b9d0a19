"""Fusion of the recall channels: weighted sum and RRF, recency, the newer-within window,
more of the question's words."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msa_agent.runtime.fusion import (
    LEXICAL,
    MSA,
    SUMMARY,
    Fusion,
    fuse,
    superseded,
    versions,
)

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def days(**ids: int) -> dict[str, datetime]:
    return {i: T0 + timedelta(days=d) for i, d in ids.items()}


def order(rankings: dict, created: dict, f: Fusion) -> list[str]:  # noqa: ANN001
    return [r.id for r in fuse(rankings, created, f)]


def test_weighted_sum_normalises_each_channel() -> None:
    f = Fusion("sum", weights=((MSA, 1.0), (LEXICAL, 4.0)))
    ranked = fuse({LEXICAL: [("a", 10.0), ("b", 5.0)], MSA: [("b", 0.9), ("a", 0.1)]},
                  days(a=0, b=0), f)
    # non-negative scores are divided by the pool's best: a = 4 * 10/10 + 0.1/0.9, b = 2 + 1
    assert [(r.id, round(r.score, 6)) for r in ranked] == [("a", round(4 + 1 / 9, 6)),
                                                            ("b", 3.0)]
    signed = fuse({MSA: [("a", 0.5), ("b", -0.5)]}, days(a=0, b=0), Fusion("sum"))
    assert [r.score for r in signed] == [1.0, -1.0]  # one scale, whatever a score's sign
    worst = fuse({MSA: [("a", -0.2), ("b", -0.6)]}, days(a=0, b=0), Fusion("sum"))
    assert [r.score for r in worst] == [1.0, 0.0]  # no positive best: min-max
    assert ranked[1].channels == {LEXICAL: 5.0, f"{LEXICAL}_rank": 2.0, MSA: 0.9,
                                  f"{MSA}_rank": 1.0}


def test_a_channel_norm_scales_that_channel_alone() -> None:
    cos = [("a", 0.90), ("b", 0.85), ("c", 0.80)]  # bunched cosines
    msa = [("c", 2.0), ("b", 1.2), ("a", 1.0)]
    created = days(a=0, b=0, c=0)
    by_best = fuse({SUMMARY: cos, MSA: msa}, created, Fusion("sum", weights=((SUMMARY, 1.0),)))
    # over the best the cosines differ by 0.11 at most, so MSA's c leads
    assert [r.id for r in by_best] == ["c", "b", "a"]
    minmax = Fusion("sum", weights=((SUMMARY, 1.0),), norms=((SUMMARY, "minmax"),))
    ranked = fuse({SUMMARY: cos, MSA: msa}, created, minmax)
    # summary 1, 0.5, 0 against MSA 0.5, 0.6, 1: a = 1.5, b = 1.1, c = 1.0
    assert [(r.id, round(r.score, 6)) for r in ranked] == [("a", 1.5), ("b", 1.1), ("c", 1.0)]
    z = fuse({SUMMARY: cos}, created, Fusion("sum", norms=((SUMMARY, "z"),)))
    sd = (2 * 0.05**2 / 3) ** 0.5
    assert [round(r.score, 6) for r in z] == [round(0.05 / sd, 6), 0.0, round(-0.05 / sd, 6)]
    z_only = Fusion("sum", norms=((SUMMARY, "z"),))
    flat = fuse({SUMMARY: [("a", 0.5), ("b", 0.5)]}, created, z_only)
    assert [r.score for r in flat] == [0.0, 0.0]
    with pytest.raises(ValueError, match="unknown channel norm 'l2'"):
        fuse({SUMMARY: cos}, created, Fusion("sum", norms=((SUMMARY, "l2"),)))


def test_rrf_scores_ranks() -> None:
    ranked = fuse({MSA: [("a", 9.0), ("b", 1.0)], LEXICAL: [("b", 3.0)]}, days(a=0, b=0),
                  Fusion("rrf", rrf_k=10))
    assert [r.id for r in ranked] == ["b", "a"]  # 1/12 + 1/11 > 1/11
    assert abs(ranked[0].score - (1 / 12 + 1 / 11)) < 1e-12


def test_recency_breaks_a_tie_towards_the_newer() -> None:
    tie = {LEXICAL: [("old", 2.0), ("new", 2.0)]}
    f = Fusion("sum", weights=((LEXICAL, 1.0),), recency_weight=0.1)
    assert order(tie, days(old=0, new=5), f) == ["new", "old"]


def test_newer_within_moves_the_newer_version_above_a_close_older_one() -> None:
    lex = {LEXICAL: [("old", 10.0), ("other", 9.5), ("new", 8.0)]}
    created = days(old=1, other=0, new=9)
    plain = Fusion("sum", weights=((LEXICAL, 1.0),))
    assert order(lex, created, plain) == ["old", "other", "new"]
    within = Fusion("sum", weights=((LEXICAL, 1.0),), newer_within=0.25)
    assert order(lex, created, within) == ["new", "old", "other"]  # 0.8 >= 0.75 of both
    narrow = Fusion("sum", weights=((LEXICAL, 1.0),), newer_within=0.1)
    assert order(lex, created, narrow) == ["old", "other", "new"]  # 0.8 < 0.9 of 0.95


def test_newer_within_only_reorders_memories_that_share_a_rare_query_word() -> None:
    """With the words each candidate matched, the newer memory moves above a close older one
    only when both contain a query word that at most ``subject_max`` candidates contain."""
    lex = {LEXICAL: [("old", 10.0), ("new", 8.0), ("other", 7.5)]}
    created = days(old=1, new=9, other=10)
    f = Fusion("sum", weights=((LEXICAL, 1.0),), newer_within=0.25, subject_max=2)
    versions = {"old": {"garage", "car", "parked"}, "new": {"garage", "car"}, "other": {"car"}}
    ranked = fuse(lex, created, f, versions)  # "garage": 2 candidates; "car": 3, not rare
    assert [r.id for r in ranked] == ["new", "old", "other"]
    common = {"old": {"car"}, "other": {"car"}, "new": {"car"}}
    assert [r.id for r in fuse(lex, created, f, common)] == ["old", "new", "other"]
    assert [r.id for r in fuse(lex, created, f, {"old": {"gym"}})] == ["old", "new", "other"]
    off = Fusion("sum", weights=((LEXICAL, 1.0),), newer_within=0.25, subject_max=0)
    assert [r.id for r in fuse(lex, created, off, common)] == ["other", "new", "old"]
    assert order(lex, created, f) == ["other", "new", "old"]  # words unknown: any near-tie


def test_newer_within_needs_the_newer_memory_to_restate_the_older_ones_words() -> None:
    """``cover``: a newer memory sharing one rare word of the question with an older, better
    one is no version of it (sessions val: "Where did I book the anniversary dinner?" must
    not put the gym session that mentions "book" above the dinner)."""
    lex = {LEXICAL: [("dinner", 10.0), ("gym", 8.0)]}
    created = days(dinner=1, gym=9)
    words = {"dinner": {"anniversary", "book", "dinner"}, "gym": {"book"}}
    loose = Fusion("sum", weights=((LEXICAL, 1.0),), newer_within=0.5, subject_max=2)
    assert [r.id for r in fuse(lex, created, loose, words)] == ["gym", "dinner"]
    strict = Fusion("sum", weights=((LEXICAL, 1.0),), newer_within=0.5, subject_max=2,
                    cover=0.5)
    assert [r.id for r in fuse(lex, created, strict, words)] == ["dinner", "gym"]
    versions = {"dinner": {"car", "garage", "parked"}, "gym": {"car", "garage"}}  # 2 of 3
    assert [r.id for r in fuse(lex, created, strict, versions)] == ["gym", "dinner"]
    whole = Fusion("sum", weights=((LEXICAL, 1.0),), newer_within=0.5, subject_max=2, cover=1)
    assert [r.id for r in fuse(lex, created, whole, versions)] == ["dinner", "gym"]


def test_newer_within_never_passes_a_newer_memory() -> None:
    lex = {LEXICAL: [("a", 10.0), ("b", 9.0)]}
    f = Fusion("sum", weights=((LEXICAL, 1.0),), newer_within=0.5)
    assert order(lex, days(a=5, b=1), f) == ["a", "b"]  # b is older: it stays below


def test_newer_within_leaves_memories_written_together_alone() -> None:
    lex = {LEXICAL: [("a", 10.0), ("b", 9.9)]}
    created = {"a": T0, "b": T0 + timedelta(minutes=5)}  # one import, minutes apart
    f = Fusion("sum", weights=((LEXICAL, 1.0),), newer_within=0.5)
    assert order(lex, created, f) == ["a", "b"]
    assert order(lex, created, Fusion("sum", weights=((LEXICAL, 1.0),), newer_within=0.5,
                                      newer_gap_s=60)) == ["b", "a"]


scores = st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=12)


def test_more_words_within_puts_the_memory_saying_more_of_the_question_first() -> None:
    """Facts val: "In which city is Stirkvon Group based?" The person's fact (MSA's favourite)
    and the company's fact share the rare name; the company's also holds "based"."""
    lex = {LEXICAL: [("joined", 10.0), ("based", 9.7), ("other", 9.6)]}
    created = days(joined=0, based=0, other=0)
    words = {"joined": {"stirkvon", "group"}, "based": {"stirkvon", "group", "based"},
             "other": {"group", "based", "city"}}
    f = Fusion("sum", weights=((LEXICAL, 1.0),), subject_max=2, more_words_within=0.05)
    assert [r.id for r in fuse(lex, created, f, words)] == ["based", "joined", "other"]
    narrow = Fusion("sum", weights=((LEXICAL, 1.0),), subject_max=2, more_words_within=0.02)
    assert [r.id for r in fuse(lex, created, narrow, words)] == ["joined", "based", "other"]
    # "based" holds more words than "joined", but no rare word in common: nothing moves
    no_subject = {"joined": {"group"}, "based": {"group", "based"}, "other": {"group"}}
    assert [r.id for r in fuse(lex, created, f, no_subject)] == ["joined", "based", "other"]
    off = Fusion("sum", weights=((LEXICAL, 1.0),), subject_max=2)
    assert [r.id for r in fuse(lex, created, off, words)] == ["joined", "based", "other"]
    assert order(lex, created, f) == ["joined", "based", "other"]  # words unknown: no move


word_sets = st.lists(st.sets(st.sampled_from("abcde"), max_size=5), min_size=12, max_size=12)


@given(s=scores, words=word_sets, window=st.floats(0, 1), most=st.integers(0, 4))
def test_more_words_within_only_promotes_close_memories_holding_more_words(
        s: list[float], words: list[set[str]], window: float, most: int) -> None:
    ids = [f"m{i}" for i in range(len(s))]
    lex = {LEXICAL: sorted(zip(ids, s), key=lambda p: -p[1])}
    created = days(**dict.fromkeys(ids, 0))
    matched = dict(zip(ids, words))
    plain = Fusion("sum", weights=((LEXICAL, 1.0),), subject_max=most)
    base = [r.id for r in fuse(lex, created, plain, matched)]
    got = fuse(lex, created, replace(plain, more_words_within=window), matched)
    assert sorted(r.id for r in got) == sorted(ids)
    pos, score = {r.id: n for n, r in enumerate(got)}, {r.id: r.score for r in got}
    for i, a in enumerate(base):
        for b in base[i + 1:]:
            if pos[b] < pos[a]:  # b passed a: it holds a's words and more, and is close
                assert matched[b] > matched[a] and score[b] >= (1 - window) * score[a] - 1e-9
    if window == 0 or most == 0:
        assert [r.id for r in got] == base


@given(s=scores, ages=st.lists(st.integers(0, 5), min_size=12, max_size=12),
       window=st.floats(0, 1))
def test_newer_within_is_a_permutation_that_only_promotes_newer_close_memories(
        s: list[float], ages: list[int], window: float) -> None:
    ids = [f"m{i}" for i in range(len(s))]
    lex = {LEXICAL: sorted(zip(ids, s), key=lambda p: -p[1])}
    created = days(**dict(zip(ids, ages)))
    f = Fusion("sum", weights=((LEXICAL, 1.0),), newer_within=window)
    base = order(lex, created, Fusion("sum", weights=((LEXICAL, 1.0),)))
    got = fuse(lex, created, f)
    assert sorted(r.id for r in got) == sorted(ids)
    pos = {r.id: n for n, r in enumerate(got)}
    for i, a in enumerate(base):
        for b in base[i + 1:]:
            if pos[b] < pos[a]:  # b was promoted over a: newer, and close enough to a
                assert created[b] - created[a] >= timedelta(seconds=f.newer_gap_s)
                sb, sa = (next(r.score for r in got if r.id == x) for x in (b, a))
                assert sb >= (1 - window) * sa - 1e-9
    if window == 0 or len(set(ages[:len(s)])) == 1:
        assert [r.id for r in got] == base


def test_superseded_names_the_newest_later_version_of_each_hit() -> None:
    """Versions (a shared rare query word, the newer restating the older's words, written a
    gap apart) point to the newest; v3 is not superseded by same_day, written five minutes
    after it; memories sharing no rare word point nowhere."""
    words = {"v1": {"garage", "car"}, "v2": {"garage", "car"}, "v3": {"garage", "car"},
             "same_day": {"garage", "car"}, "lunch": {"car"}, "other": {"car"}}
    related = versions(words, 4, 0.5)  # "car" is held by all six: not rare; "garage" is
    created = days(v1=1, v2=5, v3=9, lunch=12, other=13)
    created["same_day"] = created["v3"] + timedelta(minutes=5)
    got = superseded(list(words), created, 3600.0, related)
    assert got == {"v1": "same_day", "v2": "same_day"}
    assert superseded(list(words), created, 3600.0, lambda new, old: False) == {}
