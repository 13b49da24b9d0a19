"""Round trips, persistence, deletion, isolation and filters of ``Space``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_helpers import FP, SPECS, make_data, mem

from msa_agent.store import (
    ArraySpec,
    NewMemory,
    Space,
    SpaceExistsError,
    SpaceLockedError,
    SpaceNotFoundError,
    SpaceReadOnlyError,
    StoreInputError,
)
from msa_agent.store.arrays import ArrayStore


def add_n(space: Space, n: int, start: int = 0, **kw: object) -> tuple[list[str], list[dict]]:
    mems = [mem(i, **kw) for i in range(start, start + n)]
    data = [make_data(m, i) for i, m in zip(range(start, start + n), mems, strict=True)]
    return space.add(mems, data), data


def assert_rows(space: Space, ids: list[str], data: list[dict]) -> None:
    stored = space.get_many(ids)
    assert [m.id for m in stored] == ids
    for s in SPECS:
        for got, want in zip(space.read(s.name, stored), data, strict=True):
            np.testing.assert_array_equal(got, want[s.name])


def test_round_trip(space: Space) -> None:
    ids, data = add_n(space, 10)
    assert len(set(ids)) == 10
    assert_rows(space, ids, data)
    m = space.get(ids[3])
    assert m is not None and m.text == "memory 3" and m.namespace == "default"
    assert m.created_at.tzinfo is not None
    assert len(m.content_hash) == 64
    assert space.get("nope") is None


def test_get_many_order_and_missing(space: Space) -> None:
    ids, _ = add_n(space, 4)
    got = space.get_many([ids[2], "missing", ids[0]])
    assert [m.id for m in got] == [ids[2], ids[0]]


def test_reopen_identical(space_path: Path) -> None:
    with Space.create(space_path, FP, SPECS) as s:
        ids, data = add_n(s, 7)
        s.set_setting("router", {"id": "r1"})
        before = s.get_many(ids)
    with Space.open(space_path, FP) as s:
        assert s.get_many(ids) == before
        assert_rows(s, ids, data)
        assert s.get_setting("router") == {"id": "r1"}
        assert s.get_setting("missing") is None
        ids2, data2 = add_n(s, 3, start=7)
        assert_rows(s, ids + ids2, data + data2)


def test_delete_really_deletes(space: Space) -> None:
    ids, data = add_n(space, 6)
    victim = space.get(ids[2])
    assert victim is not None
    assert space.delete([ids[2], "missing"]) == 1
    assert space.get(ids[2]) is None
    for s in SPECS:  # the victim's array rows are zero on disk
        a, b = victim.rows(s.unit)
        raw = space._store.read(s.name, a, b)
        assert raw.shape[0] == b - a and not raw.any()
    keep = ids[:2] + ids[3:]
    assert_rows(space, keep, data[:2] + data[3:])
    assert space.delete([ids[2]]) == 0


def test_delete_where_and_read_all(space: Space) -> None:
    ids, data = add_n(space, 6, kind="tool")
    ids2, data2 = add_n(space, 3, start=6, kind="session")
    assert space.delete_where(None, {"kind": "tool"}) == 6
    rows, owners = space.read_all("route_k")
    live = space.live_chunks()
    assert [m.id for m in live] == ids2
    np.testing.assert_array_equal(rows, np.concatenate([d["route_k"] for d in data2]))
    np.testing.assert_array_equal(owners, np.repeat(np.arange(3), [m.n_chunks for m in live]))


def test_namespace_isolation(space: Space) -> None:
    a, _ = add_n(space, 4, namespace="alice")
    b, _ = add_n(space, 3, start=4, namespace="bob")
    assert {m.id for m in space.find("alice")} == set(a)
    assert {m.id for m in space.find("bob")} == set(b)
    assert space.count("alice") == 4 and space.count("bob") == 3 and space.count() == 7
    assert space.find("carol") == [] and space.count("carol") == 0
    assert space.namespaces() == ["alice", "bob"]
    assert space.delete_where("alice", {}) == 4
    assert space.count("bob") == 3 and space.count("alice") == 0


def test_where_filters(space: Space) -> None:
    specs = [("music", "s1", 1, True), ("art", "s1", 2, False), ("music", "s2", 3, True),
             ("food", None, 4, False)]
    mems = [mem(i, session_id=sid, user_id="u", kind="session" if i % 2 else "tool",
                metadata={"topic": t, "n": n, "flag": f, "score": n / 2})
            for i, (t, sid, n, f) in enumerate(specs)]
    ids = space.add(mems, [make_data(m, i) for i, m in enumerate(mems)])

    def found(where: dict) -> set[int]:
        return {ids.index(m.id) for m in space.find(where=where)}

    assert found({"topic": "music"}) == {0, 2}
    assert found({"topic": ["art", "food"]}) == {1, 3}
    assert found({"session_id": "s1"}) == {0, 1}
    assert found({"session_id": None}) == {3}
    assert found({"n": 3}) == {2}
    assert found({"n": [1, 4, 99]}) == {0, 3}
    assert found({"flag": True}) == {0, 2}
    assert found({"score": 1.5}) == {2}
    assert found({"kind": "tool", "topic": "music"}) == {0, 2}
    assert found({"missing_key": None}) == {0, 1, 2, 3}
    assert found({"n": "3"}) == set() and found({"n": 3.0}) == {2}  # strict JSON types
    assert found({"flag": 1}) == set() and found({"topic": True}) == set()
    assert found({"topic": []}) == set()
    assert space.count(where={"user_id": "u", "topic": "music"}) == 2
    for bad in ({"topic": {"a": 1}}, {"topic": [[1]]}, {"topic": object()}):
        with pytest.raises(ValueError):
            space.find(where=bad)


def test_find_order_limit_offset(space: Space) -> None:
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    mems = [mem(i, created_at=t0 + timedelta(hours=5 - i)) for i in range(5)]
    ids = space.add(mems, [make_data(m, i) for i, m in enumerate(mems)])
    asc = [m.id for m in space.find()]
    assert asc == ids[::-1]
    assert [m.id for m in space.find(order="-created_at")] == ids
    assert [m.id for m in space.find(limit=2, offset=1)] == ids[::-1][1:3]
    assert space.find()[0].created_at == t0 + timedelta(hours=1)


def test_validation_writes_nothing(space: Space) -> None:
    add_n(space, 2)
    before = space.stats()
    m = mem(0)
    good = make_data(m, 0)
    bad_cases = [
        ([m], [{**good, "route_k": good["route_k"][:-1]}]),                  # wrong rows
        ([m], [{**good, "route_k": good["route_k"].astype("float32")}]),     # wrong dtype
        ([m], [{k: v for k, v in good.items() if k != "full_k"}]),           # missing array
        ([m], [{**good, "extra": good["route_k"]}]),                         # unknown array
        ([NewMemory(text=b"x", n_chunks=1, n_tokens=3)], [good]),            # type: ignore
        ([mem(0, metadata={"x": object()})], [good]),                        # not JSON
        ([m, m], [good]),                                                    # length mismatch
        ([m, mem(1)], [good, good]),                                         # 2nd is wrong
    ]
    for mems, data in bad_cases:
        with pytest.raises(ValueError):
            space.add(mems, data)
    assert space.stats() == before


def test_create_open_errors(space_path: Path) -> None:
    with pytest.raises(SpaceNotFoundError):
        Space.open(space_path)
    with Space.create(space_path, FP, SPECS):
        with pytest.raises(SpaceLockedError):
            Space.open(space_path)
    with pytest.raises(SpaceExistsError):
        Space.create(space_path, FP, SPECS)
    with Space.open_or_create(space_path, FP, SPECS) as s:
        assert s.fingerprint == FP and set(s.arrays) == {x.name for x in SPECS}
    with Space.open_or_create(space_path.parent / "new", FP, SPECS) as s:
        assert s.count() == 0


def test_overwrite(space: Space) -> None:
    ids, data = add_n(space, 3)
    m = space.get(ids[1])
    assert m is not None
    new = np.full_like(data[1]["route_k"], 7)
    space.overwrite("route_k", m, new)
    np.testing.assert_array_equal(space.read("route_k", [m])[0], new)
    assert_rows(space, [ids[0], ids[2]], [data[0], data[2]])
    with pytest.raises(ValueError):
        space.overwrite("route_k", m, new[:-1])


def test_compact(space_path: Path) -> None:
    with Space.create(space_path, FP, SPECS, durable=False) as s:
        ids, data = add_n(s, 12)
        s.delete(ids[::3])
        s.compact()
        keep = [i for k, i in enumerate(ids) if k % 3]
        kept = [d for k, d in enumerate(data) if k % 3]
        assert_rows(s, keep, kept)
        st = s.stats()
        assert st["committed_rows"]["chunk"] == sum(m.n_chunks for m in s.get_many(keep))
    with Space.open(space_path) as s:
        assert_rows(s, keep, kept)
        assert [p.name for p in space_path.glob("arrays*.zarr")] == ["arrays.1.zarr"]


def test_zero_row_memories(space: Space) -> None:
    mems = [NewMemory(text="empty"), mem(1), NewMemory(text="empty2")]
    ids = space.add(mems, [make_data(m, i) for i, m in enumerate(mems)])
    out = space.read("route_k", space.get_many(ids))
    assert [len(x) for x in out] == [0, 2, 0]
    rows, owners = space.read_all("route_k")
    assert len(rows) == 2 and len(space.live_chunks()) == 3


def test_stats(space: Space) -> None:
    add_n(space, 3, namespace="a")
    st = space.stats()
    assert st["memories"] == 3 and st["namespaces"] == {"a": 3}
    assert st["chunks"] == 1 + 2 + 3
    assert all(a["bytes_on_disk"] > 0 for a in st["arrays"].values())
    assert st["sqlite_bytes"] > 0


def test_deleted_text_leaves_sqlite_files(space: Space, space_path: Path) -> None:
    secret = "my-secret-phone-number-555-0199"
    m = mem(0)
    keep = space.add([mem(1)], [make_data(mem(1), 1)])
    (victim,) = space.add([NewMemory(text=secret, n_chunks=m.n_chunks, n_tokens=m.n_tokens)],
                          [make_data(m, 0)])
    assert space.delete([victim]) == 1
    for f in space_path.glob("meta.sqlite*"):
        assert secret.encode() not in f.read_bytes(), f.name
    assert space.get(keep[0]) is not None


def test_add_does_not_rewrite_old_chunks(space: Space, space_path: Path) -> None:
    for k in range(8):
        add_n(space, 6, start=6 * k)
    spec = SPECS[0]
    files = {p: p.stat().st_ino for p in (space_path / "arrays.zarr" / spec.name / "c").rglob("*")
             if p.is_file()}
    end = space._ends[spec.unit]
    add_n(space, 6, start=100)
    first_touched = end // spec.chunk_rows  # only the partial last chunk may be rewritten
    for p, ino in files.items():
        chunk_index = int(p.relative_to(space_path / "arrays.zarr" / spec.name / "c").parts[0])
        if chunk_index < first_touched:
            assert p.stat().st_ino == ino, p


@pytest.mark.parametrize("codec", ["lz4", "zstd", "none"])
def test_codecs_round_trip(tmp_path: Path, codec: str) -> None:
    spec = ArraySpec("route_k", "chunk", (2, 3, 4), codec=codec)  # type: ignore[arg-type]
    rows = np.arange(3 * 24, dtype="float16").reshape(3, 2, 3, 4)
    with Space.create(tmp_path / "s", {}, [spec], durable=False) as s:
        (i,) = s.add([NewMemory(text="x", n_chunks=3)], [{"route_k": rows}])
    with Space.open(tmp_path / "s") as s:
        np.testing.assert_array_equal(s.read("route_k", s.get_many([i]))[0], rows)
        assert s.arrays["route_k"].codec == codec


def test_pre_assigned_ids(space: Space) -> None:
    m = mem(0, id="doc-1#0")
    (i,) = space.add([m], [make_data(m, 0)])
    assert i == "doc-1#0" and space.get(i) is not None
    before = space.stats()
    for bad in ([mem(1, id="doc-1#0")], [mem(1, id="x"), mem(2, id="x")], [mem(1, id="")]):
        with pytest.raises(ValueError):
            space.add(bad, [make_data(b, k) for k, b in enumerate(bad)])
    assert space.stats() == before


def test_read_only_follows_writer(space_path: Path) -> None:
    writer = Space.create(space_path, FP, SPECS, durable=False)
    ids, data = add_n(writer, 5)
    with Space.open(space_path, FP, read_only=True) as reader:
        assert_rows(reader, ids, data)
        for _ in range(3):  # grow past the reader's cached capacity (64 chunk rows)
            more, more_data = add_n(writer, 20, start=len(ids))
            ids, data = ids + more, data + more_data
        assert_rows(reader, ids, data)
        writer.delete(ids[:3])
        writer.compact()  # the reader follows the switch to arrays.1.zarr
        assert_rows(reader, ids[3:], data[3:])
        rows, owners = reader.read_all("route_k")
        assert len(rows) == len(owners) == sum(m.n_chunks for m in reader.live_chunks())
        with pytest.raises(SpaceReadOnlyError):
            reader.add([mem(0)], [make_data(mem(0), 0)])
        for write in (lambda: reader.delete(ids[3:4]), lambda: reader.set_setting("k", 1),
                      reader.compact):
            with pytest.raises(SpaceReadOnlyError):
                write()
    writer.close()


def test_read_all_is_one_slice_read(space: Space, monkeypatch: pytest.MonkeyPatch) -> None:
    ids, data = add_n(space, 30)
    space.delete(ids[5:9])
    calls: list[tuple[str, int, int]] = []
    real = ArrayStore.read

    def spy(self: ArrayStore, name: str, start: int, stop: int) -> np.ndarray:
        calls.append((name, start, stop))
        return real(self, name, start, stop)

    monkeypatch.setattr(ArrayStore, "read", spy)
    rows, owners = space.read_all("route_k")
    assert len(calls) == 1
    keep = data[:5] + data[9:]
    np.testing.assert_array_equal(rows, np.concatenate([d["route_k"] for d in keep]))
    calls.clear()
    stored = space.get_many(ids[10:20])  # adjacent memories: merged into one read
    space.read("pooled_v", stored)
    assert len(calls) == 1



@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_read_spans_gives_those_rows_of_each_memory(space: Space, data: st.DataObject) -> None:
    """A span ``[a, b)`` per memory (a kv_chunks window) gives its rows ``a`` to ``b``."""
    if not space.find():
        add_n(space, 9)
    stored = space.find()
    picked = data.draw(st.lists(st.sampled_from(stored), min_size=1, max_size=4))
    spans = [data.draw(st.tuples(st.integers(0, m.n_tokens), st.integers(0, m.n_tokens))
                       .map(sorted).map(tuple)) for m in picked]
    got = space.read("full_k", picked, spans)
    whole = space.read("full_k", picked)
    for g, w, (a, b) in zip(got, whole, spans, strict=True):
        np.testing.assert_array_equal(g, w[a:b])


def test_read_spans_reads_only_the_span_from_the_arrays(
        space: Space, monkeypatch: pytest.MonkeyPatch) -> None:
    add_n(space, 3)
    m = max(space.find(), key=lambda x: x.n_tokens)
    read: list[tuple[int, int]] = []
    real = ArrayStore.read

    def spy(self: ArrayStore, name: str, start: int, stop: int) -> np.ndarray:
        read.append((start, stop))
        return real(self, name, start, stop)

    monkeypatch.setattr(ArrayStore, "read", spy)
    space.read("full_k", [m], [(2, 5)])
    first = m.rows("token")[0]
    assert read == [(first + 2, first + 5)]


def test_read_spans_refuses_spans_outside_a_memory(space: Space) -> None:
    add_n(space, 3)
    stored = space.find()
    n = stored[0].n_tokens
    for spans in ([(0, n + 1)], [(-1, 1)], [(2, 1)], [(0, 1), (0, 1)]):
        with pytest.raises(StoreInputError, match="span"):
            space.read("full_k", stored[:1], spans)
