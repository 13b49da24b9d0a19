"""Triton routing kernels: fold the query, then one pass over the keys (chunk score ->
run-reduced atomic document max), then a top-k over the M document scores.

The key pass is a GEMM `[N, KD] @ [KD, C]` (KD = HKV * D: a chunk's kv heads are one
contiguous row) followed, per block of BN chunks, by an epilogue: max over each query's T
columns (its first q_len[b] with per-query lengths), segmented max over runs of equal
document ids, one atomic max per run.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

from .._dispatch import autotune_off, interpret_mode
from .naive import topk_docs
from .topk import topk_plan, topk_triton

FP8_MAX = 448.0


def _env_flag(name: str, default: str = "1") -> bool:
    return os.environ.get(name, default) != "0"


def _programs_per_sm() -> int:
    """Persistent grid size; a tuning knob for the bench (MSA_ROUTE_PROGRAMS_PER_SM)."""
    return int(os.environ.get("MSA_ROUTE_PROGRAMS_PER_SM", "2"))


def _scale_a(cols: int, fp8_keys: bool) -> bool:
    """Norms on the fly: scale the key tile before the dot (in-place accumulation) for wide
    column tiles, which are compute-bound (B = 4: 2.33 vs 2.82 ms on H100; B = 16 measured
    9.3 vs 8.6 ms, see kernels/NOTES.md), and for fp8 keys, converted in registers anyway
    (1.05 vs 1.13 ms/layer); bf16 keys with narrow tiles stay memory-bound and scale the
    product (1.07 vs 1.36 ms/layer).
    MSA_ROUTE_SCALE_A = 0 / 1 forces it (bench, tests)."""
    env = os.environ.get("MSA_ROUTE_SCALE_A", "auto")
    return (cols >= 256 or fp8_keys) if env == "auto" else env != "0"


@functools.cache
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _configs() -> list[triton.Config]:
    """BN chunks x BK reduction elements per tile; num_warps is fixed by the prune below."""
    if interpret_mode():
        return [triton.Config({"BN": 16, "BK": 32}, num_warps=4)]
    if autotune_off():
        return [triton.Config({"BN": 64, "BK": 128}, num_warps=4, num_stages=2)]
    return [
        triton.Config({"BN": bn, "BK": bk}, num_warps=w, num_stages=s)
        for bn in (64, 128, 256)
        for bk in (64, 128, 256)
        for w in (4, 8)
        for s in (2, 3, 4)
    ]


def _prune(configs: list[triton.Config], named_args: dict, **kw: object) -> list[triton.Config]:
    """Keep tiles that fit: fp32 accumulator <= 128 registers a thread (warps 4 if that
    fits, else 8), a tile row of 128-256 bytes of keys, shared memory <= 200 KB, and 2
    stages only where 3 do not fit."""
    if len(configs) == 1:
        return configs
    force = os.environ.get("MSA_ROUTE_CONFIG")  # bench ablations: "BN,BK,warps,stages"
    if force:
        bn, bk, w, s = (int(v) for v in force.split(","))
        return [triton.Config({"BN": bn, "BK": bk}, num_warps=w, num_stages=s)]
    bc = int(kw["BB"]) * int(kw["TP"])
    ksz = named_args["keys"].element_size()
    qsz = named_args["qf"].element_size()
    keep = []
    for c in configs:
        bn, bk, w, s = c.kwargs["BN"], c.kwargs["BK"], c.num_warps, c.num_stages
        if not kw["NORMALIZED"] and bk != kw["BD"]:
            continue  # norms on the fly: one kv head per tile
        if kw["NORMALIZED"] and bk * ksz not in (128, 256):
            continue
        regs = bn * bc // (32 * w)
        if w != (4 if bn * bc <= 64 * 128 else 8) or regs > 128:
            continue
        stage = bn * bk * ksz + bk * bc * qsz
        if s * stage > 200 * 1024 or (s == 2 and 3 * stage <= 200 * 1024):
            continue
        keep.append(c)
    return keep or configs[:1]


@triton.jit
def fold_query_kernel(
    q,  # [B, T, HQ, D]
    qf,  # [C, HKV * D]: C = padded B * TP columns, zero where t >= T (q_len[b]) or b >= B
    q_scale,  # [C] float32 dequant scale of qf (written only if QUANT)
    doc_score,  # [B * M] float32: filled with -inf here (saves a launch per call)
    counter,  # [B] int32 top-k counters: zeroed here
    q_len,  # [B] int real tokens of each query (read only if HAS_LEN)
    T,
    B,
    n_fill,  # B * M
    HQ: tl.constexpr,
    HKV: tl.constexpr,
    G: tl.constexpr,
    D: tl.constexpr,
    BH: tl.constexpr,
    BG: tl.constexpr,
    BD: tl.constexpr,
    TP: tl.constexpr,
    QUANT: tl.constexpr,
    BBP: tl.constexpr,
    HAS_LEN: tl.constexpr,
):
    """One program per column: qf[c, j*D:(j+1)*D] = sum_g q_hat[b, t, j*G + g] / HQ; with
    QUANT, qf is e4m3 scaled by one amax over all kv heads of the column. The programs also
    fill doc_score with -inf and zero the top-k counters."""
    i_c = tl.program_id(0)
    BF: tl.constexpr = 1024
    for off in range(i_c * BF, n_fill, tl.num_programs(0) * BF):
        o_f = off + tl.arange(0, BF)
        tl.store(doc_score + o_f, tl.full([BF], float("-inf"), tl.float32), mask=o_f < n_fill)
    o_bb = tl.arange(0, BBP)
    n_b = tl.where(i_c == 0, B, 0)  # program 0 only
    tl.store(counter + o_bb, tl.zeros([BBP], tl.int32), mask=o_bb < n_b)
    i_b, i_t = i_c // TP, i_c % TP
    o_h, o_g, o_d = tl.arange(0, BH), tl.arange(0, BG), tl.arange(0, BD)
    if HAS_LEN:  # this query's own length
        n_t = tl.load(q_len + i_b, mask=i_b < B, other=0)
    else:
        n_t = T
    n_g = tl.where((i_t < n_t) & (i_b < B), G, 0)  # padding columns fold to zero
    m_hd = (o_h < HKV)[:, None] & (o_d < D)[None, :]  # [BH, BD]
    m_q = m_hd[:, None, :] & (o_g < n_g)[None, :, None]  # [BH, BG, BD]
    o_r = (i_b * T + i_t).to(tl.int64) * HQ + o_h[:, None] * G + o_g[None, :]  # [BH, BG]
    b_q = tl.load(q + o_r[:, :, None] * D + o_d[None, None, :], mask=m_q, other=0.0)
    b_q = b_q.to(tl.float32)
    b_n = tl.sqrt(tl.sum(b_q * b_q, axis=2))  # [BH, BG]
    b_f = tl.sum(b_q / tl.maximum(b_n, 1e-6)[:, :, None], axis=1) / HQ  # [BH, BD]
    if QUANT:
        b_s = tl.maximum(tl.max(tl.max(tl.abs(b_f), axis=1), axis=0) / 448.0, 1e-12)  # FP8_MAX
        tl.store(q_scale + i_c, b_s)
        b_o = (b_f / b_s).to(qf.dtype.element_ty, fp_downcast_rounding="rtne")
    else:
        b_o = b_f.to(qf.dtype.element_ty)
    p_f = qf + i_c.to(tl.int64) * (HKV * D) + o_h[:, None] * D + o_d[None, :]
    tl.store(p_f, b_o, mask=m_hd)


@triton.jit
def _tile_dot(acc, qf, keys, o_n, m_n, o_c, i_k, HKV: tl.constexpr, D: tl.constexpr,
              BD: tl.constexpr, BK: tl.constexpr, NORMALIZED: tl.constexpr,
              FP8_DOT: tl.constexpr, SCALE_A: tl.constexpr,
              DOT_F32: tl.constexpr):  # fmt: skip
    """acc [BN, BC] += keys[o_n, tile i_k] @ qf[o_c, tile i_k]^T. NORMALIZED: tile i_k is
    BK contiguous elements of the flat HKV * D row (accumulated in place by the tensor
    core); else it is kv head i_k, scaled by its 1 / ||k|| per chunk (SCALE_A: the key
    tile is scaled before the dot, so that it accumulates in place too)."""
    KD: tl.constexpr = HKV * D
    if NORMALIZED:
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < KD
    else:
        o_d = tl.arange(0, BD)
        o_k = i_k * D + o_d
        m_k = o_d < D
    b_k = tl.load(keys + o_n[:, None].to(tl.int64) * KD + o_k[None, :],
                  mask=m_n[:, None] & m_k[None, :], other=0.0)  # [BN, BK]  # fmt: skip
    b_q = tl.load(qf + o_c[None, :].to(tl.int64) * KD + o_k[:, None], mask=m_k[:, None],
                  other=0.0)  # [BK, BC]  # fmt: skip
    if DOT_F32:  # the CPU interpreter's bf16 dot is wrong (triton 3.9)
        b_q = b_q.to(tl.float32)
    if NORMALIZED:
        acc = tl.dot(b_k.to(b_q.dtype), b_q, acc)
    else:
        b_kf = b_k.to(tl.float32)
        b_inv = 1.0 / tl.maximum(tl.sqrt(tl.sum(b_kf * b_kf, axis=1)), 1e-6)  # naive.EPS
        if SCALE_A and not FP8_DOT:  # unit keys in registers: the dot accumulates in place
            acc = tl.dot((b_kf * b_inv[:, None]).to(b_q.dtype), b_q, acc)
        else:  # e4m3 has too few bits for re-quantised unit keys: scale the product
            acc += tl.dot(b_k.to(b_q.dtype), b_q) * b_inv[:, None]
    return acc


@triton.jit
def _seg_max(f1, v1, f2, v2):
    """Segmented max scan: f = 1 starts a new run."""
    return f1 | f2, tl.where(f2 != 0, v2, tl.maximum(v1, v2))


@triton.jit
def _reduce_tokens(acc, T, BN: tl.constexpr, BB: tl.constexpr, TP: tl.constexpr,
                   QTOP: tl.constexpr):  # fmt: skip
    """acc [BN, BB * TP] (-inf past T) -> [BN, BB]: the max over each query's tokens, or
    (QTOP > 1) the mean of its min(QTOP, T) best tokens (naive.reduce_tokens): QTOP rounds
    of max, each removing one argmax, so ties count as often as torch.topk counts them.
    T: the scalar length of every query, or `[1, BB]` lengths (q_len)."""
    x = tl.reshape(acc, [BN, BB, TP])
    if QTOP == 1:
        return tl.max(x, axis=2)
    o_t = tl.arange(0, TP)
    tot = tl.zeros([BN, BB], dtype=tl.float32)
    for i in tl.static_range(QTOP):
        tot += tl.where(i < T, tl.max(x, axis=2), 0.0)
        x = tl.where(o_t[None, None, :] == tl.argmax(x, axis=2)[:, :, None], float("-inf"), x)
    return tot / tl.minimum(T, QTOP).to(tl.float32)


@triton.jit
def _block_epilogue(acc, o_n, m_n, i_c, q_scale, key_scale, chunk_doc, doc_mask, doc_score,
                    chunk_score, q_len, N, M, T, B, BN: tl.constexpr, BB: tl.constexpr,
                    TP: tl.constexpr, FP8_DOT: tl.constexpr, HAS_SCALE: tl.constexpr,
                    HAS_MASK: tl.constexpr, STORE_CHUNK: tl.constexpr,
                    PRE_REDUCE: tl.constexpr, RELAXED: tl.constexpr,
                    QTOP: tl.constexpr, HAS_LEN: tl.constexpr):  # fmt: skip
    """acc [BN, BB * TP] -> max (or top-QTOP mean) over each query's tokens (the first T, or
    q_len[b] with HAS_LEN) -> one atomic max per run of equal document ids (PRE_REDUCE; else
    one per chunk) into doc_score [B, M]."""
    o_c = i_c * BB * TP + tl.arange(0, BB * TP)
    if FP8_DOT:  # per-column dequant scale of the e4m3 query
        acc = acc * tl.load(q_scale + o_c)[None, :]
    if HAS_SCALE:  # pre-normalised fp8 keys: k_hat = k8 * scale (it cancels otherwise)
        acc = acc * tl.load(key_scale + o_n, mask=m_n, other=0.0)[:, None]
    o_b = i_c * BB + tl.arange(0, BB)
    m_b = o_b < B
    if HAS_LEN:  # per-query lengths: [BB * TP] of each column's query, [1, BB] per query
        n_c = tl.load(q_len + o_c // TP, mask=o_c // TP < B, other=0)
        # at least 1: a query of no real token averages one -inf "best" (naive: -inf)
        n_t = tl.maximum(tl.load(q_len + o_b, mask=m_b, other=1), 1)[None, :]
    else:
        n_c = T
        n_t = T
    acc = tl.where(((o_c % TP) < n_c)[None, :], acc, float("-inf"))
    b_sc = _reduce_tokens(acc, n_t, BN, BB, TP, QTOP)  # [BN, BB]
    if STORE_CHUNK:
        p_cs = chunk_score + o_b[None, :].to(tl.int64) * N + o_n[:, None]
        tl.store(p_cs, b_sc, mask=m_n[:, None] & m_b[None, :])
    b_doc = tl.load(chunk_doc + o_n, mask=m_n, other=0).to(tl.int64)
    m_ok = m_n
    if PRE_REDUCE:  # runs of one document are contiguous in the store: reduce them here
        o_r = tl.arange(0, BN)
        b_prev = tl.load(chunk_doc + o_n - 1, mask=m_n & (o_r > 0), other=-1).to(tl.int64)
        b_next = tl.load(chunk_doc + o_n + 1, mask=(o_n + 1 < N) & (o_r < BN - 1), other=-1)
        b_head = tl.broadcast_to((b_prev != b_doc).to(tl.int32)[:, None], [BN, BB])
        _, b_sc = tl.associative_scan((b_head, b_sc), 0, _seg_max)  # max from run start
        m_ok = m_ok & (b_next.to(tl.int64) != b_doc)  # run ends: carry the run's max
    if HAS_MASK:
        m_ok = m_ok & (tl.load(doc_mask + b_doc, mask=m_ok, other=0) != 0)
    p_ds = doc_score + o_b[None, :].to(tl.int64) * M + b_doc[:, None]
    if RELAXED:  # only the final max matters: no ordering with other memory operations
        tl.atomic_max(p_ds, b_sc, mask=m_ok[:, None] & m_b[None, :], sem="relaxed")
    else:
        tl.atomic_max(p_ds, b_sc, mask=m_ok[:, None] & m_b[None, :])


KEY = ["HKV", "D", "TP", "BB", "NORMALIZED", "FP8_DOT", "PRE_REDUCE", "RELAXED", "SCALE_A",
       "QTOP"]


@triton.autotune(configs=_configs(), key=KEY, prune_configs_by={"early_config_prune": _prune})
@triton.jit
def route_score_kernel(
    qf,  # [C, HKV * D] folded, normalised queries (C = n_col * BB * TP columns)
    q_scale,  # [C] float32 dequant scale of qf (unused unless FP8_DOT)
    keys,  # [N, HKV, D]
    key_scale,  # [N] float32 (unused unless HAS_SCALE)
    chunk_doc,  # [N] int32/int64
    doc_mask,  # [M] bool (unused unless HAS_MASK)
    doc_score,  # [B, M] float32, pre-filled with -inf
    chunk_score,  # [B, N] float32 (unused unless STORE_CHUNK)
    q_len,  # [B] int real tokens of each query (unused unless HAS_LEN)
    N, M, T, B, n_col,
    HKV: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, TP: tl.constexpr,
    BB: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, NORMALIZED: tl.constexpr,
    FP8_DOT: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_MASK: tl.constexpr,
    STORE_CHUNK: tl.constexpr, PRE_REDUCE: tl.constexpr, RELAXED: tl.constexpr,
    SCALE_A: tl.constexpr, DOT_F32: tl.constexpr, QTOP: tl.constexpr, HAS_LEN: tl.constexpr,
):  # fmt: skip
    """One program per (query column tile, block of BN chunks)."""
    NK: tl.constexpr = (HKV * D + BK - 1) // BK if NORMALIZED else HKV
    i_c, i_n = tl.program_id(0), tl.program_id(1)
    o_n = i_n * BN + tl.arange(0, BN)
    m_n = o_n < N
    o_c = i_c * BB * TP + tl.arange(0, BB * TP)
    acc = tl.zeros([BN, BB * TP], dtype=tl.float32)
    for i_k in range(NK):
        acc = _tile_dot(acc, qf, keys, o_n, m_n, o_c, i_k, HKV, D, BD, BK, NORMALIZED, FP8_DOT,
                        SCALE_A, DOT_F32)  # fmt: skip
    _block_epilogue(acc, o_n, m_n, i_c, q_scale, key_scale, chunk_doc, doc_mask, doc_score,
                    chunk_score, q_len, N, M, T, B, BN, BB, TP, FP8_DOT, HAS_SCALE, HAS_MASK,
                    STORE_CHUNK, PRE_REDUCE, RELAXED, QTOP, HAS_LEN)  # fmt: skip


@triton.autotune(configs=_configs(), key=KEY, prune_configs_by={"early_config_prune": _prune})
@triton.jit
def route_score_persistent_kernel(
    qf, q_scale, keys, key_scale, chunk_doc, doc_mask, doc_score, chunk_score, q_len,
    N, M, T, B, n_col,
    HKV: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, TP: tl.constexpr,
    BB: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, NORMALIZED: tl.constexpr,
    FP8_DOT: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_MASK: tl.constexpr,
    STORE_CHUNK: tl.constexpr, PRE_REDUCE: tl.constexpr, RELAXED: tl.constexpr,
    SCALE_A: tl.constexpr, DOT_F32: tl.constexpr, QTOP: tl.constexpr, HAS_LEN: tl.constexpr,
):  # fmt: skip
    """Same contract; a fixed 1-D grid strides over work items (chunk block, column tile),
    column tile fastest (so programs running side by side share a key block in L2), in one
    flat (item, k tile) loop: the loads of the next item are in flight during this item's
    epilogue (the Triton persistent-matmul pattern)."""
    NK: tl.constexpr = (HKV * D + BK - 1) // BK if NORMALIZED else HKV
    i_p, NP = tl.program_id(0), tl.num_programs(0)
    n_iter = tl.cdiv(tl.cdiv(N, BN) * n_col - i_p, NP) * NK
    acc = tl.zeros([BN, BB * TP], dtype=tl.float32)
    for i_it in range(0, n_iter):
        i_k = i_it % NK
        i_w = i_p + (i_it // NK) * NP
        i_n, i_c = i_w // n_col, i_w % n_col
        o_n = i_n * BN + tl.arange(0, BN)
        m_n = o_n < N
        o_c = i_c * BB * TP + tl.arange(0, BB * TP)
        acc = _tile_dot(acc, qf, keys, o_n, m_n, o_c, i_k, HKV, D, BD, BK, NORMALIZED, FP8_DOT,
                        SCALE_A, DOT_F32)  # fmt: skip
        if i_k == NK - 1:
            _block_epilogue(acc, o_n, m_n, i_c, q_scale, key_scale, chunk_doc, doc_mask,
                            doc_score, chunk_score, q_len, N, M, T, B, BN, BB, TP, FP8_DOT,
                            HAS_SCALE, HAS_MASK, STORE_CHUNK, PRE_REDUCE, RELAXED,
                            QTOP, HAS_LEN)  # fmt: skip
            acc = tl.zeros([BN, BB * TP], dtype=tl.float32)


def fold_query(
    q: torch.Tensor, HKV: int, TP: int, BB: int, dtype: torch.dtype, quant: bool,
    doc_score: torch.Tensor, counter: torch.Tensor, q_len: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """[B, T, HQ, D] -> (qf [C, HKV * D], scale [C]): per-head normalised, group-summed, / HQ,
    zero-padded columns (also the tokens at t >= q_len[b], q_len `[B]` int or None). quant:
    qf is e4m3 with a per-column scale (else scale is unset). Also fills doc_score [B, M]
    with -inf and zeroes counter [B]."""
    B, T, HQ, D = q.shape
    C = triton.cdiv(B, BB) * BB * TP
    # The CPU interpreter rounds fp32 -> e4m3 wrongly (triton 3.9): it writes the scaled
    # fp32 query there and torch casts it.
    f8 = torch.float32 if interpret_mode() else torch.float8_e4m3fn
    qf = torch.empty((C, HKV * D), dtype=f8 if quant else dtype, device=q.device)
    q_scale = torch.empty((C,), dtype=torch.float32, device=q.device)
    G = HQ // HKV
    fold_query_kernel[(C,)](
        q.contiguous(), qf, q_scale, doc_score, counter, counter if q_len is None else q_len,
        T, B, doc_score.numel(), HQ=HQ, HKV=HKV, G=G, D=D, BH=triton.next_power_of_2(HKV),
        BG=max(2, triton.next_power_of_2(G)), BD=triton.next_power_of_2(D), TP=TP,
        QUANT=quant, BBP=triton.next_power_of_2(B), HAS_LEN=q_len is not None,
    )  # fmt: skip
    return qf.to(torch.float8_e4m3fn) if quant else qf, q_scale


def tile_shape(B: int, T: int) -> tuple[int, int]:
    """TP (padded T) and BB (queries per column tile): 16 to 128 columns (256 when batched;
    MSA_ROUTE_BATCH_COLS, a bench knob)."""
    TP = triton.next_power_of_2(T)
    wide = int(os.environ.get("MSA_ROUTE_BATCH_COLS", "256"))
    cols = wide if B * TP >= wide else 128
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
    top_tokens: int = 1,
    q_len: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """q [B, T, HQ, D], keys [N, HKV, D] -> (ids [B, k], scores [B, k], chunk scores [B, N]
    or None). q_len: `[B]` int real tokens of each query (the rest is padding), None = T.
    Bench knobs (env): MSA_ROUTE_PROGRAMS_PER_SM, MSA_ROUTE_PRE_REDUCE,
    MSA_ROUTE_RELAXED, MSA_ROUTE_TRITON_TOPK (0 = off; default 1), MSA_ROUTE_SCALE_A (0 / 1;
    default by tile width), MSA_ROUTE_BATCH_COLS."""
    B, T, HQ, D = q.shape
    N, HKV, _ = keys.shape
    TP, BB = tile_shape(B, T)
    fp8_dot = fp8_dot and keys.dtype == torch.float8_e4m3fn
    # fp8 -> fp16 is one native convert on Hopper; fp32 keys would overflow fp16.
    small = keys.element_size() <= 2 and keys.dtype != torch.bfloat16
    doc_score = torch.empty((B, num_docs), dtype=torch.float32, device=q.device)
    counter = torch.empty((B,), dtype=torch.int32, device=q.device)
    if q_len is not None:
        q_len = q_len.to(device=q.device, dtype=torch.int32).contiguous()
    qf, q_scale = fold_query(q, HKV, TP, BB, torch.float16 if small else torch.bfloat16,
                             fp8_dot, doc_score, counter, q_len)  # fmt: skip
    chunk_score = torch.empty((B, N) if return_chunk_scores else (1, 1), device=q.device)
    has_scale = keys_normalized and key_scale is not None
    n_col = triton.cdiv(B, BB)

    n_prog = _programs_per_sm() * _sm_count(q.device) if q.is_cuda else 3

    def grid(meta: dict) -> tuple[int, ...]:
        n_blk = triton.cdiv(N, meta["BN"])
        return (min(n_blk * n_col, n_prog),) if persistent else (n_col, n_blk)

    kernel = route_score_persistent_kernel if persistent else route_score_kernel
    kernel[grid](
        qf, q_scale, keys.contiguous(), key_scale if has_scale else doc_score,
        chunk_doc.contiguous(), doc_mask if doc_mask is not None else doc_score,
        doc_score, chunk_score, counter if q_len is None else q_len, N, num_docs, T, B, n_col,
        HKV=HKV, D=D, BD=max(16, triton.next_power_of_2(D)), TP=TP, BB=BB,
        NORMALIZED=keys_normalized, FP8_DOT=fp8_dot, HAS_SCALE=has_scale,
        HAS_MASK=doc_mask is not None, STORE_CHUNK=return_chunk_scores,
        PRE_REDUCE=_env_flag("MSA_ROUTE_PRE_REDUCE"), RELAXED=_env_flag("MSA_ROUTE_RELAXED"),
        SCALE_A=_scale_a(BB * TP, keys.element_size() == 1),
        DOT_F32=interpret_mode(), QTOP=top_tokens, HAS_LEN=q_len is not None,
    )  # fmt: skip
    plan = topk_plan(num_docs, k)
    if plan is None or not _env_flag("MSA_ROUTE_TRITON_TOPK"):
        ids, val = topk_docs(doc_score, k)
    else:
        ids, val = topk_triton(doc_score, k, counter, plan)
    return ids, val, chunk_score if return_chunk_scores else None
