"""gather_to_device: selected host rows (chunks) into one device buffer, one launch."""

from __future__ import annotations

import torch

from .._dispatch import interpret_mode, triton_available
from .naive import gather_to_device_ref


def gather_to_device(
    src: torch.Tensor, idx: torch.Tensor, device: torch.device | str | None = None
) -> torch.Tensor:
    """Gather rows of a (pinned) host tensor into a new device tensor.

    On CUDA with a pinned `src`, one Triton kernel reads the rows straight from host memory
    over UVA (zero-copy, no staging buffer, no copy per chunk). Under TRITON_INTERPRET=1
    with a CPU `device`, the same kernel runs in the interpreter; otherwise the reference
    (`index_select` then one copy) runs.

    Args:
        src: `[N, ...]` host tensor, one row per chunk (pinned for the zero-copy path).
        idx: `[L]` int row ids (host or device).
        device: target device (default: the current CUDA device, else CPU).

    Returns:
        `[L, ...]` tensor on `device`, `out[i] = src[idx[i]]`.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    zero_copy = device.type == "cuda" and src.is_pinned()
    interp = device.type == "cpu" and interpret_mode()
    if triton_available() and src.is_contiguous() and (zero_copy or interp):
        from .parallel import gather_to_device_triton

        return gather_to_device_triton(src, idx, device)
    return gather_to_device_ref(src, idx, device)


__all__ = ["gather_to_device"]
