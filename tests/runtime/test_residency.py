"""Host tier of memory K/V: whatever is cached, evicted or restarted, fetch equals the store."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from msa_agent.runtime.residency import HostKVCache

SHAPE = (2, 1, 4)  # [L, Hkv, D] per row; 16 bytes per row per array in float16


@dataclass(frozen=True)
class Mem:
    id: str
    n: int


class FakeSpace:
    """Rows of each memory, deterministic from its id; counts store reads."""

    def __init__(self) -> None:
        self.reads = 0

    def read(self, name: str, memories: list[Mem]) -> list[np.ndarray]:
        self.reads += 1
        return [self.rows(name, m) for m in memories]

    @staticmethod
    def rows(name: str, m: Mem) -> np.ndarray:
        seed = int(m.id) * 2 + (name.endswith("_v"))
        return np.random.default_rng(seed).standard_normal((m.n, *SHAPE)).astype(np.float16)


MEMS = [Mem(str(i), n) for i, n in enumerate([1, 3, 7, 2, 5, 9, 4])]


def expect(m: Mem) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.from_numpy(FakeSpace.rows(n, m)).float() for n in ("pooled_k", "pooled_v"))


@settings(max_examples=40, deadline=None)
@given(budget_rows=st.integers(0, 40),
       ops=st.lists(st.tuples(st.booleans(), st.lists(st.sampled_from(MEMS), min_size=1,
                                                      max_size=4)), min_size=1, max_size=8))
def test_fetch_always_equals_the_store(budget_rows: int, ops: list) -> None:  # noqa: ANN001
    space, row_bytes = FakeSpace(), 2 * int(np.prod(SHAPE)) * 2
    cache = HostKVCache(("pooled_k", "pooled_v"), budget_rows * row_bytes, pin=False)
    for evict, mems in ops:
        if evict:
            cache.evict([m.id for m in mems])
            continue
        got = cache.fetch(space, mems, torch.device("cpu"))  # type: ignore[arg-type]
        assert len(got) == len(mems)
        for (k, v), m in zip(got, mems):
            want_k, want_v = expect(m)
            torch.testing.assert_close(k, want_k)
            torch.testing.assert_close(v, want_v)
        assert cache.nbytes <= budget_rows * row_bytes  # the budget holds


def test_cached_memories_are_not_read_again() -> None:
    space = FakeSpace()
    cache = HostKVCache(("pooled_k", "pooled_v"), 1 << 20, pin=False)
    cache.fetch(space, MEMS[:3], torch.device("cpu"))  # type: ignore[arg-type]
    reads = space.reads
    cache.fetch(space, MEMS[1:3], torch.device("cpu"))  # type: ignore[arg-type]
    assert space.reads == reads  # served from the host tier
    cache.evict([MEMS[1].id])
    cache.fetch(space, MEMS[1:3], torch.device("cpu"))  # type: ignore[arg-type]
    assert space.reads == reads + 2  # K and V of the evicted one only
