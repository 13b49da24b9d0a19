"""Backend choice shared by the ops: Triton on CUDA (or under TRITON_INTERPRET=1), else torch."""

from __future__ import annotations

import functools
import os

import torch


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpret_mode() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def autotune_off() -> bool:
    """One default config per kernel: the interpreter, or MSA_KERNELS_NO_AUTOTUNE=1 (GPU tests)."""
    return interpret_mode() or os.environ.get("MSA_KERNELS_NO_AUTOTUNE", "0") == "1"


def use_triton(x: torch.Tensor) -> bool:
    """True when `x` should go through the Triton kernels."""
    if not triton_available():
        return False
    return x.is_cuda or (interpret_mode() and x.device.type == "cpu")
