"""Property test: random add/delete/overwrite/reopen/compact sequences match a pure-Python model."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    rule,
)
from store_helpers import FP, SPECS

from msa_agent.store import NewMemory, Space

NAMESPACES = ("a", "b")
RAM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None  # many tiny files: keep off disk
memory_st = st.tuples(st.integers(0, 5), st.integers(0, 9), st.sampled_from(NAMESPACES))


class SpaceModel(RuleBasedStateMachine):
    """The model: id -> (namespace, {array: rows}), plus insertion order."""

    ids = Bundle("ids")

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(dir=RAM_DIR))
        self.space = Space.create(self.dir / "s", FP, SPECS, durable=False)
        self.model: dict[str, tuple[str, dict[str, np.ndarray]]] = {}
        self.order: list[str] = []
        self.seed = 0

    def _rows(self, n_chunks: int, n_tokens: int) -> dict[str, np.ndarray]:
        self.seed += 1
        rng = np.random.default_rng(self.seed)
        return {s.name: (rng.standard_normal(
            (n_chunks if s.unit == "chunk" else n_tokens, *s.row_shape)) + 1).astype(s.dtype)
            for s in SPECS}

    @rule(target=ids, batch=st.lists(memory_st, min_size=1, max_size=4))
    def add(self, batch: list[tuple[int, int, str]]) -> object:
        mems = [NewMemory(text=f"t{c}{t}", namespace=ns, n_chunks=c, n_tokens=t)
                for c, t, ns in batch]
        data = [self._rows(m.n_chunks, m.n_tokens) for m in mems]
        new = self.space.add(mems, data)
        for i, m, d in zip(new, mems, data, strict=True):
            self.model[i] = (m.namespace, d)
        self.order += new
        return multiple(*new)

    @rule(victim=consumes(ids))
    def delete(self, victim: str) -> None:
        assert self.space.delete([victim]) == int(victim in self.model)
        if victim in self.model:  # may already be gone through delete_namespace
            del self.model[victim]
            self.order.remove(victim)

    @rule(ns=st.sampled_from(NAMESPACES))
    def delete_namespace(self, ns: str) -> None:
        gone = [i for i in self.order if self.model[i][0] == ns]
        assert self.space.delete_where(ns, {}) == len(gone)
        for i in gone:
            del self.model[i]
            self.order.remove(i)

    @rule(target_id=ids)
    def overwrite(self, target_id: str) -> None:
        if target_id not in self.model:
            return
        m = self.space.get(target_id)
        assert m is not None
        rows = np.full_like(self.model[target_id][1]["route_k"], 5)
        self.space.overwrite("route_k", m, rows)
        self.model[target_id][1]["route_k"] = rows

    @rule()
    def reopen(self) -> None:
        self.space.close()
        self.space = Space.open(self.dir / "s", FP, durable=False)

    @rule()
    def compact(self) -> None:
        self.space.compact()

    @invariant()
    def reads_match(self) -> None:
        stored = self.space.get_many(self.order)
        assert [m.id for m in stored] == self.order
        for s in SPECS:
            for m, got in zip(stored, self.space.read(s.name, stored), strict=True):
                np.testing.assert_array_equal(got, self.model[m.id][1][s.name])

    @invariant()
    def read_all_matches(self) -> None:
        rows, owners = self.space.read_all("route_k")
        live = self.space.live_chunks()
        assert {m.id for m in live} == set(self.order)
        with_rows = [m.id for m in live if m.n_chunks]  # empty memories' ties are by id
        assert with_rows == [i for i in self.order if len(self.model[i][1]["route_k"])]
        want = [self.model[i][1]["route_k"] for i in with_rows]
        if want:
            np.testing.assert_array_equal(rows, np.concatenate(want))
        assert len(owners) == len(rows)

    @invariant()
    def counts_match(self) -> None:
        for ns in NAMESPACES:
            assert self.space.count(ns) == sum(1 for v in self.model.values() if v[0] == ns)

    def teardown(self) -> None:
        self.space.close()
        shutil.rmtree(self.dir, ignore_errors=True)


SpaceModel.TestCase.settings = settings(
    max_examples=20, stateful_step_count=10, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestSpaceModel = SpaceModel.TestCase
