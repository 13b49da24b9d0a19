"""Host tier of memory K/V: whatever is cached, evicted or restarted, fetch equals the store."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from msa_agent.runtime.residency import HostKVCache, Prefetcher
from msa_agent.store import ArraySpec

SHAPE = (2, 1, 4)  # [L, Hkv, D] per row; 16 bytes per row per array in float16


@dataclass(frozen=True)
class Mem:
    id: str
    n: int

    def rows(self, unit: str) -> tuple[int, int]:  # as StoredMemory: its rows' range
        return 0, self.n


class FakeSpace:
    """Rows of each memory, deterministic from its id; counts store reads. ``gone``: ids
    forgotten (``get_many`` leaves them out; ``read`` still returns their rows, as a read
    that began before the forget would)."""

    arrays = {name: ArraySpec(name, "chunk", SHAPE) for name in
              ("pooled_k", "pooled_v", "full_k", "full_v")}  # float16 rows, as read() gives

    def __init__(self) -> None:
        self.reads = self.rows_read = 0
        self.delay = 0.0  # seconds a read off the main thread (a prefetch's) takes
        self.gone: set[str] = set()

    def read(self, name: str, memories: list[Mem],
             spans: list[tuple[int, int]] | None = None) -> list[np.ndarray]:
        self.reads += 1
        if threading.current_thread() is not threading.main_thread():
            time.sleep(self.delay)
        out = [self.rows(name, m) for m in memories]
        if spans is not None:  # as Space.read: only the rows [a, b) of each memory
            out = [r[a:b] for r, (a, b) in zip(out, spans, strict=True)]
        self.rows_read += sum(len(r) for r in out)
        return out

    def get_many(self, ids: list[str]) -> list[Mem]:
        by_id = {m.id: m for m in MEMS if m.id not in self.gone}
        return [by_id[i] for i in ids if i in by_id]

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


@settings(max_examples=40, deadline=None)
@given(budget_rows=st.integers(0, 40), data=st.data())
def test_fetch_of_rows_equals_those_rows_of_the_store(budget_rows: int,  # noqa: ANN001
                                                      data) -> None:
    """``rows`` (a ``kv_chunks`` read): each memory's rows ``[a, b)`` only, cached or not
    (a budget of 0 reads straight from the store)."""
    space, row_bytes = FakeSpace(), 2 * int(np.prod(SHAPE)) * 2
    cache = HostKVCache(("pooled_k", "pooled_v"), budget_rows * row_bytes, pin=False)
    for _ in range(3):
        mems = data.draw(st.lists(st.sampled_from(MEMS), min_size=1, max_size=4))
        rows = [data.draw(st.tuples(st.integers(0, m.n - 1), st.integers(1, m.n))
                          .map(sorted).filter(lambda r: r[0] < r[1]).map(tuple))
                for m in mems]
        before = space.rows_read
        got = cache.fetch(space, mems, torch.device("cpu"), rows=rows)  # type: ignore[arg-type]
        for (k, v), m, (a, b) in zip(got, mems, rows, strict=True):
            want_k, want_v = expect(m)
            torch.testing.assert_close(k, want_k[a:b])
            torch.testing.assert_close(v, want_v[a:b])
        if budget_rows == 0:  # straight from the store: only the windows leave it
            assert space.rows_read - before == 2 * sum(b - a for a, b in rows)


def test_a_request_too_big_for_the_tier_is_read_from_the_store_once() -> None:
    """Judged from the records, not by reading the memories whole first: each row leaves
    the store once (K and V), and a window read only its window."""
    space, row_bytes = FakeSpace(), 2 * int(np.prod(SHAPE)) * 2
    cache = HostKVCache(("pooled_k", "pooled_v"), 5 * row_bytes, pin=False)
    big = MEMS[5]  # 9 rows
    cache.fetch(space, [big], torch.device("cpu"))  # type: ignore[list-item]
    assert space.rows_read == 2 * big.n and cache.nbytes == 0
    cache.fetch(space, [big], torch.device("cpu"), rows=[(2, 5)])  # type: ignore[list-item]
    assert space.rows_read == 2 * big.n + 2 * 3


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


def _cache(rows: int) -> tuple[FakeSpace, HostKVCache]:
    row_bytes = 2 * int(np.prod(SHAPE)) * 2
    return FakeSpace(), HostKVCache(("pooled_k", "pooled_v"), rows * row_bytes, pin=False)


def test_least_recently_used_is_evicted_not_everything() -> None:
    """Past the budget only the least recently used memories go; the rest stay cached."""
    space, cache = _cache(12)
    cpu = torch.device("cpu")
    a, b, c, d = MEMS[0], MEMS[1], MEMS[3], MEMS[4]  # 1, 3, 2 and 5 rows
    cache.fetch(space, [a, b, c], cpu)  # type: ignore[arg-type]
    cache.fetch(space, [a], cpu)  # type: ignore[arg-type]  # a is now the most recent
    cache.fetch(space, [d], cpu)  # type: ignore[arg-type]  # 6 + 5 rows fit in 12
    cache.fetch(space, [MEMS[6]], cpu)  # type: ignore[arg-type]  # 4 more: evict b (LRU)
    assert list(cache.rows) == [c.id, a.id, d.id, MEMS[6].id]  # LRU order, b gone
    counters = cache.counters
    assert counters["evictions"] == 1 and counters["hits"] == 1 and counters["misses"] == 5
    assert cache.used == sum(n for _, n in cache.rows.values())  # compacted: no holes
    reads = space.reads
    for m in (a, c, d, MEMS[6]):  # every kept memory is still right, from the cache
        (k, v), = cache.fetch(space, [m], cpu)  # type: ignore[arg-type]
        want_k, want_v = expect(m)
        torch.testing.assert_close(k, want_k)
        torch.testing.assert_close(v, want_v)
    assert space.reads == reads


def test_compaction_leaves_no_copy_of_a_forgotten_memory() -> None:
    """Rows moved by compaction are zeroed where they were: forgetting a memory afterwards
    leaves none of its K/V anywhere in the buffers."""
    space, cache = _cache(12)
    cpu = torch.device("cpu")
    cache.fetch(space, [MEMS[1], MEMS[4]], cpu)  # type: ignore[arg-type]  # 3 + 5 rows
    cache.fetch(space, [MEMS[4]], cpu)  # type: ignore[arg-type]
    cache.fetch(space, [MEMS[6]], cpu)  # type: ignore[arg-type]  # evicts MEMS[1], moves 4
    cache.evict([MEMS[4].id])
    want_k, _ = expect(MEMS[4])
    assert cache.k is not None
    for row in want_k:
        assert not any(torch.equal(row.half(), r) for r in cache.k)


def test_memory_stats_report_the_host_tier(tmp_path, tiny_pair) -> None:  # noqa: ANN001
    from msa_agent import Memory

    with Memory.open(tmp_path / "m", tiny_pair, routing="own_qk", keep_full_kv=True,
                     kv_frame="bare") as mem:
        mem.remember_many(["the kettle is in the shed", "the ledger is on the desk"])
        before = mem.stats().host_cache
        assert before["full"]["hits"] == 0 and before["full"]["hit_rate"] == 0.0
        for _ in range(2):
            mem.answer("where is the kettle?", k=2, read="full", max_new_tokens=1)
        tier = mem.stats().host_cache["full"]
        assert tier["misses"] == 2 and tier["hits"] == 2 and tier["hit_rate"] == 0.5
        assert tier["memories"] == 2 and tier["bytes"] > 0


def _stack(top_rows: int, host_rows: int) -> tuple[FakeSpace, HostKVCache, HostKVCache]:
    """A device tier (here on the CPU too: the same code, its home a device) over a host
    tier, as the engine stacks them on CUDA."""
    row_bytes = 2 * int(np.prod(SHAPE)) * 2
    host = HostKVCache(("pooled_k", "pooled_v"), host_rows * row_bytes, pin=False)
    top = HostKVCache(host.names, top_rows * row_bytes, pin=False,
                      home=torch.device("cpu"), below=host)
    return FakeSpace(), top, host


OPS = st.sampled_from(["fetch", "evict", "forget", "prefetch", "settle"])


@settings(max_examples=40, deadline=None)
@given(top_rows=st.integers(0, 20), host_rows=st.integers(0, 40),
       ops=st.lists(st.tuples(OPS, st.lists(st.sampled_from(MEMS), min_size=1, max_size=4)),
                    min_size=1, max_size=10))
def test_two_tiers_fetch_equals_the_store_and_forget_reaches_both(
        top_rows: int, host_rows: int, ops: list) -> None:  # noqa: ANN001
    """Fetches, evictions, forgets and prefetches (on the worker thread, racing the rest, as
    the engine's lock lets them): every fetch equals the store, both budgets hold, and a
    forgotten memory is in neither tier, nor are its rows, even once every prefetch ran."""
    space, top, host = _stack(top_rows, host_rows)
    space.delay = 0.002  # so that forgets land while a prefetch reads
    row_bytes = 2 * int(np.prod(SHAPE)) * 2
    lock = threading.RLock()  # the engine's
    prefetcher = Prefetcher(lock, space, {"pooled": top})  # type: ignore[arg-type]
    try:
        for op, mems in ops:
            ids = {m.id for m in mems}
            if op == "prefetch":
                prefetcher.submit("pooled", lambda mems=mems: mems, keep=())
            elif op == "settle":
                assert prefetcher.wait(10)
            elif op in ("evict", "forget"):
                with lock:
                    if op == "forget":
                        space.gone |= ids
                    top.evict(ids)
                    assert not ids & (set(top.rows) | set(host.rows))
            else:
                live = [m for m in mems if m.id not in space.gone]
                with lock:
                    got = top.fetch(space, live, torch.device("cpu"))  # type: ignore[arg-type]
                for (k, v), m in zip(got, live):
                    want_k, want_v = expect(m)
                    torch.testing.assert_close(k, want_k)
                    torch.testing.assert_close(v, want_v)
            with lock:
                assert top.nbytes <= top_rows * row_bytes and host.nbytes <= host_rows * row_bytes
        assert prefetcher.wait(10)
    finally:
        prefetcher.close()
    assert prefetcher.failed == 0, prefetcher.last_error
    assert not space.gone & (set(top.rows) | set(host.rows))
    for m in MEMS:
        if m.id in space.gone:
            want_k, _ = expect(m)
            for tier in (top, host):
                held = [] if tier.k is None else list(tier.k[: tier.used])
                assert not any(torch.equal(row.half(), r) for row in want_k for r in held)
    for tier in (top, host):  # each counted prefetch is used, wasted or still held unread
        c = tier.counters
        assert c["prefetch_used"] + c["prefetch_wasted"] + len(tier.prefetched) \
            == c["prefetch_issued"]
        assert tier.prefetched <= set(tier.rows)


def test_top_tier_hits_skip_the_host_and_its_misses_skip_the_store() -> None:
    space, top, host = _stack(12, 40)
    cpu = torch.device("cpu")
    top.fetch(space, MEMS[:2], cpu)  # type: ignore[arg-type]  # both tiers miss: store
    reads, host_hits = space.reads, host.hits
    top.fetch(space, MEMS[:2], cpu)  # type: ignore[arg-type]
    assert top.hits == 2 and host.hits == host_hits and space.reads == reads
    top.fetch(space, [MEMS[5]], cpu)  # type: ignore[arg-type]  # 9 rows: evicts at the top
    assert top.evictions >= 1 and MEMS[0].id in host.rows  # the host tier still holds it
    reads = space.reads
    top.fetch(space, [MEMS[0]], cpu)  # type: ignore[arg-type]  # top miss, host hit
    assert space.reads == reads and host.hits == host_hits + 1
