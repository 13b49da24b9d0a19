"""The registered ``msa`` attention: reading memories' full K/V equals a naive masked forward."""

from __future__ import annotations

import torch

from msa_agent.model.attention import MSA_ATTENTION, MemoryKV, rotate_memory
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


def test_full_read_matches_naive_forward(tiny_llama, tokenizer) -> None:
    model = tiny_llama
    layers = list(range(model.config.num_hidden_layers))
    enc = Encoder(wrap_model(model, tokenizer), layers, chunk_size=4, keep_full_kv=True)
    mems = [list(range(3, 20)), list(range(40, 49)), list(range(60, 83))]
    question = list(range(100, 107))
    docs = enc.encode(mems)
    start = max(len(m) for m in mems)
    mkv = MemoryKV()
    for j, layer in enumerate(layers):
        pos = [torch.arange(d.n_tokens) for d in docs]
        mkv.k[layer] = rotate_memory(model, [d.full_k[:, j] for d in docs], pos)
        mkv.v[layer] = torch.cat([d.full_v[:, j] for d in docs]).transpose(0, 1).unsqueeze(0)
    model.config._attn_implementation = MSA_ATTENTION
    try:
        got = model(input_ids=torch.tensor([question]),
                    position_ids=torch.arange(start, start + len(question)).view(1, -1),
                    msa_memory=mkv).logits[0]
        want = naive_logits(model, mems, question)
    finally:
        model.config._attn_implementation = "sdpa"
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


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
