"""The whole Memory path on CUDA (tiny model): remember, recall, answer with full K/V."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from msa_agent import Memory
from msa_testing import make_llama, make_tokenizer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning"),
]


def test_memory_on_cuda(tmp_path: Path) -> None:
    pair = (make_llama(), make_tokenizer())
    facts = ["Alice works for Acme.", "Acme is based in Lisbon.", "Bob likes green tea."]
    with Memory.open(tmp_path / "m", model=pair, device="cuda", chunk_size=8,
                     keep_full_kv=True) as mem:
        ids = mem.remember_many(facts)
        hits = mem.recall("Where does Alice work?", k=3, hops=2, explain=True)
        ans = mem.answer("Where does Alice work?", k=2, read="full", max_new_tokens=4)
        assert {h.id for h in hits} == set(ids)
        # the answer format stops at the end of a short answer: 1 to max_new_tokens tokens
        assert ans.read == "full" and 1 <= ans.generated_tokens <= 4 and ans.text
    with Memory.open(tmp_path / "m", model=pair, device="cuda") as mem:
        again = mem.recall("Where does Alice work?", k=3, hops=2)
    assert [h.id for h in again] == [h.id for h in hits]


@pytest.mark.parametrize("gpu_mb", [0, 64])
def test_host_tier_on_cuda_is_pinned_and_reads_what_the_store_holds(tmp_path: Path,
                                                                     gpu_mb: int) -> None:
    pair = (make_llama(), make_tokenizer())
    facts = ["Alice works for Acme.", "Acme is based in Lisbon.", "Bob likes green tea."]
    answers = []
    for mb in (0, 64):  # 0: straight from the store; 64: pinned host tier + gather kernel
        with Memory.open(tmp_path / f"m{mb}", model=pair, device="cuda", chunk_size=8,
                         keep_full_kv=True, host_cache_mb=mb, gpu_cache_mb=gpu_mb,
                         prefetch=0) as mem:  # the tiers alone (prefetch: the test below)
            mem.remember_many(facts)
            first = mem.answer("Where does Alice work?", k=2, read="full", max_new_tokens=4)
            again = mem.answer("Where does Alice work?", k=2, read="full", max_new_tokens=4)
            top = mem._engine.kv_cache["full"]
            host = top.below if gpu_mb else top
            assert first.text == again.text and host is not None
            if mb:
                assert host.k is not None and host.k.is_pinned() and len(host.rows) == 2
            if gpu_mb:  # the GPU tier above it holds the rows on the device, hit the 2nd time
                assert top.k is not None and top.k.is_cuda and len(top.rows) == 2
                assert mem.stats().host_cache["full_gpu"]["hits"] == 2
            answers.append(first.text)
    assert answers[0] == answers[1]


@pytest.mark.parametrize("host_mb", [0, 64])
def test_prefetch_makes_the_second_round_a_gpu_tier_hit(tmp_path: Path, host_mb: int) -> None:
    """Round 1 reads the best memory and prefetches the next two (store -> pinned host ->
    GPU on the side stream); round 2 reads all three: every one a GPU-tier hit, where
    without prefetch two are misses. The answers are the same either way."""
    pair = (make_llama(), make_tokenizer())
    facts = ["Alice works for Acme in Lisbon.", "Acme sells green kettles.",
             "Bob likes green tea in the morning.", "The kettle is in the shed by the river.",
             "Lisbon is the capital of Portugal.", "Carol repairs old bicycles on Sundays."]
    question, seen = "Where is the green kettle?", {}
    for n in (0, 2):
        with Memory.open(tmp_path / f"p{n}", model=pair, device="cuda", chunk_size=8,
                         keep_full_kv=True, host_cache_mb=host_mb, gpu_cache_mb=64,
                         prefetch=n) as mem:
            mem.remember_many(facts)
            first = mem.answer(question, k=1, read="full", max_new_tokens=4)
            prefetcher = mem._engine.prefetcher
            assert prefetcher.wait(60) and prefetcher.failed == 0, prefetcher.last_error
            before = mem.stats().host_cache["full_gpu"]
            second = mem.answer(question, k=3, read="full", max_new_tokens=4)
            gpu = mem.stats().host_cache["full_gpu"]
            assert gpu["hits"] - before["hits"] == (3 if n else 1)
            assert gpu["misses"] - before["misses"] == (0 if n else 2)
            assert gpu["prefetch_used"] == (2 if n else 0)
            assert mem.stats().host_cache["full"]["prefetch_issued"] == 0  # counted on top
            seen[n] = [(a.text, [h.text for r in a.rounds for h in r.memories])
                       for a in (first, second)]
            assert prefetcher.alive == bool(n)
        assert not prefetcher.alive  # close joined the worker
    assert seen[0] == seen[2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_summary_channel_reads_the_question_once_on_cuda(tmp_path: Path,
                                                         dtype: torch.dtype) -> None:
    """On CUDA, in float32 and in bfloat16, a question's routing queries and summary
    vector packed into one forward are those of the two forwards apart (a tiny model has
    no router, so its queries run on the backbone itself, not on a merged copy)."""
    from msa_agent.model.text import query_ids

    pair = (make_llama().to(dtype), make_tokenizer())
    facts = ["Alice works for Acme.", "Acme is based in Lisbon.", "Bob likes green tea."]
    with Memory.open(tmp_path / "m", model=pair, device="cuda", chunk_size=8,
                     summary_layer=-1) as mem:
        ids = mem.remember_many(facts)
        eng, text = mem._engine, "Where does Alice work?"
        q = eng.query(text)
        kept = eng.summary_vectors([text])
        alone_q = eng.encoder.query_vectors_many([query_ids(eng.tokenizer, text, 512)])[0]
        alone_s = eng.encoder.last_states([eng._summary_ids(text)], eng.summary_layer)
        tol = 1e-4 if dtype == torch.float32 else 3e-2
        torch.testing.assert_close(q, alone_q, atol=tol, rtol=tol)
        torch.testing.assert_close(kept, alone_s, atol=tol, rtol=tol)
        assert {h.id for h in mem.recall(text, k=3, routing="msa")} == set(ids)
