"""Encoder: pooled routing keys and K/V equal a naive recomputation from the model."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, Gemma3TextConfig, Qwen2Config, Qwen3Config

from msa_agent.errors import InvalidInputError
from msa_agent.model.encoder import Encoder, batch_chunk_mean, chunk_mean, length_batches
from msa_agent.model.loader import wrap_model
from msa_agent.model.router import Router
from msa_agent.model.shape import ModelShape


def naive_kv(model: torch.nn.Module, ids: list[int], layer: int) -> tuple[torch.Tensor, ...]:
    """Pre-RoPE K, V and attention input of ``layer`` for one document, without hooks."""
    out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    dec = model.model.layers[layer]
    h = dec.input_layernorm(out.hidden_states[layer][0])  # [T, hidden]
    attn = dec.self_attn
    k = attn.k_proj(h).view(len(ids), -1, attn.head_dim)
    if hasattr(attn, "k_norm"):
        k = attn.k_norm(k)
    v = attn.v_proj(h).view(len(ids), -1, attn.head_dim)
    return k, v, h


def naive_rotated_k(model: torch.nn.Module, ids: list[int], layer: int) -> torch.Tensor:
    """K after RoPE at positions 0..T-1, as the model's own KV cache holds it: [T, Hkv, D]."""
    out = model(input_ids=torch.tensor([ids]), use_cache=True)
    return out.past_key_values.layers[layer].keys[0].transpose(0, 1)


def naive_pool(x: torch.Tensor, p: int) -> torch.Tensor:
    return torch.stack([x[s : s + p].mean(0) for s in range(0, x.shape[0], p)])


def test_chunk_mean_partial_chunk_averages_real_tokens() -> None:
    x = torch.arange(10, dtype=torch.float32).view(10, 1)
    pooled = chunk_mean(x, 10, 4)
    assert pooled.squeeze(1).tolist() == [1.5, 5.5, 8.5]


def test_length_batches_respect_budget_and_cover_all() -> None:
    lengths = [5, 100, 7, 60, 3, 99]
    batches = list(length_batches(lengths, 200))
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert all(len(b) * max(lengths[i] for i in b) <= 200 or len(b) == 1 for b in batches)


def _qwen3() -> torch.nn.Module:
    torch.manual_seed(1)
    cfg = Qwen3Config(vocab_size=300, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    return AutoModelForCausalLM.from_config(cfg).eval()


def _qwen2() -> torch.nn.Module:
    torch.manual_seed(4)
    cfg = Qwen2Config(vocab_size=300, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2)
    return AutoModelForCausalLM.from_config(cfg).eval()


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_stored_keys_equal_naive_recomputation(family: str, tiny_llama, tokenizer) -> None:
    model = {"llama": lambda: tiny_llama, "qwen2": _qwen2, "qwen3": _qwen3}[family]()
    layers = [1, 2]
    enc = Encoder(wrap_model(model, tokenizer), layers, chunk_size=8, keep_full_kv=True)
    docs = [list(range(3, 40)), list(range(50, 61)), list(range(100, 103))]
    encoded = enc.encode(docs)  # one padded batch
    for ids, e in zip(docs, encoded):
        for j, layer in enumerate(layers):
            k, v, _ = naive_kv(model, ids, layer)
            torch.testing.assert_close(e.full_k[:, j], k, atol=1e-5, rtol=1e-4)
            want = naive_pool(naive_rotated_k(model, ids, layer), 8)  # the paper pools post-RoPE K
            torch.testing.assert_close(e.pooled_k[:, j], want, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(e.pooled_v[:, j], naive_pool(v, 8), atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(e.route_k[:, j], naive_pool(k, 8), atol=1e-5, rtol=1e-4)


def test_router_keys_equal_naive_projection(tiny_llama, tokenizer) -> None:
    layers = [2, 3]
    torch.manual_seed(3)
    router = Router(ModelShape.of(tiny_llama), layers)
    enc = Encoder(wrap_model(tiny_llama, tokenizer), layers, chunk_size=4, router=router)
    ids = list(range(5, 22))
    e = enc.encode([ids])[0]
    for j, layer in enumerate(layers):
        _, _, h = naive_kv(tiny_llama, ids, layer)
        want = naive_pool(router[layer].k(h), 4)
        torch.testing.assert_close(e.route_k[:, j], want, atol=1e-5, rtol=1e-4)
    q = enc.query_vectors(ids)
    _, _, h = naive_kv(tiny_llama, ids, 3)
    torch.testing.assert_close(q[:, 1], router[3].q(h), atol=1e-5, rtol=1e-4)


def test_positions_are_document_local(tiny_llama, tokenizer) -> None:
    """A document encodes the same alone, in a batch, or beside a much longer one."""
    enc = Encoder(wrap_model(tiny_llama, tokenizer), [3], chunk_size=4, batch_tokens=10_000)
    short = list(range(10, 19))
    alone = enc.encode([short])[0]
    batched = enc.encode([list(range(1, 200)), short])[1]
    torch.testing.assert_close(alone.pooled_k, batched.pooled_k, atol=1e-5, rtol=1e-4)


def test_gemma3_encodes(tokenizer) -> None:
    torch.manual_seed(2)
    cfg = Gemma3TextConfig(vocab_size=300, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=1,
                           head_dim=8, sliding_window=16)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    enc = Encoder(wrap_model(model, tokenizer), [2, 3], chunk_size=8)
    e = enc.encode([list(range(1, 30))])[0]
    assert e.pooled_k.shape == (4, 2, 1, 8)
    assert torch.isfinite(e.route_k).all()


def test_empty_document_is_refused(tiny_llama, tokenizer) -> None:
    enc = Encoder(wrap_model(tiny_llama, tokenizer), [3])
    with pytest.raises(InvalidInputError, match="empty"):
        enc.encode([[]])


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=5), size=st.integers(1, 9),
       seed=st.integers(0, 2**16))
def test_batch_chunk_mean_equals_chunk_mean_per_row(lengths: list[int], size: int,
                                                    seed: int) -> None:
    """The batched pooling gives each document exactly what pooling it alone gives, whatever
    the padding holds (here: large values, which must not leak into the last chunk)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), 3, 2, generator=g)
    for row, n in enumerate(lengths):
        x[row, n:] = 1e6
    got = batch_chunk_mean(x, lengths, size)
    for row, n in enumerate(lengths):
        assert torch.equal(got[row], chunk_mean(x[row], n, size))
