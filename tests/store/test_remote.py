"""The store on a remote backend: PostgreSQL metadata (a real server on loopback) with arrays
in a local folder or in S3 (moto). The behaviour tests of test_space.py and test_lexical.py
run again here against PostgreSQL (imported below: this module's ``space`` fixture is theirs).
Skips, saying why, where PostgreSQL or the remote extra is missing (tests/remote_fixtures.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from lexical_helpers import add_texts
from remote_fixtures import pg_location, pg_url, s3_location, s3_options  # noqa: F401
from store_helpers import FP, SPECS, make_data, mem
from test_lexical import (  # noqa: F401  (run here on PostgreSQL)
    test_bad_arguments_raise_store_errors,
    test_hostile_queries_never_raise,
    test_matched_terms_are_the_query_words_each_memory_contains,
    test_rare_name_found_first,
    test_stemming_and_diacritics,
    test_stop_words_only_and_empty_return_nothing,
)
from test_space import (  # noqa: F401  (run here on PostgreSQL)
    add_n,
    assert_rows,
    test_delete_really_deletes,
    test_delete_where_and_read_all,
    test_find_order_limit_offset,
    test_get_many_order_and_missing,
    test_namespace_isolation,
    test_overwrite,
    test_pre_assigned_ids,
    test_read_all_is_one_slice_read,
    test_round_trip,
    test_validation_writes_nothing,
    test_where_filters,
    test_zero_row_memories,
)

from msa_agent.store import (
    MissingDependencyError,
    NewMemory,
    RemoteLocation,
    Space,
    SpaceExistsError,
    SpaceLockedError,
    SpaceNotFoundError,
    SpaceReadOnlyError,
    StoreInputError,
    StoreUnavailableError,
)


@pytest.fixture
def space(pg_location: RemoteLocation) -> Iterator[Space]:  # noqa: F811
    """What test_space.py's tests take: here a PostgreSQL space."""
    with Space.create(pg_location, FP, SPECS, durable=False) as s:
        yield s


# -- lifecycle and locking ----------------------------------------------------------------------
def test_create_open_reopen(pg_location: RemoteLocation) -> None:  # noqa: F811
    assert not Space.is_space(pg_location)
    with pytest.raises(SpaceNotFoundError):
        Space.open(pg_location)
    with Space.create(pg_location, FP, SPECS) as s:
        ids, data = add_n(s, 5)
        s.set_setting("router", {"id": "r1"})
        before = s.get_many(ids)
    assert Space.is_space(pg_location)
    with pytest.raises(SpaceExistsError):
        Space.create(pg_location, FP, SPECS)
    with Space.open_or_create(pg_location, FP, SPECS) as s:
        assert s.get_many(ids) == before
        assert_rows(s, ids, data)
        assert s.get_setting("router") == {"id": "r1"}
        assert "postgres@127.0.0.1" in str(s.path) and pg_location.name in str(s.path)


def test_second_writer_refused_and_lock_released(pg_location: RemoteLocation) -> None:  # noqa: F811
    with Space.create(pg_location, FP, SPECS) as writer:
        with pytest.raises(SpaceLockedError):
            Space.open(pg_location)
        with pytest.raises(SpaceLockedError):
            Space.open_or_create(pg_location, FP, SPECS)
        with Space.open(pg_location, read_only=True) as reader:  # readers take no lock
            with pytest.raises(SpaceReadOnlyError):
                reader.add([mem(0)], [make_data(mem(0), 0)])
        add_n(writer, 1)
    with Space.open(pg_location) as again:  # released by close
        assert again.count() == 1


def test_lock_of_a_killed_writer_is_released(pg_location: RemoteLocation) -> None:  # noqa: F811
    Space.create(pg_location, FP, SPECS).close()
    code = textwrap.dedent(f"""
        import sys, time
        from msa_agent.store import RemoteLocation, Space
        s = Space.open(RemoteLocation({pg_location.meta_url!r}, {pg_location.arrays_url!r},
                                      name={pg_location.name!r}))
        print("locked", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(SpaceLockedError):
            Space.open(pg_location)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with Space.open(pg_location) as s:  # the server ended the dead session and its lock
        assert s.count() == 0


def test_writer_that_lost_its_lock_cannot_commit(pg_location: RemoteLocation) -> None:  # noqa: F811
    """The lock's session ends behind the writer's back (a dropped connection): its next
    write is refused, not committed beside a new writer."""
    with Space.create(pg_location, FP, SPECS) as s:
        pid = s._lock.pid
        with s._meta.engine.connect() as c:
            c.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        with pytest.raises(SpaceLockedError, match="lost its PostgreSQL advisory lock"):
            add_n(s, 1)
        with Space.open(pg_location) as other:  # the lock is free for a new writer
            assert other.count() == 0


def test_reader_follows_writer_through_delete_and_compact(pg_location: RemoteLocation) -> None:  # noqa: F811,E501
    with Space.create(pg_location, FP, SPECS, durable=False) as w, \
            Space.open(pg_location, read_only=True) as r:
        ids, data = add_n(w, 6)
        g0 = r.generation()
        assert_rows(r, ids, data)
        w.delete(ids[:2])
        assert r.generation() != g0
        w.compact()
        assert_rows(r, ids[2:], data[2:])
        keys, owners = r.read_all("route_k")
        assert len(keys) == sum(m.n_chunks for m in r.live_chunks())
        assert [h for h, _ in r.lexical_search("memory 4", 1, None)] == [ids[4]]


def test_spaces_share_one_database(pg_url: str, tmp_path: Any) -> None:  # noqa: F811
    a = RemoteLocation(pg_url, f"file://{tmp_path}/a", name="space_a")
    b = RemoteLocation(pg_url, f"file://{tmp_path}/b", name="space_b")
    with Space.create(a, FP, SPECS) as sa, Space.create(b, FP, SPECS) as sb:  # both writable
        add_texts(sa, ["alpha only in a"])
        add_texts(sb, ["bravo only in b", "bravo again"])
        assert (sa.count(), sb.count()) == (1, 2)
        assert sa.lexical_search("bravo", 5, None) == []
        assert [m.text for m in sa.find()] == ["alpha only in a"]


# -- bad input and missing parts -----------------------------------------------------------------
def test_bad_locations_are_clear_errors(pg_url: str) -> None:  # noqa: F811
    with pytest.raises(StoreInputError, match="not supported"):
        RemoteLocation("mysql://u@h/db", "s3://b/p")
    with pytest.raises(StoreInputError, match="not a SQLAlchemy URL"):
        RemoteLocation("no url at all", "s3://b/p")
    with pytest.raises(StoreInputError, match="schema"):
        RemoteLocation(pg_url, "s3://b/p", name="Bad-Name")
    with pytest.raises(StoreInputError, match="unknown URL scheme"):
        Space.create(RemoteLocation(pg_url, "nosuchscheme://x/y", name="t_bad"), FP, SPECS)
    loc = RemoteLocation("postgresql://u:secret@127.0.0.1:1/db", "file:///tmp/x", name="t_x")
    with pytest.raises(StoreUnavailableError, match="cannot reach") as e:
        Space.open(loc)
    assert "secret" not in str(e.value) and "secret" not in repr(loc)


def test_missing_driver_names_the_extra(pg_location: RemoteLocation,  # noqa: F811
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now fails
    with pytest.raises(MissingDependencyError, match=r"msa-agent\[remote\]"):
        Space.create(pg_location, FP, SPECS)


def test_nul_is_refused_before_anything_is_written(space: Space) -> None:
    for bad in (NewMemory(text="a\x00b"), NewMemory(text="ok", metadata={"k": ["x\x00"]})):
        with pytest.raises(StoreInputError, match="NUL"):
            space.add([bad], [make_data(bad, 0)])
    assert space.count() == 0 and space.stats()["committed_rows"] == {"chunk": 0, "token": 0}


def test_metadata_round_trip_and_time_filters(space: Space) -> None:
    t0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    meta = {"n": 1, "f": 0.3333333333333333, "big": 2**62, "s": "1", "b": True,
            "nested": {"l": [1, "x", None]}}
    (i,) = add_texts(space, ["x"], metadata=meta, created_at=t0)
    got = space.get(i)
    assert got is not None and got.metadata == meta and got.created_at == t0
    for key, value in meta.items():
        if key != "nested":
            assert [m.id for m in space.find(where={key: value})] == [i], key
    assert space.find(where={"s": 1}) == [] and space.find(where={"b": 1}) == []
    assert space.count(since=t0, until=t0 + timedelta(microseconds=1)) == 1
    assert space.count(until=t0) == 0


# -- arrays in S3 (moto) -------------------------------------------------------------------------
def test_s3_arrays_round_trip_compact_and_reader(s3_location: RemoteLocation) -> None:  # noqa: F811
    with Space.create(s3_location, FP, SPECS) as w:
        ids, data = add_n(w, 8)
        assert_rows(w, ids, data)
        w.delete(ids[:3])
        w.compact()
        assert_rows(w, ids[3:], data[3:])
        with Space.open(s3_location, read_only=True) as r:
            assert_rows(r, ids[3:], data[3:])
            more, more_data = add_n(w, 2, start=8)
            assert_rows(r, more, more_data)  # the reader follows the writer's growth
        assert w.stats()["bytes_on_disk"] > 0
    with Space.open(s3_location, FP) as s:
        keys, owners = s.read_all("route_k")
        want = np.concatenate([d["route_k"] for d in data[3:] + more_data])
        np.testing.assert_array_equal(keys, want)
        assert s._root.array_dirs() == ["arrays.1.zarr"]  # the old folder is gone from S3
