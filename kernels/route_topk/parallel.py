"""Triton routing kernels: fold the query, then one pass over the keys (chunk score ->
masked atomic document max), then a top-k over the M document scores."""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

from .._dispatch import autotune_off, interpret_mode
from .naive import topk_docs

FP8_MAX = 448.0


def _programs_per_sm() -> int:
    """Persistent grid size; a tuning knob for the bench (MSA_ROUTE_PROGRAMS_PER_SM)."""
    return int(os.environ.get("MSA_ROUTE_PROGRAMS_PER_SM", "2"))


@functools.cache
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _configs() -> list[triton.Config]:
    if interpret_mode():
        return [triton.Config({"BN": 16}, num_warps=4)]
    if autotune_off():
        return [triton.Config({"BN": 64}, num_warps=4, num_stages=3)]
    return [
        triton.Config({"BN": bn}, num_warps=w, num_stages=s)
        for bn in (64, 128, 256)
        for w in (4, 8)
        for s in (2, 3, 4)
        if not (bn == 256 and w == 4)
    ]


@triton.jit
def fold_query_kernel(
    q,  # [B, T, HQ, D]
    qf,  # [HKV, C, D]: C = padded B * TP columns, zero where t >= T or b >= B
    T,
    B,
    C,
    HQ: tl.constexpr,
    G: tl.constexpr,
    D: tl.constexpr,
    BG: tl.constexpr,
    BD: tl.constexpr,
    TP: tl.constexpr,
):
    i_c, i_j = tl.program_id(0), tl.program_id(1)
    i_b, i_t = i_c // TP, i_c % TP
    o_g = tl.arange(0, BG)
    o_d = tl.arange(0, BD)
    n_g = tl.where((i_t < T) & (i_b < B), G, 0)  # padding columns fold to zero
    m_q = (o_g < n_g)[:, None] & (o_d < D)[None, :]
    p_q = q + ((i_b * T + i_t).to(tl.int64) * HQ + i_j * G + o_g[:, None]) * D + o_d[None, :]
    b_q = tl.load(p_q, mask=m_q, other=0.0).to(tl.float32)  # [BG, BD]
    b_n = tl.sqrt(tl.sum(b_q * b_q, axis=1))
    b_f = tl.sum(b_q / tl.maximum(b_n, 1e-6)[:, None], axis=0) / HQ  # [BD]
    p_f = qf + (i_j * C + i_c).to(tl.int64) * D + o_d
    tl.store(p_f, b_f.to(qf.dtype.element_ty), mask=o_d < D)


@triton.jit
def _head_score(qf, q_scale, keys, o_n, m_n, o_c, i_j, C, HKV: tl.constexpr, D: tl.constexpr,
                BD: tl.constexpr, NORMALIZED: tl.constexpr, FP8_DOT: tl.constexpr,
                DOT_F32: tl.constexpr):  # fmt: skip
    """Scores of BN chunks against the folded query columns for kv head i_j: [BN, BC]."""
    o_d = tl.arange(0, BD)
    m_d = o_d < D
    p_k = keys + (o_n[:, None].to(tl.int64) * HKV + i_j) * D + o_d[None, :]
    b_k = tl.load(p_k, mask=m_n[:, None] & m_d[None, :], other=0.0)
    p_q = qf + (i_j * C + o_c[None, :]).to(tl.int64) * D + o_d[:, None]
    b_q = tl.load(p_q, mask=m_d[:, None], other=0.0)
    if DOT_F32:  # the CPU interpreter's bf16 dot is wrong (triton 3.9)
        b_q = b_q.to(tl.float32)
    b_k = b_k.to(b_q.dtype)
    # [BN, BD] @ [BD, BC] -> [BN, BC]
    b_s = tl.dot(b_k, b_q)
    if FP8_DOT:
        b_s = b_s * tl.load(q_scale + i_j * C + o_c)[None, :]
    if not NORMALIZED:
        b_kf = b_k.to(tl.float32)
        b_inv = 1.0 / tl.maximum(tl.sqrt(tl.sum(b_kf * b_kf, axis=1)), 1e-6)  # naive.EPS
        b_s = b_s * b_inv[:, None]
    return b_s


@triton.jit
def _block_epilogue(b_acc, o_n, m_n, i_c, key_scale, chunk_doc, doc_mask, doc_score,
                    chunk_score, N, M, T, B, BN: tl.constexpr, BB: tl.constexpr,
                    TP: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_MASK: tl.constexpr,
                    STORE_CHUNK: tl.constexpr):  # fmt: skip
    """Max over query tokens, then masked atomic max into the document scores."""
    if HAS_SCALE:  # pre-normalised fp8 keys: k_hat = k8 * scale (it cancels otherwise)
        b_acc = b_acc * tl.load(key_scale + o_n, mask=m_n, other=0.0)[:, None]
    o_c = i_c * BB * TP + tl.arange(0, BB * TP)
    b_acc = tl.where(((o_c % TP) < T)[None, :], b_acc, float("-inf"))
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


KEY = ["HKV", "D", "TP", "BB", "NORMALIZED", "FP8_DOT"]


@triton.autotune(configs=_configs(), key=KEY)
@triton.jit
def route_score_kernel(
    qf,  # [HKV, C, D] folded, normalised queries (C = padded B * TP columns)
    q_scale,  # [HKV, C] float32 dequant scale of qf (unused unless FP8_DOT)
    keys,  # [N, HKV, D]
    key_scale,  # [N] float32 (unused unless HAS_SCALE)
    chunk_doc,  # [N] int32/int64
    doc_mask,  # [M] bool (unused unless HAS_MASK)
    doc_score,  # [B, M] float32, pre-filled with -inf
    chunk_score,  # [B, N] float32 (unused unless STORE_CHUNK)
    N, M, T, B, C,
    HKV: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, TP: tl.constexpr,
    BB: tl.constexpr, BN: tl.constexpr, NORMALIZED: tl.constexpr, FP8_DOT: tl.constexpr,
    HAS_SCALE: tl.constexpr, HAS_MASK: tl.constexpr, STORE_CHUNK: tl.constexpr,
    DOT_F32: tl.constexpr,
):  # fmt: skip
    """One program per (query column tile, block of BN chunks)."""
    i_c, i_n = tl.program_id(0), tl.program_id(1)
    o_n = i_n * BN + tl.arange(0, BN)
    m_n = o_n < N
    o_c = i_c * BB * TP + tl.arange(0, BB * TP)
    b_acc = tl.zeros([BN, BB * TP], dtype=tl.float32)
    for i_j in range(HKV):
        b_acc += _head_score(qf, q_scale, keys, o_n, m_n, o_c, i_j, C, HKV, D, BD,
                             NORMALIZED, FP8_DOT, DOT_F32)  # fmt: skip
    _block_epilogue(b_acc, o_n, m_n, i_c, key_scale, chunk_doc, doc_mask, doc_score,
                    chunk_score, N, M, T, B, BN, BB, TP, HAS_SCALE, HAS_MASK, STORE_CHUNK)


@triton.autotune(configs=_configs(), key=KEY)
@triton.jit
def route_score_persistent_kernel(
    qf, q_scale, keys, key_scale, chunk_doc, doc_mask, doc_score, chunk_score,
    N, M, T, B, C,
    HKV: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, TP: tl.constexpr,
    BB: tl.constexpr, BN: tl.constexpr, NORMALIZED: tl.constexpr, FP8_DOT: tl.constexpr,
    HAS_SCALE: tl.constexpr, HAS_MASK: tl.constexpr, STORE_CHUNK: tl.constexpr,
    DOT_F32: tl.constexpr,
):  # fmt: skip
    """Same contract; a fixed grid strides over chunk blocks in one flat (block, head) loop,
    so the loads of the next block are in flight during this block's epilogue."""
    i_c, i_p, NP = tl.program_id(0), tl.program_id(1), tl.num_programs(1)
    n_iter = tl.cdiv(tl.cdiv(N, BN) - i_p, NP) * HKV
    o_c = i_c * BB * TP + tl.arange(0, BB * TP)
    b_acc = tl.zeros([BN, BB * TP], dtype=tl.float32)
    for i_it in range(0, n_iter):
        i_j = i_it % HKV
        o_n = (i_p + (i_it // HKV) * NP) * BN + tl.arange(0, BN)
        m_n = o_n < N
        b_acc += _head_score(qf, q_scale, keys, o_n, m_n, o_c, i_j, C, HKV, D, BD,
                             NORMALIZED, FP8_DOT, DOT_F32)  # fmt: skip
        if i_j == HKV - 1:
            _block_epilogue(b_acc, o_n, m_n, i_c, key_scale, chunk_doc, doc_mask, doc_score,
                            chunk_score, N, M, T, B, BN, BB, TP, HAS_SCALE, HAS_MASK,
                            STORE_CHUNK)  # fmt: skip
            b_acc = tl.zeros([BN, BB * TP], dtype=tl.float32)


def fold_query(q: torch.Tensor, HKV: int, TP: int, BB: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, T, HQ, D] -> [HKV, C, D]: per-head normalised, group-summed, / HQ, zero-padded."""
    B, T, HQ, D = q.shape
    C = triton.cdiv(B, BB) * BB * TP
    qf = torch.empty((HKV, C, D), dtype=dtype, device=q.device)
    G = HQ // HKV
    fold_query_kernel[(C, HKV)](
        q.contiguous(), qf, T, B, C, HQ=HQ, G=G, D=D,
        BG=max(2, triton.next_power_of_2(G)), BD=triton.next_power_of_2(D), TP=TP,
    )  # fmt: skip
    return qf


def quantize_query(qf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(kv head, column) e4m3 quantisation of the folded query: (q8, scale `[HKV, C]`)."""
    scale = (qf.float().abs().amax(-1) / FP8_MAX).clamp_min(1e-12)
    return (qf.float() / scale[..., None]).to(torch.float8_e4m3fn), scale


def tile_shape(B: int, T: int) -> tuple[int, int]:
    """TP (padded T) and BB (queries per column tile): 16 to 128 columns (256 when batched)."""
    TP = triton.next_power_of_2(T)
    cols = 256 if B * TP >= 256 else 128
    BB = max(1, cols // TP) if TP < cols else 1
    BB = min(BB, max(triton.next_power_of_2(B), max(1, 16 // TP)))
    return TP, BB


def route_topk_triton(
    q: torch.Tensor,
    keys: torch.Tensor,
    chunk_doc: torch.Tensor,
    num_docs: int,
    k: int,
    doc_mask: torch.Tensor | None,
    key_scale: torch.Tensor | None,
    keys_normalized: bool,
    fp8_dot: bool,
    return_chunk_scores: bool,
    persistent: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    B, T, HQ, D = q.shape
    N, HKV, _ = keys.shape
    TP, BB = tile_shape(B, T)
    fp8_dot = fp8_dot and keys.dtype == torch.float8_e4m3fn
    # fp8 -> fp16 is one native convert on Hopper; fp32 keys would overflow fp16.
    small = keys.element_size() <= 2 and keys.dtype != torch.bfloat16
    qf = fold_query(q, HKV, TP, BB, torch.float16 if small or fp8_dot else torch.bfloat16)
    q_scale = qf
    if fp8_dot:
        qf, q_scale = quantize_query(qf)
    doc_score = torch.full((B, num_docs), float("-inf"), dtype=torch.float32, device=q.device)
    chunk_score = torch.empty((B, N) if return_chunk_scores else (1, 1), device=q.device)
    has_scale = keys_normalized and key_scale is not None
    n_col = triton.cdiv(B, BB)

    n_prog = _programs_per_sm() * _sm_count(q.device) if q.is_cuda else 3

    def grid(meta: dict) -> tuple[int, int]:
        n_blk = triton.cdiv(N, meta["BN"])
        return (n_col, min(n_blk, triton.cdiv(n_prog, n_col)) if persistent else n_blk)

    kernel = route_score_persistent_kernel if persistent else route_score_kernel
    kernel[grid](
        qf, q_scale, keys.contiguous(), key_scale if has_scale else doc_score,
        chunk_doc.contiguous(), doc_mask if doc_mask is not None else doc_score,
        doc_score, chunk_score, N, num_docs, T, B, qf.shape[1],
        HKV=HKV, D=D, BD=max(16, triton.next_power_of_2(D)), TP=TP, BB=BB,
        NORMALIZED=keys_normalized, FP8_DOT=fp8_dot, HAS_SCALE=has_scale,
        HAS_MASK=doc_mask is not None, STORE_CHUNK=return_chunk_scores,
        DOT_F32=interpret_mode(),
    )  # fmt: skip
    ids, val = topk_docs(doc_score, k)
    return ids, val, chunk_score if return_chunk_scores else None
