"""Triton routing kernel: one pass over the keys, chunk score -> masked atomic doc max."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._dispatch import autotune_off, interpret_mode
from .naive import EPS, topk_docs


def _configs() -> list[triton.Config]:
    if interpret_mode():
        return [triton.Config({"BN": 16}, num_warps=4)]
    if autotune_off():
        return [triton.Config({"BN": 64}, num_warps=4, num_stages=3)]
    return [
        triton.Config({"BN": bn}, num_warps=w, num_stages=s)
        for bn in (32, 64, 128)
        for w in (4, 8)
        for s in (2, 3)
    ]


@triton.autotune(configs=_configs(), key=["HKV", "D", "TP", "BB", "NORMALIZED"])
@triton.jit
def route_score_kernel(
    qf,  # [HKV, C, D] folded, normalised queries (C = padded B * TP columns)
    keys,  # [N, HKV, D]
    chunk_doc,  # [N] int32/int64
    doc_mask,  # [M] int8 (unused unless HAS_MASK)
    doc_score,  # [B, M] float32, pre-filled with -inf
    chunk_score,  # [B, N] float32 (unused unless STORE_CHUNK)
    N,
    M,
    T,
    B,
    C,
    HKV: tl.constexpr,
    D: tl.constexpr,
    BD: tl.constexpr,
    TP: tl.constexpr,
    BB: tl.constexpr,
    BN: tl.constexpr,
    NORMALIZED: tl.constexpr,
    HAS_MASK: tl.constexpr,
    STORE_CHUNK: tl.constexpr,
    DOT_F32: tl.constexpr,
):
    i_c, i_n = tl.program_id(0), tl.program_id(1)
    o_n = i_n * BN + tl.arange(0, BN)
    m_n = o_n < N
    o_d = tl.arange(0, BD)
    m_d = o_d < D
    o_c = i_c * BB * TP + tl.arange(0, BB * TP)
    m_c = (o_c % TP) < T

    b_acc = tl.zeros([BN, BB * TP], dtype=tl.float32)
    for i_j in range(HKV):
        p_k = keys + (o_n[:, None].to(tl.int64) * HKV + i_j) * D + o_d[None, :]
        b_k = tl.load(p_k, mask=m_n[:, None] & m_d[None, :], other=0.0)
        p_q = qf + (i_j * C + o_c[None, :]).to(tl.int64) * D + o_d[:, None]
        b_q = tl.load(p_q, mask=m_d[:, None], other=0.0)
        if DOT_F32:  # the CPU interpreter's bf16 dot is wrong (triton 3.9)
            b_q = b_q.to(tl.float32)
        b_k = b_k.to(b_q.dtype)
        # [BN, BD] @ [BD, BB*TP] -> [BN, BB*TP]
        b_s = tl.dot(b_k, b_q)
        if NORMALIZED:
            b_acc += b_s
        else:
            b_kf = b_k.to(tl.float32)
            b_inv = 1.0 / tl.maximum(tl.sqrt(tl.sum(b_kf * b_kf, axis=1)), 1e-6)  # naive.EPS
            b_acc += b_s * b_inv[:, None]

    b_acc = tl.where(m_c[None, :], b_acc, float("-inf"))
    b_sc = tl.max(tl.reshape(b_acc, [BN, BB, TP]), axis=2)  # [BN, BB]
    o_b = i_c * BB + tl.arange(0, BB)
    m_b = o_b < B
    if STORE_CHUNK:
        p_cs = chunk_score + o_b[None, :].to(tl.int64) * N + o_n[:, None]
        tl.store(p_cs, b_sc, mask=m_n[:, None] & m_b[None, :])
    b_doc = tl.load(chunk_doc + o_n, mask=m_n, other=0).to(tl.int64)
    m_ok = m_n
    if HAS_MASK:
        m_ok = m_ok & (tl.load(doc_mask + b_doc, mask=m_n, other=0) != 0)
    p_ds = doc_score + o_b[None, :].to(tl.int64) * M + b_doc[:, None]
    tl.atomic_max(p_ds, b_sc, mask=m_ok[:, None] & m_b[None, :])


def fold_query(q: torch.Tensor, HKV: int, TP: int, BB: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, T, HQ, D] -> [HKV, C, D]: per-head normalised, group-summed, / HQ, zero-padded."""
    B, T, HQ, D = q.shape
    q_hat = q.float() / q.float().norm(dim=-1, keepdim=True).clamp_min(EPS)
    q_fold = q_hat.view(B, T, HKV, HQ // HKV, D).sum(3) / HQ  # (B, T, HKV, D)
    Bp = triton.cdiv(B, BB) * BB
    out = q.new_zeros((HKV, Bp, TP, D), dtype=dtype)
    out[:, :B, :T] = q_fold.permute(2, 0, 1, 3).to(dtype)
    return out.view(HKV, Bp * TP, D)


def tile_shape(B: int, T: int) -> tuple[int, int]:
    """TP (padded T) and BB (queries per column tile): at least 16 and at most 128 columns."""
    TP = triton.next_power_of_2(T)
    BB = max(1, 128 // TP) if TP < 128 else 1
    BB = min(BB, max(triton.next_power_of_2(B), max(1, 16 // TP)))
    return TP, BB


def route_topk_triton(
    q: torch.Tensor,
    keys: torch.Tensor,
    chunk_doc: torch.Tensor,
    num_docs: int,
    k: int,
    doc_mask: torch.Tensor | None,
    keys_normalized: bool,
    return_chunk_scores: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    B, T, HQ, D = q.shape
    N, HKV, _ = keys.shape
    TP, BB = tile_shape(B, T)
    # fp8 -> fp16 is one native convert on Hopper; fp32 keys would overflow fp16.
    qdtype = torch.float16 if keys.element_size() <= 2 and keys.dtype != torch.bfloat16 else (
        torch.bfloat16
    )
    qf = fold_query(q, HKV, TP, BB, qdtype)
    doc_score = torch.full((B, num_docs), float("-inf"), dtype=torch.float32, device=q.device)
    chunk_score = torch.empty((B, N) if return_chunk_scores else (1, 1), device=q.device)
    mask = doc_mask.to(torch.int8) if doc_mask is not None else doc_score
    n_col = triton.cdiv(B, BB)

    def grid(meta: dict) -> tuple[int, int]:
        return (n_col, triton.cdiv(N, meta["BN"]))

    route_score_kernel[grid](
        qf, keys.contiguous(), chunk_doc.contiguous(), mask, doc_score, chunk_score,
        N, num_docs, T, B, qf.shape[1],
        HKV=HKV, D=D, BD=max(16, triton.next_power_of_2(D)), TP=TP, BB=BB,
        NORMALIZED=keys_normalized, HAS_MASK=doc_mask is not None,
        STORE_CHUNK=return_chunk_scores, DOT_F32=interpret_mode(),
    )
    ids, val = topk_docs(doc_score, k)
    return ids, val, chunk_score if return_chunk_scores else None
