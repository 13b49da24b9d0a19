"""Forward hooks that tap per-layer attention inputs and pre-RoPE Q/K/V.

Taps (per MSA layer, all ``[B, T, H, D]`` except ``hidden`` which is ``[B, T, hidden]``):
- ``hidden``: the attention module's input (after the layer's input norm), what routers read;
- ``q`` / ``k``: the projections before RoPE (after q/k-norm for Qwen3 and Gemma3);
- ``v``: the value projection (V never gets RoPE).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from weakref import WeakKeyDictionary

import torch
from torch import nn
from transformers import PreTrainedModel

Taps = dict[str, dict[int, torch.Tensor]]  # tap name -> layer index -> tensor

_LOCKS: WeakKeyDictionary[nn.Module, threading.RLock] = WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The one lock of ``model``, shared by everything that runs it (every ``Memory`` and
    encoder over the same module object).

    Hooks (:func:`tap_layers`, :func:`stop_after`) and the attention switch of generation
    live on the shared module, so every forward that installs them or depends on them holds
    this lock for that forward only: one encoder batch, one query, one generation step. It is
    the innermost lock: code holding it never waits for another lock (the engine's), and it
    is never held across a ``yield`` to a caller (a stream between tokens holds nothing).
    """
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


def decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The decoder's layer list (``model.model.layers`` for every supported family)."""
    inner = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    layers = getattr(inner, "layers", None)
    if layers is None and hasattr(inner, "language_model"):
        layers = inner.language_model.layers
    if layers is None:
        raise TypeError(f"cannot find decoder layers in {type(model).__name__}")
    return layers


def _norm_of(attn: nn.Module, name: str) -> nn.Module | None:
    """Per-head q/k norm applied before RoPE (Qwen3, Gemma3), if the family has one."""
    return getattr(attn, f"{name}_norm", None) if name in ("q", "k") else None


@contextmanager
def tap_layers(
    model: PreTrainedModel, layers: list[int], names: tuple[str, ...]
) -> Iterator[Taps]:
    """Register hooks for the duration of the block; the yielded dict fills during forward."""
    taps: Taps = {n: {} for n in names}
    handles = []
    head_dim_of = {}
    for i in layers:
        attn = decoder_layers(model)[i].self_attn
        head_dim_of[i] = attn.head_dim
        if "hidden" in names:
            handles.append(attn.register_forward_pre_hook(_hidden_hook(taps, i), with_kwargs=True))
        for n in (x for x in names if x != "hidden"):
            hook = _proj_hook(taps[n], i, attn.head_dim, _norm_of(attn, n))
            handles.append(getattr(attn, f"{n}_proj").register_forward_hook(hook))
    try:
        yield taps
    finally:
        for h in handles:
            h.remove()


def _hidden_hook(taps: Taps, layer: int):  # noqa: ANN202 - torch hook signature
    def hook(_mod: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        taps["hidden"][layer] = hidden

    return hook


def _proj_hook(
    store: dict[int, torch.Tensor], layer: int, head_dim: int, norm: nn.Module | None
):  # noqa: ANN202 - torch hook
    def hook(_mod: nn.Module, _args: tuple, out: torch.Tensor) -> None:
        # Linear output [B, T, H*D] -> [B, T, H, D]; the per-head norm acts on the last dim,
        # so applying it here equals the model's own (whatever layout it uses).
        x = out.reshape(*out.shape[:2], -1, head_dim)
        store[layer] = norm(x) if norm is not None else x

    return hook


class StopForward(Exception):
    """Raised by a hook on the last needed layer so layers above it are not computed."""


@contextmanager
def stop_after(model: PreTrainedModel, layer: int, inputs_only: bool = False
               ) -> Iterator[None]:
    """Stop the forward once ``layer``'s attention ran: nothing above it is needed to encode.
    ``inputs_only``: stop as soon as that attention has its input (when only the ``hidden``
    taps are wanted; enter after :func:`tap_layers`, whose pre-hook must run first)."""

    def hook(*_args: object) -> None:
        raise StopForward

    attn = decoder_layers(model)[layer].self_attn
    handle = (attn.register_forward_pre_hook(hook) if inputs_only
              else attn.register_forward_hook(hook))
    try:
        yield
    finally:
        handle.remove()


class ResumeUnsupported(Exception):
    """This model's layer loop does not hand a layer's output on unchanged (transformers
    releases whose layers return tuples), so :func:`resume_at` cannot skip layers here."""


@contextmanager
def layer_input(model: PreTrainedModel, layer: int) -> Iterator[dict[str, torch.Tensor]]:
    """The residual stream ``[B, T, hidden]`` entering decoder ``layer`` in the block's
    forward, under key ``"hidden"`` once that layer ran."""
    seen: dict[str, torch.Tensor] = {}

    def hook(_mod: nn.Module, args: tuple, kwargs: dict) -> None:
        seen["hidden"] = kwargs.get("hidden_states", args[0] if args else None)

    handle = decoder_layers(model)[layer].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


class _HandOn(nn.Module):
    """Stands in for the decoder layers below a resume point: returns the saved stream."""

    def __init__(self, hidden: torch.Tensor) -> None:
        super().__init__()
        self.hidden = hidden

    def forward(self, *_args: object, **_kwargs: object) -> torch.Tensor:
        return self.hidden


@contextmanager
def resume_at(model: PreTrainedModel, layer: int, hidden: torch.Tensor) -> Iterator[None]:
    """Compute only decoder layers ``layer`` and up in the block's forward: the layers below
    are stood in for by a module that hands on ``hidden``, the stream entering ``layer`` saved
    by :func:`layer_input` from an earlier forward of the same batch (embeddings, mask and
    positions are the model's own). The forward raises :class:`ResumeUnsupported` if
    ``layer`` does not receive ``hidden`` itself. Hold :func:`model_lock`: the layer list is
    swapped for the duration of the block."""
    layers = decoder_layers(model)
    below = [layers[i] for i in range(layer)]

    def check(_mod: nn.Module, args: tuple, kwargs: dict) -> None:
        if kwargs.get("hidden_states", args[0] if args else None) is not hidden:
            raise ResumeUnsupported(f"layer {layer} did not receive the resumed stream")

    handle = layers[layer].register_forward_pre_hook(check, with_kwargs=True)
    stand_in = _HandOn(hidden)
    for i in range(layer):
        layers[i] = stand_in
    try:
        yield
    finally:
        for i, original in enumerate(below):
            layers[i] = original
        handle.remove()
