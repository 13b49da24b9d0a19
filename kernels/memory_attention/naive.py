"""Pure-PyTorch reference: attention over [selected memory KV ; causal local KV]."""

from __future__ import annotations

import torch


def gather_memory(
    pool: torch.Tensor, mem_idx: torch.Tensor, page_len: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """pool `[P, PAGE, HKV, D]`, mem_idx `[L]` -> (kv `[L*PAGE, HKV, D]`, valid `[L*PAGE]`)."""
    L, PAGE = mem_idx.numel(), pool.shape[1]
    kv = pool[mem_idx.long()].reshape(L * PAGE, *pool.shape[2:])
    valid = torch.ones(L, PAGE, dtype=torch.bool, device=pool.device)
    if page_len is not None:
        valid = torch.arange(PAGE, device=pool.device)[None] < page_len.to(pool.device)[:, None]
    return kv, valid.reshape(-1)


def memory_attention_ref(
    q: torch.Tensor,
    k_local: torch.Tensor,
    v_local: torch.Tensor,
    k_pool: torch.Tensor,
    v_pool: torch.Tensor,
    mem_idx: torch.Tensor,
    scale: float,
    page_len: torch.Tensor | None = None,
) -> torch.Tensor:
    """q `[T, HQ, D]`, local `[TK, HKV, D]`, pools `[P, PAGE, HKV, D]` -> `[T, HQ, D]`."""
    T, HQ, _ = q.shape
    TK, HKV, _ = k_local.shape
    k_mem, valid = gather_memory(k_pool, mem_idx, page_len)
    v_mem, _ = gather_memory(v_pool, mem_idx, page_len)
    k = torch.cat([k_mem, k_local]).float().repeat_interleave(HQ // HKV, 1)  # (S, HQ, D)
    v = torch.cat([v_mem, v_local]).float().repeat_interleave(HQ // HKV, 1)
    pos = torch.arange(T, device=q.device)[:, None] + (TK - T)  # query positions in local
    causal = torch.arange(TK, device=q.device)[None] <= pos  # (T, TK)
    mask = torch.cat([valid[None].expand(T, -1), causal], 1)  # (T, S)
    s = torch.einsum("thd,shd->hts", q.float(), k) * scale
    p = s.masked_fill(~mask[None], float("-inf")).softmax(-1)
    return torch.einsum("hts,shd->thd", p, v).to(q.dtype)
