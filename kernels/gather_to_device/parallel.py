"""Zero-copy gather: a Triton kernel reads selected rows of pinned host memory over UVA."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 4096  # words per program: 16 KiB of int32


@triton.jit
def gather_rows_kernel(
    src,  # [N, W] words, pinned host memory (device-mapped) or device memory
    idx,  # [L] int64 row ids
    dst,  # [L, W] words
    W,
    BW: tl.constexpr,
):
    i_l, i_w = tl.program_id(0).to(tl.int64), tl.program_id(1)
    o_w = i_w * BW + tl.arange(0, BW)
    m_w = o_w < W
    i_row = tl.load(idx + i_l)
    b_x = tl.load(src + i_row * W + o_w, mask=m_w)
    tl.store(dst + i_l * W + o_w, b_x, mask=m_w)


def _words(x: torch.Tensor) -> torch.Tensor:
    """View `[N, ...]` as `[N, W]` of the widest int (4, 2 or 1 bytes) dividing a row."""
    rows = x.reshape(x.shape[0], -1).view(torch.uint8)
    nbytes = rows.shape[1]
    dt = torch.int32 if nbytes % 4 == 0 else (torch.int16 if nbytes % 2 == 0 else torch.uint8)
    return rows.view(dt)


def gather_to_device_triton(
    src: torch.Tensor, idx: torch.Tensor, device: torch.device
) -> torch.Tensor:
    out = torch.empty((idx.numel(), *src.shape[1:]), dtype=src.dtype, device=device)
    if idx.numel() == 0:
        return out
    s_w, o_w = _words(src.contiguous()), _words(out)
    W = s_w.shape[1]
    bw = min(BLOCK, triton.next_power_of_2(W))
    idx_d = idx.to(device=device, dtype=torch.int64, non_blocking=True)
    gather_rows_kernel[(idx.numel(), triton.cdiv(W, bw))](
        s_w, idx_d, o_w, W, BW=bw, num_warps=8 if bw >= 1024 else 4
    )
    return out
