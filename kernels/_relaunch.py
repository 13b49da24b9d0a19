"""Launching a Triton kernel again without the JIT's per-launch dispatch.

``fn[grid](*args, **consts)`` binds every argument, works out its specialisation, reads
Triton's settings and looks the compiled kernel up, on every launch. A prefill calls the
memory attention once per layer with one shape, and on an H200 host that dispatch was a
large part of a layer's host time (docs/answering.md, "Time to first token"). A
:class:`Relauncher` keeps the compiled kernel that the first JIT launch of each
(constants, device, specialisation) returns, and later launches call it directly
(``CompiledKernel[grid](*all_args)``, the launch Triton itself makes).

The specialisation is worked out here as Triton does it: each tensor's dtype and whether its
address is 16-byte aligned, and whether each int is 1, a multiple of 16 or wider than 32
bits. Set ``MSA_TRITON_RELAUNCH=0`` to go through the JIT on every launch.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from ._dispatch import interpret_mode

_I32 = 2**31


def relaunch_enabled() -> bool:
    return os.environ.get("MSA_TRITON_RELAUNCH", "1") != "0" and not interpret_mode()


def specialisation(args: Sequence[Any]) -> tuple[Any, ...]:
    """What Triton specialises a kernel on, per runtime argument."""
    return tuple(
        (a.dtype, a.data_ptr() % 16 == 0) if isinstance(a, torch.Tensor)
        else (a == 1, a % 16 == 0, -_I32 <= a < _I32) if type(a) is int
        else type(a)
        for a in args
    )


class Relauncher:
    """Launches of one ``@triton.jit`` function whose constexpr parameters come last."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn  # a JITFunction (under the interpreter, never relaunched)
        # (constants, device, specialisation) -> (compiled kernel, constexpr values in order)
        self._compiled: dict[tuple[Any, ...], tuple[Any, tuple[Any, ...]]] = {}
        self.broken = False  # set when the installed Triton refused a relaunch

    @functools.cached_property
    def const_names(self) -> list[str]:
        """The constexpr parameters' names, in order (they follow the runtime ones)."""
        names, consts = list(self.fn.arg_names), sorted(self.fn.constexprs)
        if consts != list(range(len(names) - len(consts), len(names))):
            raise ValueError(f"{names}: the constexpr parameters must come last")
        return names[len(names) - len(consts):]

    def __call__(self, grid: tuple[int, ...], args: tuple[Any, ...], consts: dict[str, Any],
                 consts_key: tuple[Any, ...]) -> None:
        """``fn[grid](*args, **consts)``. ``args``: the runtime arguments in order;
        ``consts``: the constexprs and the launch options (``num_warps``, ...), hashed by
        the caller into ``consts_key`` (the same key for the same dict)."""
        if not relaunch_enabled() or self.broken:
            self.fn[grid](*args, **consts)
            return
        key = (consts_key, args[0].device, specialisation(args))
        hit = self._compiled.get(key)
        if hit is None:
            kernel = self.fn[grid](*args, **consts)
            self._compiled[key] = (kernel, tuple(consts[n] for n in self.const_names))
            return
        kernel, tail = hit
        try:  # the compiled kernel's launcher wants all three grid dims and every parameter
            kernel[(*grid, 1, 1)[:3]](*args, *tail)
        except (AttributeError, IndexError, TypeError) as err:  # a Triton that launches
            self.broken = True  # otherwise: its JIT from now on (raised before the launch)
            warnings.warn(f"relaunching {self.fn} failed ({err!r}); launching through "
                          "Triton's JIT from now on", RuntimeWarning, stacklevel=2)
            self.fn[grid](*args, **consts)
