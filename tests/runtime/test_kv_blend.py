"""Re-encoding memory tokens in the reader's context (``runtime.kv_blend``)."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from msa_agent.model.attention import MemoryKV, paged_buffers
from msa_agent.runtime.generate import cache_kwarg, msa_attention
from msa_agent.runtime.kv_blend import blend, deviating

HEAD, MEM, TAIL = [5, 9, 13, 2], [21, 33, 40, 7, 18, 26, 30], [11, 3, 17]


def _device(model: torch.nn.Module) -> torch.device:
    """Where the shared tiny model is (a CUDA test before may have moved it there)."""
    return next(model.parameters()).device


def _prefill(model: torch.nn.Module, ids: list[int]) -> tuple[torch.Tensor, DynamicCache]:
    """Logits and cache of a plain forward over ``ids``."""
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids], device=_device(model)), use_cache=True,
                    **{cache_kwarg(model): cache})
    return out.logits[0], cache


def _memory(cache: DynamicCache, n_layers: int, garbage_from: int | None,
            in_pages: bool = False) -> MemoryKV:
    """Every layer's cached K/V as one memory (rows from ``garbage_from`` on replaced by
    noise: K/V encoded somewhere else); ``in_pages``: laid out in the kernel's pages, as
    reads on CUDA lay them (``paged_buffers``)."""
    k = torch.cat([cache.layers[i].keys for i in range(n_layers)]).clone()
    v = torch.cat([cache.layers[i].values for i in range(n_layers)]).clone()
    if garbage_from is not None:
        g = torch.Generator().manual_seed(0)
        k[:, :, garbage_from:] = torch.randn(k[:, :, garbage_from:].shape, generator=g).to(k)
        v[:, :, garbage_from:] = torch.randn(v[:, :, garbage_from:].shape, generator=g).to(v)
    mkv = MemoryKV()
    if in_pages:
        kb, vb, pages = paged_buffers(k, *k.shape, paged=True)
        kb.copy_(k)
        vb.copy_(v)
        mkv.put(range(n_layers), kb, vb, pages)
    else:
        mkv.put(range(n_layers), k, v)
    return mkv


def _tail_logits(model: torch.nn.Module, mkv: MemoryKV, start: int) -> torch.Tensor:
    pos = torch.arange(start, start + len(TAIL), device=_device(model))[None]
    with torch.inference_mode(), msa_attention(model):
        out = model(input_ids=torch.tensor([TAIL], device=pos.device), position_ids=pos,
                    msa_memory=mkv, use_cache=True,
                    **{cache_kwarg(model): DynamicCache(config=model.config)})
    return out.logits[0]


@pytest.mark.parametrize("in_pages", [False, True])
@pytest.mark.parametrize("kernel", ["0", "1"])
def test_every_token_reencoded_is_the_joint_prefill(tiny_llama: torch.nn.Module, kernel: str,
                                                    in_pages: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Stored rows that are noise, all re-encoded: the tail reads exactly what a forward over
    head, memory and tail together gives; also through the kernel, whose pages of the noise
    (made by the read before) must not outlive the write."""
    monkeypatch.setenv("MSA_ATTENTION_KERNEL", kernel)
    n = tiny_llama.config.num_hidden_layers
    joint, _ = _prefill(tiny_llama, HEAD + MEM + TAIL)
    _, cache = _prefill(tiny_llama, HEAD + MEM)
    mkv = _memory(cache, n, garbage_from=len(HEAD), in_pages=in_pages)
    assert not torch.allclose(_tail_logits(tiny_llama, mkv, len(HEAD + MEM)),
                              joint[-len(TAIL):], atol=1e-3)
    blend(tiny_llama, mkv, MEM, list(range(len(HEAD), len(HEAD + MEM))))
    torch.testing.assert_close(_tail_logits(tiny_llama, mkv, len(HEAD + MEM)),
                               joint[-len(TAIL):], atol=1e-4, rtol=1e-4)


def test_a_subset_reencoded_in_its_own_context_is_unchanged(tiny_llama: torch.nn.Module) -> None:
    """Rows already encoded in context: re-encoding any of them, each seeing the stored rows
    before it, gives them back; the rows not chosen are never written."""
    n = tiny_llama.config.num_hidden_layers
    _, cache = _prefill(tiny_llama, HEAD + MEM)
    mkv = _memory(cache, n, garbage_from=None)
    before = {i: (mkv.k[i].clone(), mkv.v[i].clone()) for i in range(n)}
    pick = [1, 4, 5]
    blend(tiny_llama, mkv, [MEM[j] for j in pick], [len(HEAD) + j for j in pick])
    for i in range(n):
        torch.testing.assert_close(mkv.k[i], before[i][0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mkv.v[i], before[i][1], atol=1e-5, rtol=1e-5)
    assert mkv.visible is None


def test_a_subset_sees_the_stored_rows_before_it(tiny_llama: torch.nn.Module) -> None:
    """Noise in a stored row before a chosen token changes that token's new K/V; noise after
    it does not."""
    n = tiny_llama.config.num_hidden_layers
    _, cache = _prefill(tiny_llama, HEAD + MEM)
    col = len(HEAD) + 3

    def reencoded(noisy: int) -> torch.Tensor:
        mkv = _memory(cache, n, garbage_from=None)
        for i in range(n):
            mkv.v[i][:, :, noisy] += 5.0
        blend(tiny_llama, mkv, [MEM[3]], [col])
        return mkv.k[n - 1][:, :, col].clone()

    clean = _memory(cache, n, garbage_from=None).k[n - 1][:, :, col]
    assert not torch.allclose(reencoded(col - 1), clean, atol=1e-4)
    torch.testing.assert_close(reencoded(col + 1), clean, atol=1e-5, rtol=1e-5)


def test_deviating_picks_the_changed_tokens(tiny_llama: torch.nn.Module) -> None:
    """Rows encoded in context except two replaced by noise: those two deviate most."""
    n = tiny_llama.config.num_hidden_layers
    _, cache = _prefill(tiny_llama, HEAD + MEM)
    mkv = _memory(cache, n, garbage_from=None)
    for j in (2, 6):
        for i in range(n):
            mkv.k[i][:, :, len(HEAD) + j] += 3.0
    cols = list(range(len(HEAD), len(HEAD + MEM)))
    assert deviating(tiny_llama, mkv, MEM, cols, 2 / len(MEM)) == [2, 6]
    assert deviating(tiny_llama, mkv, MEM, cols, 0.0) == []
    assert mkv.visible is None
    assert len(tiny_llama.model.layers) == n
