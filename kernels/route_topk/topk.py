"""Triton top-k over document scores: one launch instead of torch.topk's chain of kernels
(radix passes, sort, masked_fill: ~10 small launches, a fixed cost per routed layer)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_K = 64  # iterative extraction, unrolled K times
MAX_CAND = 8192  # candidates the last program merges (P slices x K)


@triton.jit
def topk_kernel(
    doc_score,  # [B, M] float32
    cand_val,  # [B, P, K] float32 scratch
    cand_idx,  # [B, P, K] int32 scratch
    counter,  # [B] int32, zero on entry (fold_query_kernel zeroes it); zero again on exit
    out_val,  # [B, K] float32, descending
    out_idx,  # [B, K] int64, -1 where out_val is -inf
    M,
    P,
    K: tl.constexpr,
    KP: tl.constexpr,
    BM: tl.constexpr,
    BC: tl.constexpr,
):
    """Program (p, b) keeps the K best of slice p of row b; the last program of row b to
    finish (atomic counter) merges the P * K candidates."""
    i_p, i_b = tl.program_id(0), tl.program_id(1)
    o_m = i_p * BM + tl.arange(0, BM)
    b_x = tl.load(doc_score + i_b.to(tl.int64) * M + o_m, mask=o_m < M, other=float("-inf"))
    o_k = tl.arange(0, KP)
    b_v = tl.full([KP], float("-inf"), tl.float32)
    b_i = tl.full([KP], -1, tl.int32)
    for i in tl.static_range(K):  # extract the max K times
        v, j = tl.max(b_x, axis=0, return_indices=True, return_indices_tie_break_left=True)
        b_v = tl.where(o_k == i, v, b_v)
        b_i = tl.where(o_k == i, i_p * BM + j, b_i)
        b_x = tl.where(tl.arange(0, BM) == j, float("-inf"), b_x)
    p_c = (i_b * P + i_p).to(tl.int64) * K + o_k
    tl.store(cand_val + p_c, b_v, mask=o_k < K)
    tl.store(cand_idx + p_c, b_i, mask=o_k < K)
    tl.debug_barrier()
    done = tl.atomic_add(counter + i_b, 1, sem="acq_rel")  # orders the stores above
    if done == P - 1:  # every slice of this row is in: merge
        o_c = tl.arange(0, BC)
        m_c = o_c < P * K
        p_r = i_b.to(tl.int64) * P * K + o_c
        c_v = tl.load(cand_val + p_r, mask=m_c, other=float("-inf"), cache_modifier=".cg")
        c_i = tl.load(cand_idx + p_r, mask=m_c, other=-1, cache_modifier=".cg")
        b_v = tl.full([KP], float("-inf"), tl.float32)
        b_i = tl.full([KP], -1, tl.int32)
        for i in tl.static_range(K):
            v, j = tl.max(c_v, axis=0, return_indices=True, return_indices_tie_break_left=True)
            d = tl.sum(tl.where(o_c == j, c_i, 0))
            b_v = tl.where(o_k == i, v, b_v)
            b_i = tl.where(o_k == i, tl.where(v == float("-inf"), -1, d), b_i)
            c_v = tl.where(o_c == j, float("-inf"), c_v)
        p_o = i_b.to(tl.int64) * K + o_k
        tl.store(out_val + p_o, b_v, mask=o_k < K)
        tl.store(out_idx + p_o, b_i.to(tl.int64), mask=o_k < K)
        tl.atomic_xchg(counter + i_b, 0)  # ready for a next call (fold zeroes it anyway)


def topk_plan(M: int, k: int) -> tuple[int, int] | None:
    """(BM slice length, P slices) for topk_kernel, or None where torch.topk is the better
    fit (k > MAX_K, or more than MAX_CAND candidates to merge)."""
    BM = min(4096, max(512, triton.next_power_of_2(triton.cdiv(M, 32))))
    P = triton.cdiv(M, BM)
    if k > MAX_K or k > BM or P * k > MAX_CAND:
        return None
    return BM, P


def topk_triton(
    doc_score: torch.Tensor, k: int, counter: torch.Tensor, plan: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """doc_score [B, M] -> (ids [B, k] int64, scores [B, k] float32), descending; slots past
    the finite scores hold -1 and -inf (same contract as naive.topk_docs)."""
    B, M = doc_score.shape
    BM, P = plan
    dev = doc_score.device
    cand_val = torch.empty((B, P, k), dtype=torch.float32, device=dev)
    cand_idx = torch.empty((B, P, k), dtype=torch.int32, device=dev)
    val = torch.empty((B, k), dtype=torch.float32, device=dev)
    ids = torch.empty((B, k), dtype=torch.int64, device=dev)
    topk_kernel[(P, B)](
        doc_score, cand_val, cand_idx, counter, val, ids, M, P, K=k,
        KP=triton.next_power_of_2(k), BM=BM, BC=triton.next_power_of_2(P * k),
    )  # fmt: skip
    return ids, val
