"""Prefetch of the next candidates' K/V (``MemoryConfig.prefetch``): loaded in the background
after a read, hits on the next read, never a change in what is read, never a forgotten
memory's K/V brought back, joined on close."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from msa_agent import Memory
from msa_agent.errors import InvalidInputError
from msa_agent.model.msa_checkpoint import MsaSettings
from msa_agent.runtime.answer import Reader
from msa_agent.runtime.residency import HostKVCache
from msa_agent.runtime.stream import after_first
from msa_testing import reader_logits

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")

FACTS = ["Alice works for Acme in Lisbon.", "Acme sells green kettles.",
         "Bob likes green tea in the morning.", "The kettle is in the shed by the river.",
         "Lisbon is the capital of Portugal.", "Carol repairs old bicycles on Sundays.",
         "The shed key hangs by the back door.", "Dave bakes rye bread for the market."]
QUESTION = "Where is the green kettle?"


def open_mem(path: Path, pair, **kw) -> Memory:  # noqa: ANN001
    settings = {"chunk_size": 8, "keep_full_kv": True, "kv_frame": "bare",
                "compact_dead_fraction": None, **kw}
    return Memory.open(path, model=pair, **settings)


def tiers(mem: Memory, kind: str = "full") -> list[HostKVCache]:
    out, tier = [], mem._engine.kv_cache[kind]
    while tier is not None:
        out.append(tier)
        tier = tier.below
    return out


def settle(mem: Memory) -> None:
    prefetcher = mem._engine.prefetcher
    assert prefetcher.wait(60)
    assert prefetcher.failed == 0, prefetcher.last_error


def budget(mem: Memory, ids: list[str], kind: str = "full") -> int:
    """The bytes of ``kind`` rows (K and V) of these memories."""
    space = mem._engine._space
    memories = space.get_many(ids)
    k = space.read(f"{kind}_k", memories)
    return sum(2 * a.nbytes for a in k)


def test_prefetched_memories_are_hits_on_the_next_read(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair, kv_frame="chat", prefetch=2) as mem:
        mem.remember_many(FACTS)
        mem.answer(QUESTION, k=1, read="full", max_new_tokens=1)
        settle(mem)
        pool = [h.id for h in mem.recall(QUESTION, k=3)]  # the answer's routing, 3 deep
        (tier,) = tiers(mem)
        assert tier.prefetched == set(pool[1:]) and set(pool) <= set(tier.rows)
        before = mem.stats().host_cache["full"]
        assert before["prefetch_issued"] == 2 and before["hits"] == 0
        mem.answer(QUESTION, k=3, read="full", max_new_tokens=1)  # round 2 reads all three
        after = mem.stats().host_cache["full"]
    assert after["hits"] == 3 and after["misses"] == before["misses"] == 1
    assert after["prefetch_used"] == 2 and after["prefetch_wasted"] == 0


def test_the_prefetch_starts_after_the_first_token_not_during_the_prefill(
        tmp_path: Path, tiny_pair) -> None:
    """The read is done when ``answer(stream=True)`` returns, but its prefetch waits for the
    first token: its ranking would compete with the prefill (the time to first token)."""
    with open_mem(tmp_path / "m", tiny_pair, kv_frame="chat", prefetch=2) as mem:
        mem.remember_many(FACTS)
        stream = mem.answer(QUESTION, k=1, read="full", max_new_tokens=3, stream=True)
        assert not mem._engine.prefetcher.alive  # read, nothing submitted yet
        list(stream)
        settle(mem)
        assert mem.stats().host_cache["full"]["prefetch_issued"] == 2


@pytest.mark.parametrize("n", [0, 1, 3])
def test_after_first_calls_once_after_the_first_token_or_at_the_end(n: int) -> None:
    calls: list[int] = []
    seen: list[int] = []
    for token in after_first(iter(range(n)), lambda: calls.append(len(seen))):
        seen.append(token)
        assert len(calls) == (0 if len(seen) == 1 else 1)
    assert calls == [1 if n else 0]
    dropped = after_first(iter(range(5)), lambda: calls.append(-1))
    next(dropped)
    dropped.close()  # a consumer that stops after one token still starts it, once
    assert calls[-1] == -1 and calls.count(-1) == 1


@pytest.mark.parametrize("setting", [{"prefetch": 0}, {}])
def test_prefetch_off_issues_nothing(tmp_path: Path, tiny_pair, setting: dict) -> None:
    """prefetch=0, or the default on a CPU model (measured: a loss there, config.py)."""
    with open_mem(tmp_path / "m", tiny_pair, **setting) as mem:
        mem.remember_many(FACTS)
        if mem._engine.lm.device.type == "cpu":
            assert mem._engine.prefetch_depth == 0
        mem.answer(QUESTION, k=1, read="full", max_new_tokens=1)
        if not mem._engine.prefetch_depth:
            assert not mem._engine.prefetcher.alive  # no worker was started
            assert mem.stats().host_cache["full"]["prefetch_issued"] == 0


SCRIPT = [(QUESTION, 1, "full"), ("Who likes tea?", 2, "full"), (QUESTION, 3, "full"),
          ("bread and bicycles", 2, "pooled"), ("Lisbon capital", 1, "full"),
          ("Who likes tea?", 3, "pooled"), (QUESTION, 4, "full")]


@pytest.mark.parametrize("kv_frame", ["bare", "chat"])
def test_answers_and_logits_are_identical_with_prefetch_on_and_off(
        tmp_path: Path, tiny_pair, kv_frame: str) -> None:
    """The same answers on one space, prefetch off then on, with tiers holding 3 memories
    (evictions: prefetched rows go and come back): same texts, same memories read, and the
    same logits from a read of each round's memories after the prefetch settled."""
    model, _ = tiny_pair
    with open_mem(tmp_path / "m", tiny_pair, kv_frame=kv_frame) as mem:
        mem.remember_many(FACTS)
    runs = []
    for n in (0, 2):
        with open_mem(tmp_path / "m", tiny_pair, kv_frame=kv_frame, prefetch=n) as mem:
            engine, out = mem._engine, []
            biggest = sorted(engine._space.find(None), key=lambda m: -m.n_tokens)[:3]
            for kind in ("full", "pooled"):  # room for three memories
                tiers(mem, kind)[0].budget = budget(mem, [m.id for m in biggest], kind)
            for question, k, read in SCRIPT:
                ans = mem.answer(question, k=k, read=read, max_new_tokens=4)
                settle(mem)
                ids = [h.id for r in ans.rounds for h in r.memories]
                with engine.lock:
                    reader = Reader(engine, question, engine._space.get_many(ids), "full")
                out.append((ans.text, ans.generated_tokens, ans.memory_tokens, ids,
                            reader_logits(model, reader)))
            runs.append((out, mem.stats().host_cache))
    (off, off_stats), (on, on_stats) = runs
    for a, b in zip(off, on):
        assert a[:4] == b[:4]
        assert torch.equal(a[4], b[4])
    assert off_stats["full"]["prefetch_issued"] == 0
    assert on_stats["full"]["prefetch_used"] > 0 and on_stats["pooled"]["prefetch_issued"] > 0
    assert on_stats["full"]["evictions"] > 0  # the tiers were small: prefetch had to evict


def test_a_prefetch_never_evicts_what_the_request_read(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair, prefetch=2) as mem:
        mem.remember_many(FACTS)
        (tier,) = tiers(mem)
        tier.budget = budget(mem, [h.id for h in mem.recall(QUESTION, k=2)])  # just k=2's
        ans = mem.answer(QUESTION, k=2, read="full", max_new_tokens=1)
        settle(mem)
        read = {h.id for h in ans.rounds[0].memories}
        assert set(tier.rows) == read and tier.counters["prefetch_issued"] == 0


def held_anywhere(mem: Memory, mid: str, full_k: np.ndarray) -> bool:
    for tier in tiers(mem):
        if mid in tier.rows:
            return True
        if tier.k is not None:
            held = tier.k[: tier.used].cpu().numpy()
            if any(np.array_equal(row, full_k[0]) for row in held):
                return True
    return False


def test_forget_after_a_prefetch_leaves_no_kv(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair, prefetch=2) as mem:
        mem.remember_many(FACTS)
        mem.answer(QUESTION, k=1, read="full", max_new_tokens=1)
        settle(mem)
        (tier,) = tiers(mem)
        victim = sorted(tier.prefetched)[0]
        space = mem._engine._space
        (full_k,) = space.read("full_k", [space.get(victim)])
        full_k = full_k.copy()
        mem.forget(victim)
        assert not held_anywhere(mem, victim, full_k)
        assert tier.counters["prefetch_wasted"] == 1  # forgotten unread


def test_forget_during_a_prefetch_leaves_no_kv(tmp_path: Path, tiny_pair,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker is stopped inside its store read (no lock held: the forget goes through),
    the memory it reads is forgotten, then the read returns its rows: they are dropped."""
    with open_mem(tmp_path / "m", tiny_pair, prefetch=2) as mem:
        mem.remember_many(FACTS)
        engine = mem._engine
        space, real_read = engine._space, engine._space.read
        reading: list[str] = []
        started, release = threading.Event(), threading.Event()

        def read(name: str, memories):  # noqa: ANN001, ANN202
            if threading.current_thread().name == "msa-kv-prefetch" and not release.is_set():
                reading.append(memories[0].id)
                started.set()
                assert release.wait(60)
            return real_read(name, memories)

        monkeypatch.setattr(space, "read", read)
        mem.answer(QUESTION, k=1, read="full", max_new_tokens=1)
        assert started.wait(60)
        victim = reading[0]
        (full_k,) = real_read("full_k", [space.get(victim)])
        full_k = full_k.copy()
        assert mem.forget(victim) == 1  # not blocked by the prefetch in flight
        release.set()
        settle(mem)
        assert not held_anywhere(mem, victim, full_k)
        assert mem.stats().host_cache["full"]["prefetch_issued"] == 0  # the whole guess dropped


def test_prefetch_of_an_id_that_no_longer_exists_is_ignored(tmp_path: Path,
                                                            tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair, prefetch=2) as mem:
        ids = mem.remember_many(FACTS)
        engine = mem._engine
        gone = engine._space.get(ids[0])
        mem.forget(ids[0])
        engine.prefetch("full", lambda: [gone, replace(gone, id="f" * 32)], keep=())
        settle(mem)
        assert not engine.kv_cache["full"].rows
        with pytest.raises(InvalidInputError):
            engine.prefetch("routing", lambda: [], keep=())


def test_close_joins_the_worker(tmp_path: Path, tiny_pair) -> None:
    mem = open_mem(tmp_path / "m", tiny_pair, prefetch=2)
    mem.remember_many(FACTS)
    mem.answer(QUESTION, k=1, read="full", max_new_tokens=1)
    prefetcher = mem._engine.prefetcher
    assert prefetcher.alive
    mem.close()
    assert not prefetcher.alive
    prefetcher.submit("full", lambda: [], keep=())  # after close: nothing starts
    assert not prefetcher.alive
    mem.close()  # still safe twice


def test_generative_interleave_prefetches_the_next_round_pool(tmp_path: Path,
                                                              tiny_pair) -> None:
    """An MSA checkpoint's pooled answer with hops: after round 1's read, each layer's
    candidates after its own top k, rank by rank across layers, load into the pooled tier."""
    with open_mem(tmp_path / "m", tiny_pair, prefetch=2) as mem:
        mem.remember_many(FACTS)
        engine = mem._engine
        engine.lm.msa = MsaSettings(8, 1, engine.layers, {})  # as an MSA checkpoint's
        ans = mem.answer(QUESTION, k=1, read="pooled", hops=2, max_new_tokens=2)
        settle(mem)
        assert len(ans.rounds) == 1  # two tokens cannot ask for a document
        wide = list(engine.route_per_layer(QUESTION, 3, mem._scope(None, None, alive=True))
                    .values())
        read = {sel[0].id for sel in wide}
        want: list[str] = []
        for rank in range(3):
            for sel in wide:
                if sel[rank].id not in read and sel[rank].id not in want and len(want) < 2:
                    want.append(sel[rank].id)
        (tier,) = tiers(mem, "pooled")
        assert tier.prefetched == set(want)
        assert {i for r in ans.rounds for sel in r.per_layer.values() for i in sel} == read
