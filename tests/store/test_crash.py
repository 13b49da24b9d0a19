"""Failure injection: crashes between the array write and the SQL commit, and corruption."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from store_helpers import FP, SPECS, make_data, mem

from msa_agent.store import FingerprintMismatchError, Space, StoreCorruptedError
from msa_agent.store.arrays import ArrayStore
from msa_agent.store.meta import MetaStore


class Crash(RuntimeError):
    pass


def crash(*_a: object, **_k: object) -> None:
    raise Crash("simulated crash")


def snapshot(s: Space) -> tuple:
    """Everything observable: rows, committed ends and every committed array row."""
    mems = s.find()
    arrays = {a.name: s._store.read(a.name, 0, s._ends[a.unit]) for a in SPECS}
    return mems, dict(s._ends), arrays


def assert_same(a: tuple, b: tuple) -> None:
    assert a[0] == b[0] and a[1] == b[1]
    for name in a[2]:
        np.testing.assert_array_equal(a[2][name], b[2][name])


def add(s: Space, start: int, n: int) -> tuple[list[str], list[dict]]:
    mems = [mem(i) for i in range(start, start + n)]
    data = [make_data(m, i) for i, m in zip(range(start, start + n), mems, strict=True)]
    return s.add(mems, data), data


@pytest.mark.parametrize("where", ["commit", "second_array"])
def test_crash_before_commit_leaves_store_unchanged(space_path: Path, where: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    s = Space.create(space_path, FP, SPECS, durable=False)
    ids, data = add(s, 0, 5)
    s.delete([ids[1]])
    before = snapshot(s)
    with monkeypatch.context() as mp:
        if where == "commit":
            mp.setattr(MetaStore, "commit_add", crash)
        else:
            real, calls = ArrayStore.write, []

            def flaky(self: ArrayStore, name: str, start: int, rows: np.ndarray) -> None:
                calls.append(name)
                if len(calls) == 2:
                    raise Crash("simulated crash")
                real(self, name, start, rows)

            mp.setattr(ArrayStore, "write", flaky)
        with pytest.raises(Crash):
            add(s, 5, 4)
    assert_same(snapshot(s), before)
    s.close()  # "process restart"
    with Space.open(space_path, FP) as s:
        assert_same(snapshot(s), before)
        new_ids, new_data = add(s, 9, 3)
        kept = [ids[0], *ids[2:], *new_ids]
        want = [data[0], *data[2:], *new_data]
        for a in SPECS:
            got = s.read(a.name, s.get_many(kept))
            for g, w in zip(got, want, strict=True):
                np.testing.assert_array_equal(g, w[a.name])


def test_crash_during_wipe_is_redone_on_open(space_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    s = Space.create(space_path, FP, SPECS, durable=False)
    ids, _ = add(s, 0, 4)
    victim = s.get(ids[2])
    assert victim is not None
    with monkeypatch.context() as mp:
        mp.setattr(ArrayStore, "zero", crash)
        with pytest.raises(Crash):
            s.delete([ids[2]])
    assert s.get(ids[2]) is None  # the SQL delete committed
    s.close()
    with Space.open(space_path) as s:
        for a in SPECS:
            start, stop = victim.rows(a.unit)
            assert not s._store.read(a.name, start, stop).any()
        assert s._meta.pending_wipes() == []


def test_crash_during_compact(space_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Space.create(space_path, FP, SPECS, durable=False)
    ids, data = add(s, 0, 6)
    s.delete(ids[:2])
    before = snapshot(s)
    with monkeypatch.context() as mp:
        mp.setattr(MetaStore, "relocate", crash)
        with pytest.raises(Crash):
            s.compact()
    s.close()
    with Space.open(space_path) as s:
        assert_same(snapshot(s), before)
        assert [p.name for p in space_path.glob("arrays*.zarr")] == ["arrays.zarr"]


def test_fingerprint_mismatch_names_key(space_path: Path) -> None:
    Space.create(space_path, FP, SPECS).close()
    with pytest.raises(FingerprintMismatchError) as e:
        Space.open(space_path, {**FP, "pool": 32})
    assert "pool" in str(e.value) and e.value.differing_keys == ["pool"]
    with pytest.raises(FingerprintMismatchError) as e:
        Space.open(space_path, {"model": "tiny", "layers": [1, 2], "extra": 1})
    assert e.value.differing_keys == ["extra", "pool"]
    with Space.open(space_path, dict(FP)) as s:  # equal fingerprint opens fine
        assert s.fingerprint == FP


def _expect_corrupted(path: Path) -> None:
    for _ in range(2):  # a failed open must not leave the lock held
        with pytest.raises(StoreCorruptedError):
            Space.open(path)


def test_garbage_sqlite(space_path: Path) -> None:
    with Space.create(space_path, FP, SPECS) as s:
        add(s, 0, 2)
    (space_path / "meta.sqlite").write_bytes(b"this is not a database" * 100)
    _expect_corrupted(space_path)


def test_newer_schema_version(space_path: Path) -> None:
    Space.create(space_path, FP, SPECS).close()
    with sqlite3.connect(space_path / "meta.sqlite") as con:
        con.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreCorruptedError, match="newer"):
        Space.open(space_path)


@pytest.mark.parametrize("victim", ["arrays.zarr/zarr.json", "arrays.zarr/route_k/zarr.json"])
def test_missing_zarr_metadata(space_path: Path, victim: str) -> None:
    with Space.create(space_path, FP, SPECS) as s:
        add(s, 0, 2)
    (space_path / victim).unlink()
    _expect_corrupted(space_path)


def test_garbage_zarr_chunk_read(space_path: Path) -> None:
    with Space.create(space_path, FP, SPECS) as s:
        ids, _ = add(s, 0, 2)
    (space_path / "arrays.zarr/route_k/c/0/0/0/0").write_bytes(b"garbage")
    with Space.open(space_path) as s, pytest.raises(StoreCorruptedError):
        s.read("route_k", s.get_many(ids))
