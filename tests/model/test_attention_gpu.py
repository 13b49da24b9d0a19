"""The ``msa`` attention's Triton kernel path on CUDA equals its SDPA path (tiny model)."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from msa_agent.model import attention
from msa_agent.model.attention import MemoryKV
from msa_agent.runtime.generate import cache_kwarg, msa_attention
from msa_testing import make_llama

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def random_memory(model: torch.nn.Module, length: int, dtype: torch.dtype) -> MemoryKV:
    """Memory K/V of ``length`` tokens in every layer (3 pages of 64 for 150: last partial)."""
    cfg, gen = model.config, torch.Generator(device="cuda").manual_seed(0)
    shape = (1, cfg.num_key_value_heads, length, cfg.hidden_size // cfg.num_attention_heads)
    mkv = MemoryKV()
    for layer in range(cfg.num_hidden_layers):
        mkv.k[layer] = torch.randn(shape, generator=gen, device="cuda").to(dtype)
        mkv.v[layer] = torch.randn(shape, generator=gen, device="cuda").to(dtype)
    return mkv


def logits(model: torch.nn.Module, mkv: MemoryKV, ids: list[int], start: int) -> torch.Tensor:
    """Prefill logits of ``ids`` ``[T, V]``, then one decode step's ``[1, V]``, stacked."""
    cache = DynamicCache(config=model.config)
    kw = {cache_kwarg(model): cache, "msa_memory": mkv, "use_cache": True}
    with msa_attention(model):
        pos = torch.arange(start, start + len(ids), device="cuda").view(1, -1)
        pre = model(input_ids=torch.tensor([ids], device="cuda"), position_ids=pos, **kw)
        step = model(input_ids=torch.tensor([[7]], device="cuda"), position_ids=pos[:, -1:] + 1,
                     **kw)
    return torch.cat([pre.logits[0], step.logits[0]]).float()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.no_grad()
def test_kernel_path_equals_sdpa_on_cuda(dtype: torch.dtype,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_llama().to("cuda", dtype)
    mkv, ids = random_memory(model, 150, dtype), list(range(20, 45))
    monkeypatch.setenv("MSA_ATTENTION_KERNEL", "0")
    want = logits(model, mkv, ids, 150)
    calls: list[int] = []
    real = attention._kernel_attention
    monkeypatch.setattr(attention, "_kernel_attention",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setenv("MSA_ATTENTION_KERNEL", "auto")
    got = logits(model, mkv, ids, 150)
    assert len(calls) == 2 * model.config.num_hidden_layers  # prefill and the decode step
    tol = 2e-3 if dtype == torch.float32 else 6e-2  # fp32 dots may run as tf32 on the GPU
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)
