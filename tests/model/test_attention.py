"""The registered ``msa`` attention: reading memories' full K/V equals a naive masked forward."""

from __future__ import annotations

import os

import pytest
import torch

from msa_agent.model.attention import MSA_ATTENTION, MemoryKV, paged_buffers, rotate_memory
from msa_agent.model.encoder import Encoder
from msa_agent.model.loader import wrap_model


def naive_logits(model, mems: list[list[int]], question: list[int]) -> torch.Tensor:  # noqa: ANN001
    """One eager forward over [mem_1 .. mem_n ; question] with a hand-built mask and positions."""
    ids = [t for m in mems for t in m] + question
    n, start = len(ids), max(len(m) for m in mems)
    pos, blocks = [], []
    for i, m in enumerate(mems):
        pos += list(range(len(m)))
        blocks += [i] * len(m)
    pos += list(range(start, start + len(question)))
    blocks += [-1] * len(question)
    allowed = torch.zeros(n, n, dtype=torch.bool)
    for a in range(n):
        for b in range(a + 1):  # causal over the concatenation ...
            allowed[a, b] = blocks[a] == -1 or blocks[a] == blocks[b]  # ... memories see only self
    mask = torch.zeros(1, 1, n, n).masked_fill(~allowed, float("-inf"))
    model.config._attn_implementation = "eager"
    out = model(input_ids=torch.tensor([ids]), position_ids=torch.tensor([pos]),
                attention_mask=mask)
    return out.logits[0, -len(question):]


def memory_of(model, tokenizer, mems: list[list[int]]) -> MemoryKV:  # noqa: ANN001
    layers = list(range(model.config.num_hidden_layers))
    # on the CPU, where the test builds its tensors (wrap_model would take a GPU if any)
    enc = Encoder(wrap_model(model, tokenizer, device="cpu"), layers, chunk_size=4,
                  keep_full_kv=True)
    docs = enc.encode(mems)
    mkv = MemoryKV()
    for j, layer in enumerate(layers):
        pos = [torch.arange(d.n_tokens) for d in docs]
        mkv.k[layer] = rotate_memory(model, [d.full_k[:, j] for d in docs], pos)
        mkv.v[layer] = torch.cat([d.full_v[:, j] for d in docs]).transpose(0, 1).unsqueeze(0)
    return mkv


# 17 + 9 + 70 memory tokens: two 64-token pages on the kernel path, the last one partial
MEMS = [list(range(3, 20)), list(range(40, 49)), list(range(60, 130))]


@pytest.mark.parametrize("kernel", ["0", "1"])
def test_full_read_matches_naive_forward(kernel: str, tiny_llama, tokenizer,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Through SDPA ("0") and through the Triton kernel (here the CPU interpreter, "1")."""
    monkeypatch.setenv("MSA_ATTENTION_KERNEL", kernel)
    calls = spy_kernel(monkeypatch)
    model = tiny_llama
    question = list(range(200, 207))
    mkv = memory_of(model, tokenizer, MEMS)
    start = max(len(m) for m in MEMS)
    model.config._attn_implementation = MSA_ATTENTION
    try:
        got = model(input_ids=torch.tensor([question]),
                    position_ids=torch.arange(start, start + len(question)).view(1, -1),
                    msa_memory=mkv).logits[0]
        want = naive_logits(model, MEMS, question)
    finally:
        model.config._attn_implementation = "sdpa"
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert len(calls) == (model.config.num_hidden_layers if kernel == "1" else 0)


def spy_kernel(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count calls of the kernel path (it still runs). These tests hold CPU tensors, which
    the kernel takes only under the Triton interpreter (set by tests/conftest.py where there
    is no CUDA; on a GPU machine tests/kernels cover the kernel on the device)."""
    from msa_agent.kernels import _dispatch
    from msa_agent.model import attention

    if os.environ.get("MSA_ATTENTION_KERNEL") == "1" and not _dispatch.interpret_mode():
        pytest.skip("the kernel on CPU tensors needs TRITON_INTERPRET=1")

    calls: list[int] = []
    real = attention._kernel_attention

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(attention, "_kernel_attention", spy)
    return calls


def test_kernel_decode_generates_what_sdpa_generates(tiny_llama, tokenizer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from msa_agent.runtime.generate import greedy

    mkv = memory_of(tiny_llama, tokenizer, MEMS)
    prompt, start = list(range(200, 205)), max(len(m) for m in MEMS)
    monkeypatch.setenv("MSA_ATTENTION_KERNEL", "0")
    want = list(greedy(tiny_llama, prompt, 6, set(), mkv, start))
    monkeypatch.setenv("MSA_ATTENTION_KERNEL", "1")
    calls = spy_kernel(monkeypatch)
    got = list(greedy(tiny_llama, prompt, 6, set(), mkv, start))
    assert got == want
    assert len(calls) == 6 * tiny_llama.config.num_hidden_layers  # prefill + 5 decode steps


def test_without_memory_equals_sdpa(tiny_llama) -> None:
    ids = torch.tensor([list(range(5, 30))])
    model = tiny_llama
    model.config._attn_implementation = "sdpa"
    want = model(input_ids=ids).logits
    model.config._attn_implementation = MSA_ATTENTION
    try:
        got = model(input_ids=ids).logits
    finally:
        model.config._attn_implementation = "sdpa"
    torch.testing.assert_close(got, want)


def test_rotate_layers_equals_the_models_own_rope(tiny_llama) -> None:  # noqa: ANN001
    """The one-pass rotation of several layers (what ``full`` reading uses) gives each
    layer exactly what transformers' ``apply_rotary_pos_emb`` gives, at any positions."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from msa_agent.model.attention import rotate_layers

    cfg = tiny_llama.config
    hkv, d = cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
    layers = [0, 1]
    keys = torch.randn(11, len(layers), hkv, d)
    pos = torch.tensor([0, 1, 2, 3, 7, 8, 9, 40, 41, 42, 43])
    got = rotate_layers(tiny_llama, keys, pos, layers)
    assert got.shape == (len(layers), hkv, 11, d) and got.is_contiguous()
    for j in range(len(layers)):
        k = keys[:, j].transpose(0, 1)[None]  # [1, Hkv, S, D]
        cos, sin = tiny_llama.model.rotary_emb(k, position_ids=pos[None])
        want, _ = apply_rotary_pos_emb(k, k, cos, sin)
        torch.testing.assert_close(got[j:j + 1], want)
        torch.testing.assert_close(rotate_memory(tiny_llama, [keys[:7, j], keys[7:, j]],
                                                 [pos[:7], pos[7:]]), want)
    torch.testing.assert_close(got[0, :, 0], keys[0, 0])  # position 0 is the identity ...
    assert not torch.allclose(got[0, :, 4], keys[4, 0])  # ... position 7 is not


def test_put_pages_every_layer_of_a_stack_in_one_buffer() -> None:
    """``MemoryKV.put`` layers share one paged buffer; each layer's pages equal paging that
    layer alone, and a layer replaced after ``put`` is paged from its own K/V."""
    gen = torch.Generator().manual_seed(0)
    k, v = torch.randn(3, 2, 150, 8, generator=gen), torch.randn(3, 2, 150, 8, generator=gen)
    stacked, alone = MemoryKV(), MemoryKV()
    stacked.put([4, 6, 9], k, v)
    for j, layer in enumerate([4, 6, 9]):
        alone.k[layer], alone.v[layer] = k[j:j + 1].clone(), v[j:j + 1].clone()
    replaced = torch.randn(1, 2, 70, 8, generator=gen)
    stacked.k[9], stacked.v[9] = replaced, replaced + 1
    alone.k[9], alone.v[9] = replaced, replaced + 1
    pages = {layer: stacked.paged(layer, torch.float32) for layer in (4, 6, 9)}
    assert pages[4].k.untyped_storage().data_ptr() == pages[6].k.untyped_storage().data_ptr()
    assert pages[9].k.untyped_storage().data_ptr() != pages[4].k.untyped_storage().data_ptr()
    for layer, got in pages.items():
        want = alone.paged(layer, torch.float32)
        assert got.k.shape == want.k.shape == (-(-alone.k[layer].shape[2] // 64), 64, 2, 8)
        for a, b in [(got.k, want.k), (got.v, want.v), (got.idx, want.idx),
                     (got.page_len, want.page_len)]:
            assert torch.equal(a, b)
    assert pages[4].page_len.tolist() == [64, 64, 22]
    assert torch.count_nonzero(pages[4].k[-1, 22:]) == 0  # the last page's tail is zero


def test_layout_in_pages_is_read_without_a_copy() -> None:
    """K/V laid out in :func:`paged_buffers` (the CUDA layout, forced here) are the kernel's
    pages as they are: ``paged`` returns views of the same storage, equal to paging the
    same values laid out contiguously, tail zeroed, and a write into a layer's K/V (as
    ``kv_blend`` makes) reaches its pages after ``written``."""
    gen = torch.Generator().manual_seed(1)
    k, v = torch.randn(3, 2, 150, 8, generator=gen), torch.randn(3, 2, 150, 8, generator=gen)
    kb, vb, pages = paged_buffers(k, 3, 2, 150, 8, paged=True)
    kb.copy_(k)
    vb.copy_(v)
    laid, plain = MemoryKV(), MemoryKV()
    laid.put([4, 6, 9], kb, vb, pages)
    plain.put([4, 6, 9], k, v)
    for layer in (4, 6, 9):
        got, want = laid.paged(layer, torch.float32), plain.paged(layer, torch.float32)
        assert got.k.untyped_storage().data_ptr() == pages[0].untyped_storage().data_ptr()
        for a, b in [(got.k, want.k), (got.v, want.v), (got.idx, want.idx),
                     (got.page_len, want.page_len)]:
            assert torch.equal(a, b)
    laid.k[6][:, :, 3] = 7.0
    laid.written()
    assert torch.all(laid.paged(6, torch.float32).k[0, 3] == 7.0)
    other = laid.paged(4, torch.float16)  # another dtype: paged from the K/V, a copy
    assert other.k.untyped_storage().data_ptr() != pages[0].untyped_storage().data_ptr()
    assert torch.equal(other.k.float(), plain.paged(4, torch.float16).k.float())
    kc, _, none = paged_buffers(k, 3, 2, 150, 8, paged=False)
    assert none is None and kc.is_contiguous() and kc.shape == k.shape


def test_causal_mask_is_compared_once_per_mask() -> None:
    mkv = MemoryKV()
    assert mkv.causal(None, 5, 9)
    causal = torch.ones(9, 9, dtype=torch.bool).tril()[None, None]
    assert mkv.causal(causal, 9, 9)
    padded = causal.clone()
    padded[..., 0] = False  # a padding column: not the kernel's plain causal mask
    assert not mkv.causal(padded, 9, 9)
    assert len(mkv._causal) == 2
    assert mkv.causal(causal, 9, 9) and len(mkv._causal) == 2  # remembered, not recompared
