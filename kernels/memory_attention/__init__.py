"""memory_attention: attention over [selected memory KV ; causal local KV], GQA."""

from __future__ import annotations

import torch

from .._dispatch import use_triton
from .naive import memory_attention_ref


def memory_attention(
    q: torch.Tensor,
    k_local: torch.Tensor,
    v_local: torch.Tensor,
    k_pool: torch.Tensor,
    v_pool: torch.Tensor,
    mem_idx: torch.Tensor,
    scale: float | None = None,
    *,
    page_len: torch.Tensor | None = None,
    num_splits: int | None = None,
    heads_first: bool = False,
    scratch: dict | None = None,
) -> torch.Tensor:
    """Softmax attention of local queries over the selected memory and the local context.

    Memory tokens are visible to every query; local keys are causal, with the T queries
    aligned to the end of the TK local keys (query t sits at local position TK - T + t).
    T = TK is prefill; T = 1 is decode (the memory is split across programs, then combined).

    Args:
        q: `[T, HQ, D]` local queries, HQ = G * HKV (query head h reads kv head h // G).
        k_local, v_local: `[TK, HKV, D]` local keys / values, TK >= T.
        k_pool, v_pool: `[P, PAGE, HKV, D]` paged full-KV pool, or `[P, HKV, D]` pooled
            (one 64-token chunk per row, i.e. PAGE = 1).
        mem_idx: `[L]` int, the selected pages (or chunks), in attention order.
        scale: softmax scale, default D ** -0.5.
        page_len: `[L]` int, valid tokens in each selected page (default: all PAGE).
        num_splits: split-KV programs per (query tile, kv head); default by occupancy.
        heads_first: q / k_local / v_local come as `[HQ, T, D]` / `[HKV, TK, D]` (a model's
            `[B, H, T, D]` row, no transpose needed); the output is `[T, HQ, D]` either way.
        scratch: a dict kept by the caller across calls of one shape on one stream, one
            after another (every layer of a forward): the kernel's split buffers are
            allocated once in it instead of at each call.

    Returns:
        `[T, HQ, D]` in q's dtype. At least one key must be visible to every query.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if k_pool.dim() == 3:  # pooled layout: one chunk per row
        k_pool, v_pool = k_pool.unsqueeze(1), v_pool.unsqueeze(1)
    if use_triton(q):
        from .parallel import memory_attention_triton

        # q / k_local / v_local are read through their strides (a [B, H, T, D] row or its
        # transpose costs no copy); only a D that is not unit-stride, and the pools, are packed.
        q, k_local, v_local = _unit_last(q), _unit_last(k_local), _unit_last(v_local)
        k_pool, v_pool, mem_idx = k_pool.contiguous(), v_pool.contiguous(), mem_idx.contiguous()
        return memory_attention_triton(q, k_local, v_local, k_pool, v_pool, mem_idx, scale,
                                       page_len, num_splits, heads_first, scratch)
    if heads_first:
        q, k_local, v_local = q.transpose(0, 1), k_local.transpose(0, 1), v_local.transpose(0, 1)
    return memory_attention_ref(q, k_local, v_local, k_pool, v_pool, mem_idx, scale, page_len)


def _unit_last(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when its last dim is unit-stride (any other strides are fine), else packed."""
    return t if t.stride(-1) == 1 else t.contiguous()


__all__ = ["memory_attention"]
