"""Reference gather: index_select on the host, then one copy to the device."""

from __future__ import annotations

import torch


def gather_to_device_ref(
    src: torch.Tensor, idx: torch.Tensor, device: torch.device | str
) -> torch.Tensor:
    """src `[N, ...]` (host), idx `[L]` int -> `[L, ...]` on `device`."""
    return src.index_select(0, idx.cpu().long()).to(device)
