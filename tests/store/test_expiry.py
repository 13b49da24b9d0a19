"""Expiry of memories in the store (schema 4): stored, filtered at a given time, removed
with their memory, and absent (not an error) in spaces that predate it."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_helpers import FP, SPECS, make_data, mem

from msa_agent.store import NewMemory, Space

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def put(space: Space, mems: list[NewMemory]) -> list[str]:
    return space.add(mems, [make_data(m, i) for i, m in enumerate(mems)])


def test_expiry_is_stored_and_read_back_as_aware_utc(space: Space) -> None:
    naive = datetime(2026, 1, 2, 12)  # naive = UTC
    a, b = put(space, [mem(0, expires_at=naive), mem(1)])
    got = {m.id: m for m in space.get_many([a, b])}
    assert got[a].expires_at == naive.replace(tzinfo=timezone.utc)
    assert got[b].expires_at is None
    assert [m.expires_at for m in space.find()] == [got[a].expires_at, None]


def test_alive_at_filters_find_count_and_lexical(space: Space) -> None:
    old, new, never = put(space, [
        NewMemory("quokka one", n_chunks=1, n_tokens=3, expires_at=T0 + timedelta(hours=1)),
        NewMemory("quokka two", n_chunks=1, n_tokens=3, expires_at=T0 + timedelta(hours=2)),
        NewMemory("quokka three", n_chunks=1, n_tokens=3)])
    at = T0 + timedelta(hours=1)  # the first expires AT this time: gone (expires_at <= at)
    assert {m.id for m in space.find(alive_at=at)} == {new, never}
    assert space.count(alive_at=at) == 2 and space.count() == 3
    assert {i for i, _ in space.lexical_search("quokka", 10, None, alive_at=at)} == {new, never}
    assert space.expired(at) == [old]
    assert sorted(space.expired(T0 + timedelta(days=1))) == sorted([old, new])
    assert space.expired(at, namespace="elsewhere") == []
    assert {m.id for m in space.find()} == {old, new, never}  # no alive_at: all kept


def test_delete_drops_the_expiry_row(space: Space, space_path: Path) -> None:
    (a,) = put(space, [mem(0, expires_at=T0)])
    space.delete([a])
    with sqlite3.connect(space_path / "meta.sqlite") as con:
        assert con.execute("SELECT count(*) FROM expiries").fetchone() == (0,)
    con.close()


def test_compaction_keeps_expiries_of_moved_memories(space: Space) -> None:
    a, b = put(space, [mem(0), mem(1, expires_at=T0)])
    space.delete([a])
    space.compact()
    assert space.get(b).expires_at == T0  # type: ignore[union-attr]


def test_schema_3_space_reads_without_expiries_and_upgrades(space_path: Path) -> None:
    with Space.create(space_path, FP, SPECS, durable=False) as s:
        put(s, [mem(0)])
    with sqlite3.connect(space_path / "meta.sqlite") as con:
        con.execute("DROP TABLE expiries")
        con.execute("UPDATE schema_version SET version = 3")
    con.close()
    with Space.open(space_path, read_only=True) as ro:  # a reader cannot upgrade: still reads
        assert [m.expires_at for m in ro.find(alive_at=T0)] == [None]
        assert ro.expired(T0) == [] and ro.count(alive_at=T0) == 1
    with Space.open(space_path, FP) as s:  # a writer upgrades, then expiries work
        (b,) = put(s, [mem(1, expires_at=T0)])
        assert s.expired(T0) == [b]


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offsets=st.lists(st.one_of(st.none(), st.integers(-5, 5)), min_size=1, max_size=8),
       probe=st.integers(-6, 6))
def test_alive_at_equals_a_brute_force_filter(tmp_path_factory, offsets: list[int | None],
                                              probe: int) -> None:
    path = tmp_path_factory.mktemp("exp") / "space"
    with Space.create(path, FP, SPECS, durable=False) as space:
        when = [None if o is None else T0 + timedelta(minutes=o) for o in offsets]
        ids = put(space, [mem(i, expires_at=w) for i, w in enumerate(when)])
        at = T0 + timedelta(minutes=probe)
        want = {i for i, w in zip(ids, when) if w is None or w > at}
        assert {m.id for m in space.find(alive_at=at)} == want
        assert set(space.expired(at)) == set(ids) - want
