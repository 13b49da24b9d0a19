"""Property test: ``find``/``count`` with random ``where`` filters match a Python filter."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from msa_agent.store import ArraySpec, NewMemory, Space

SPEC = [ArraySpec("k", "chunk", (2,), rows_per_chunk=8)]
scalar = st.one_of(st.none(), st.booleans(), st.integers(0, 2), st.sampled_from([1.0, 0.5]),
                   st.sampled_from(["x", "1", "true"]))
meta_st = st.dictionaries(st.sampled_from(["a", "b"]), scalar, max_size=2)
mem_st = st.tuples(st.sampled_from(["s1", "s2", None]), st.sampled_from(["n1", "n2"]), meta_st)
where_st = st.dictionaries(st.sampled_from(["a", "b", "session_id"]),
                           st.one_of(scalar, st.lists(scalar, max_size=3)), max_size=2)


def _same(stored: Any, want: Any) -> bool:
    """Strict JSON equality: bools are not numbers, "1" is not 1, None matches missing."""
    if want is None or stored is None:
        return want is None and stored is None
    if isinstance(want, bool) or isinstance(stored, bool):
        return isinstance(want, bool) and isinstance(stored, bool) and stored == want
    if isinstance(want, str) or isinstance(stored, str):
        return isinstance(want, str) and isinstance(stored, str) and stored == want
    return stored == want  # numbers: 1 == 1.0


def _matches(row: tuple[str | None, str, dict], ns: str | None, where: dict) -> bool:
    session, namespace, meta = row
    if ns is not None and namespace != ns:
        return False
    for key, want in where.items():
        have = session if key == "session_id" else meta.get(key)
        wants = want if isinstance(want, list) else [want]
        if not any(_same(have, w) for w in wants):
            return False
    return True


def check_where(space: Space, rows: list, ns: str | None, where: dict) -> set[str]:
    """Add ``rows`` to ``space``; ``find`` and ``count`` under ``(ns, where)`` must equal the
    Python filter :func:`_matches`. Returns the matching ids."""
    mems = [NewMemory(text=str(i), session_id=s, namespace=n, metadata=m)
            for i, (s, n, m) in enumerate(rows)]
    ids = space.add(mems, [{"k": np.zeros((0, 2), "float16")} for _ in mems])
    want = {ids[i] for i, r in enumerate(rows) if _matches(r, ns, where)}
    assert {m.id for m in space.find(ns, where)} == want
    assert space.count(ns, where) == len(want)
    return want


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(mem_st, min_size=1, max_size=8), ns=st.sampled_from([None, "n1"]),
       where=where_st)
def test_where_matches_python(rows: list, ns: str | None, where: dict) -> None:
    with tempfile.TemporaryDirectory() as d, \
            Space.create(Path(d) / "s", {}, SPEC, durable=False) as space:
        check_where(space, rows, ns, where)
