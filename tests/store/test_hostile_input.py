"""Hostile-but-realistic input to the store (issue 16): each case is refused with a
``StoreInputError`` before anything is written, or (large IN lists) simply works."""

from __future__ import annotations

import numpy as np
import pytest
from store_helpers import SPECS, make_data, mem

from msa_agent.errors import InvalidInputError
from msa_agent.store import NewMemory, Space, StoreCorruptedError, StoreInputError


def _add(space: Space, m: NewMemory) -> list[str]:
    return space.add([m], [make_data(m, 0)])


def _deep(depth: int) -> dict:
    d: dict = {}
    for _ in range(depth):
        d = {"x": d}
    return d


@pytest.mark.parametrize("metadata", [
    {"k": "bad \ud800 surrogate"},  # lone surrogate: stored, then breaks every export/ls
    {"bad \udfff key": 1},
    {"k": "x" * (65 * 1024)},  # over the 64 KB cap
    _deep(990),  # RecursionError before the fix
    {"k": 10**30},  # OverflowError before the fix
    {"k": [1, {"n": -(2**63) - 1}]},
    {"k": float("nan")},
])
def test_bad_metadata_refused(space: Space, metadata: dict) -> None:
    with pytest.raises(StoreInputError) as e:
        _add(space, mem(1, metadata=metadata))
    assert isinstance(e.value, InvalidInputError)
    assert space.count() == 0


def test_metadata_limits_allow_the_edges(space: Space) -> None:
    ok = {"deep": _deep(31), "big": 2**63 - 1, "small": -(2**63), "s": "é" * 1000}
    [i] = _add(space, mem(1, metadata=ok))
    assert space.get(i).metadata == ok  # type: ignore[union-attr]


@pytest.mark.parametrize("field", ["text", "namespace", "kind", "session_id"])
def test_surrogate_in_text_fields_refused(space: Space, field: str) -> None:
    with pytest.raises(StoreInputError, match="not valid Unicode"):
        m = mem(1)
        _add(space, NewMemory(**{**vars(m), field: "a\udc80b"}))
    assert space.count() == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_rows_refused(space: Space, bad: float) -> None:
    m = mem(1)
    data = make_data(m, 0)
    data["route_k"][0, 1, 2, 3] = bad
    with pytest.raises(StoreInputError, match="NaN or infinite"):
        space.add([m], [data])
    assert space.count() == 0


def test_nonfinite_rows_on_disk_are_not_handed_out(space: Space) -> None:
    """Rows damaged on disk (or written before the check) make ``read_all`` refuse, naming
    the memory; deleting it makes the space usable again."""
    ids = space.add([mem(i) for i in range(3)], [make_data(mem(i), i) for i in range(3)])
    bad = space.get(ids[1])
    assert bad is not None
    space._store.write("route_k", bad.chunk_start,  # damage on disk, behind the store's back
                       np.full((1, *SPECS[0].row_shape), np.nan, "float16"))
    with pytest.raises(StoreCorruptedError, match=ids[1]):
        space.read_all("route_k")
    space.delete([ids[1]])
    rows, _ = space.read_all("route_k")
    assert np.isfinite(rows).all()


@pytest.mark.parametrize("where", [
    {"a\x00b": 1}, {"metadata.x\x00": "y"}, {"k\ud800": 1}, {"k": 10**30}, {"k": [1, 10**20]},
    {"k": "v\udc00"}, {"k": float("inf")},
])
def test_bad_where_is_invalid_input(space: Space, where: dict) -> None:
    _add(space, mem(1))
    with pytest.raises(StoreInputError):
        space.find(None, where)
    with pytest.raises(StoreInputError):
        Space.check_where(where)


@pytest.mark.parametrize("key", ["kind", "n", "metadata.s"])
def test_in_filter_of_5000_values(space: Space, key: str) -> None:
    """An OR of ~1000 ``=`` overflowed SQLite's expression depth (StoreCorruptedError)."""
    mems = [mem(i, kind=f"k{i}", metadata={"n": i, "s": f"s{i}"}) for i in range(20)]
    space.add(mems, [make_data(m, i) for i, m in enumerate(mems)])
    values: list = {"kind": [f"k{i}" for i in range(5000)], "n": list(range(5000)),
                    "metadata.s": [f"s{i}" for i in range(5000)]}[key]
    values = values[3:] + [None, True]  # types mixed in; memories 0..2 left out
    assert space.count(None, {key: values}) == 17
    assert len(space.find(None, {key: values})) == 17
    assert space.delete_where(None, {key: values}) == 17
    assert space.count() == 3


def test_in_filter_keeps_strict_types(space: Space) -> None:
    mems = [mem(i, metadata={"v": v}) for i, v in enumerate([1, "1", True, 1.0, None])]
    space.add(mems, [make_data(m, i) for i, m in enumerate(mems)])
    texts = {m.text for m in space.find(None, {"v": [1, "x"] * 600})}
    assert texts == {"memory 0", "memory 3"}
    texts = {m.text for m in space.find(None, {"v": ["1", True] * 600})}
    assert texts == {"memory 1", "memory 2"}

