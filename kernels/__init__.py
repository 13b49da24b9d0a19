"""Kernels for MSA: tensors in, tensors out; no config, no model.

One folder per op (`naive.py` reference, `parallel.py` Triton, `README.md` derivation).
"""

from .gather_to_device import gather_to_device
from .memory_attention import memory_attention
from .route_topk import route_topk

__all__ = ["gather_to_device", "memory_attention", "route_topk"]
