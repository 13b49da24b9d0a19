"""Triton memory attention: split-KV flash attention over [paged memory ; causal local]."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl

from .._dispatch import autotune_off, interpret_mode
from .._relaunch import Relauncher

LOG2E = 1.4426950408889634


def _configs() -> list[triton.Config]:
    if interpret_mode():
        return [triton.Config({"BS": 16}, num_warps=4)]
    if autotune_off():
        return [triton.Config({"BS": 64}, num_warps=4, num_stages=2)]
    return [
        triton.Config({"BS": bs}, num_warps=w, num_stages=s)
        for bs in (64, 128)
        for w in (4, 8)
        for s in (2, 3)
    ]


@triton.jit
def _online_step(b_q, b_kt, b_v, m_s, b_m, b_l, b_acc, qk_scale, DOT_F32: tl.constexpr):
    if DOT_F32:  # the CPU interpreter's bf16 dot is wrong (triton 3.9)
        b_q, b_kt, b_v = b_q.to(tl.float32), b_kt.to(tl.float32), b_v.to(tl.float32)
    # [BM, BD] @ [BD, BS] -> [BM, BS]
    b_s = tl.dot(b_q, b_kt) * qk_scale
    b_s = tl.where(m_s, b_s, float("-inf"))
    b_mn = tl.maximum(b_m, tl.max(b_s, 1))
    b_p = tl.exp2(b_s - b_mn[:, None])
    b_alpha = tl.exp2(b_m - b_mn)
    b_l = b_l * b_alpha + tl.sum(b_p, 1)
    # [BM, BS] @ [BS, BD] -> [BM, BD]
    b_acc = b_acc * b_alpha[:, None] + tl.dot(b_p.to(b_v.dtype), b_v)
    return b_mn, b_l, b_acc


@triton.autotune(configs=_configs(), key=["D", "G", "BM", "PAGE", "ONE_SPLIT"])
@triton.jit
def memory_attn_kernel(
    q,  # [T, HQ, D], any token / head strides, unit stride in D
    k_loc,  # [TK, HKV, D], likewise
    v_loc,  # [TK, HKV, D], likewise
    k_pool,  # [P, PAGE, HKV, D]
    v_pool,  # [P, PAGE, HKV, D]
    mem_idx,  # [L] page ids
    page_len,  # [L] valid tokens per page (unused unless HAS_LEN)
    o,  # [T, HQ, D] (NSPLIT == 1) or [NSPLIT, T, HQ, D] float32
    lse,  # [NSPLIT, T, HQ] float32, log2 units (unused when NSPLIT == 1)
    qk_scale,
    sq_t,  # q's token and head strides (elements)
    sq_h,
    sk_t,  # k_loc's
    sk_h,
    sv_t,  # v_loc's
    sv_h,
    T,
    TK,
    L,
    NSPLIT,
    HKV: tl.constexpr,
    G: tl.constexpr,
    D: tl.constexpr,
    BD: tl.constexpr,
    PAGE: tl.constexpr,
    BM: tl.constexpr,
    BS: tl.constexpr,
    ONE_SPLIT: tl.constexpr,
    HAS_LEN: tl.constexpr,
    DOT_F32: tl.constexpr,
):
    i_m, i_h, i_sp = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    HQ: tl.constexpr = HKV * G
    o_r = i_m * BM + tl.arange(0, BM)  # row = (token t, head g of the group)
    o_t = o_r // G
    o_hq = i_h * G + o_r % G
    m_r = o_t < T
    o_d = tl.arange(0, BD)
    m_d = o_d < D
    p_q = q + o_t[:, None].to(tl.int64) * sq_t + o_hq[:, None] * sq_h + o_d[None, :]
    b_q = tl.load(p_q, mask=m_r[:, None] & m_d[None, :], other=0.0)

    SM = L * PAGE
    NBM = tl.cdiv(SM, BS)
    t_max = tl.minimum((i_m * BM + BM - 1) // G, T - 1)
    NB = NBM + (TK - T + t_max) // BS + 1  # causal: skip local blocks past the last query
    BPS = tl.cdiv(NBM + tl.cdiv(TK, BS), NSPLIT)
    i_b0 = i_sp * BPS
    i_b1 = tl.minimum(i_b0 + BPS, NB)

    b_m = tl.full([BM], -1e30, dtype=tl.float32)
    b_l = tl.zeros([BM], dtype=tl.float32)
    b_acc = tl.zeros([BM, BD], dtype=tl.float32)
    for i_b in range(i_b0, tl.minimum(i_b1, NBM)):
        o_s = i_b * BS + tl.arange(0, BS)
        m_s = o_s < SM
        b_pg = tl.load(mem_idx + o_s // PAGE, mask=m_s, other=0).to(tl.int64)
        if HAS_LEN:
            m_s = m_s & (o_s % PAGE < tl.load(page_len + o_s // PAGE, mask=m_s, other=0))
        o_kv = ((b_pg * PAGE + o_s % PAGE) * HKV + i_h) * D
        b_kt = tl.load(k_pool + o_kv[None, :] + o_d[:, None], mask=m_s[None, :] & m_d[:, None])
        b_v = tl.load(v_pool + o_kv[:, None] + o_d[None, :], mask=m_s[:, None] & m_d[None, :])
        b_m, b_l, b_acc = _online_step(
            b_q, b_kt, b_v, m_s[None, :], b_m, b_l, b_acc, qk_scale, DOT_F32
        )
    for i_b in range(tl.maximum(i_b0, NBM), i_b1):
        o_s = (i_b - NBM) * BS + tl.arange(0, BS)
        m_s = (o_s[None, :] <= (TK - T + o_t)[:, None]) & (o_s < TK)[None, :]
        o_k = o_s.to(tl.int64) * sk_t + i_h * sk_h
        o_v = o_s.to(tl.int64) * sv_t + i_h * sv_h
        m_k = o_s < TK
        b_kt = tl.load(k_loc + o_k[None, :] + o_d[:, None], mask=m_k[None, :] & m_d[:, None])
        b_v = tl.load(v_loc + o_v[:, None] + o_d[None, :], mask=m_k[:, None] & m_d[None, :])
        b_m, b_l, b_acc = _online_step(b_q, b_kt, b_v, m_s, b_m, b_l, b_acc, qk_scale, DOT_F32)

    b_o = b_acc / tl.maximum(b_l, 1e-30)[:, None]
    o_out = (o_t[:, None].to(tl.int64) * HQ + o_hq[:, None]) * D + o_d[None, :]
    m_out = m_r[:, None] & m_d[None, :]
    if ONE_SPLIT:
        tl.store(o + o_out, b_o.to(o.dtype.element_ty), mask=m_out)
    else:
        tl.store(o + i_sp * T * HQ * D + o_out, b_o, mask=m_out)
        b_lse = tl.where(b_l > 0, b_m + tl.log2(tl.maximum(b_l, 1e-30)), float("-inf"))
        p_lse = lse + i_sp * T * HQ + o_t * HQ + o_hq
        tl.store(p_lse, b_lse, mask=m_r)


@triton.jit
def combine_kernel(
    o_part,  # [NSPLIT, T*HQ, D] float32
    lse,  # [NSPLIT, T*HQ] float32 (log2 units)
    o,  # [T*HQ, D]
    R,
    NSPLIT,
    D: tl.constexpr,
    BD: tl.constexpr,
    BSP: tl.constexpr,
):
    i_r = tl.program_id(0).to(tl.int64)
    o_sp = tl.arange(0, BSP)
    m_sp = o_sp < NSPLIT
    o_d = tl.arange(0, BD)
    m_d = o_d < D
    b_lse = tl.load(lse + o_sp * R + i_r, mask=m_sp, other=float("-inf"))
    b_w = tl.exp2(b_lse - tl.max(b_lse, 0))
    b_w = b_w / tl.sum(b_w, 0)
    p_o = o_part + (o_sp[:, None] * R + i_r) * D + o_d[None, :]
    b_o = tl.load(p_o, mask=m_sp[:, None] & m_d[None, :], other=0.0)
    b_out = tl.sum(b_o * b_w[:, None], 0)
    tl.store(o + i_r * D + o_d, b_out.to(o.dtype.element_ty), mask=m_d)


@functools.cache
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _num_splits(n_programs: int, n_blocks: int, device: torch.device) -> int:
    if device.type != "cuda":
        return min(2, n_blocks)  # exercise the split path in the interpreter
    sms = _sm_count(device)
    return max(1, min(triton.cdiv(4 * sms, n_programs), triton.cdiv(n_blocks, 2), 256))


@dataclass(frozen=True)
class _Plan:
    """One launch shape's grid and constants, worked out once (a prefill calls the kernel
    once per layer with the same shape: the Python around the launch cost as much as the
    launch itself; docs/answering.md, "Time to first token")."""

    grid: tuple[int, int, int]  # (query tiles, kv heads, splits)
    consts: dict[str, Any]  # the kernel's constexprs
    bd: int
    bsp: int  # splits rounded up to a power of two, for the combine
    key: tuple[Any, ...]  # consts as a hashable key (for the tuned config)


@functools.lru_cache(maxsize=512)
def _plan(T: int, TK: int, HQ: int, HKV: int, D: int, PAGE: int, L: int, has_len: bool,
          num_splits: int | None, device: torch.device) -> _Plan:
    G = HQ // HKV
    BM = 16 if T * G <= 16 else (64 if T * G <= 64 else 128)
    BD = max(16, triton.next_power_of_2(D))
    n_m = triton.cdiv(T * G, BM)
    NS = num_splits or _num_splits(n_m * HKV, triton.cdiv(L * PAGE + TK, 64), device)
    consts = {"HKV": HKV, "G": G, "D": D, "BD": BD, "PAGE": PAGE, "BM": BM,
              "ONE_SPLIT": NS == 1, "HAS_LEN": has_len, "DOT_F32": interpret_mode()}
    return _Plan((n_m, HKV, NS), consts, BD, triton.next_power_of_2(NS),
                 tuple(consts.items()))


# launch constants per (constexprs, dtypes): the autotuned config's merged in once known;
# after that, launches go to the compiled kernel directly (``Relauncher``)
_tuned: dict[tuple[Any, ...], tuple[dict[str, Any], tuple[Any, ...]]] = {}
_attn = Relauncher(memory_attn_kernel.fn)
_combine = Relauncher(combine_kernel)


def _launch(plan: _Plan, args: tuple[Any, ...], dtypes: tuple[torch.dtype, ...]) -> None:
    key = (plan.key, dtypes)
    ready = _tuned.get(key)
    if ready is None or interpret_mode():
        memory_attn_kernel[plan.grid](*args, **plan.consts)
        best = getattr(memory_attn_kernel, "best_config", None)
        if best is not None and best.pre_hook is None:
            consts = {**plan.consts, **best.all_kwargs()}
            _tuned[key] = (consts, (key, tuple(sorted(best.all_kwargs().items()))))
        return
    _attn(plan.grid, args, *ready)


Scratch = dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]]


def _split_buffers(NS: int, T: int, HQ: int, D: int, device: torch.device,
                   scratch: Scratch | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The split-KV partial outputs ``[NS, T, HQ, D]`` and log-sum-exps ``[NS, T, HQ]``
    (float32), kept in ``scratch`` for the next call of this shape when given."""
    key = (NS, T, HQ, D, device)
    if scratch is not None and key in scratch:
        return scratch[key]
    bufs = (torch.empty((NS, T, HQ, D), device=device), torch.empty((NS, T, HQ), device=device))
    if scratch is not None:
        scratch[key] = bufs
    return bufs


def memory_attention_triton(
    q: torch.Tensor,
    k_local: torch.Tensor,
    v_local: torch.Tensor,
    k_pool: torch.Tensor,
    v_pool: torch.Tensor,
    mem_idx: torch.Tensor,
    scale: float,
    page_len: torch.Tensor | None,
    num_splits: int | None,
    heads_first: bool = False,
    scratch: Scratch | None = None,
) -> torch.Tensor:
    """``memory_attention`` on the kernel; q/k/v ``[T, H, D]``, or ``[H, T, D]`` when
    ``heads_first`` (read through their strides either way)."""
    t, h = (1, 0) if heads_first else (0, 1)
    T, HQ, D = q.shape[t], q.shape[h], q.shape[2]
    TK, HKV = k_local.shape[t], k_local.shape[h]
    L = mem_idx.numel()
    plan = _plan(T, TK, HQ, HKV, D, k_pool.shape[1], L, page_len is not None, num_splits,
                 q.device)
    NS = plan.grid[2]
    out = torch.empty((T, HQ, D), dtype=q.dtype, device=q.device)
    o_buf, lse = (out, out) if NS == 1 else _split_buffers(NS, T, HQ, D, q.device, scratch)
    sq, sk, sv = q.stride(), k_local.stride(), v_local.stride()
    args = (q, k_local, v_local, k_pool, v_pool, mem_idx,
            page_len if page_len is not None else mem_idx, o_buf, lse, scale * LOG2E,
            sq[t], sq[h], sk[t], sk[h], sv[t], sv[h], T, TK, L, NS)  # fmt: skip
    _launch(plan, args, (q.dtype, k_local.dtype, k_pool.dtype, mem_idx.dtype))
    if NS > 1:
        consts = {"D": D, "BD": plan.bd, "BSP": plan.bsp}
        _combine((T * HQ,), (o_buf, lse, out, T * HQ, NS), consts, (D, plan.bd, plan.bsp))
    return out
