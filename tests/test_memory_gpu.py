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
        assert ans.read == "full" and ans.generated_tokens == 4
    with Memory.open(tmp_path / "m", model=pair, device="cuda") as mem:
        again = mem.recall("Where does Alice work?", k=3, hops=2)
    assert [h.id for h in again] == [h.id for h in hits]


def test_host_tier_on_cuda_is_pinned_and_reads_what_the_store_holds(tmp_path: Path) -> None:
    pair = (make_llama(), make_tokenizer())
    facts = ["Alice works for Acme.", "Acme is based in Lisbon.", "Bob likes green tea."]
    answers = []
    for mb in (0, 64):  # 0: straight from the store; 64: pinned host tier + gather kernel
        with Memory.open(tmp_path / f"m{mb}", model=pair, device="cuda", chunk_size=8,
                         keep_full_kv=True, host_cache_mb=mb) as mem:
            mem.remember_many(facts)
            first = mem.answer("Where does Alice work?", k=2, read="full", max_new_tokens=4)
            again = mem.answer("Where does Alice work?", k=2, read="full", max_new_tokens=4)
            cache = mem._engine.kv_cache["full"]
            assert first.text == again.text
            if mb:
                assert cache.k is not None and cache.k.is_pinned() and len(cache.rows) == 2
            answers.append(first.text)
    assert answers[0] == answers[1]
