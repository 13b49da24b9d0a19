"""The ``msa`` attention function, registered with transformers' attention interfaces.

In an MSA layer the active context (query and generated tokens) attends over
``[memory K/V ; local K/V]``: every memory token is visible, the local part stays causal.
Memory K/V arrive through the forward kwarg ``msa_memory`` (a :class:`MemoryKV`), so no
modeling file is copied: ``model(..., msa_memory=mkv)`` with ``attn_implementation="msa"``.
Layers without memory, and calls without the kwarg, run plain SDPA.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

MSA_ATTENTION = "msa"


@dataclass
class MemoryKV:
    """Per-layer memory K/V, ``[B, Hkv, S, D]``, K already rotated at its memory positions."""

    k: dict[int, torch.Tensor] = field(default_factory=dict)
    v: dict[int, torch.Tensor] = field(default_factory=dict)

    def get(self, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return (self.k[layer], self.v[layer]) if layer in self.k else None

    @property
    def length(self) -> int:
        return next(iter(self.k.values())).shape[2] if self.k else 0


def msa_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,  # [B, Hq, T, D]
    key: torch.Tensor,  # [B, Hkv, S_local, D]
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """[memory ; local] attention in MSA layers, plain SDPA elsewhere. Out: ``[B, T, Hq, D]``."""
    memory = kwargs.pop("msa_memory", None)
    kwargs.pop("is_causal", None)
    prefix = memory.get(module.layer_idx) if isinstance(memory, MemoryKV) else None
    if prefix is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    mk, mv = (t.to(key.dtype) for t in prefix)
    local = _local_mask(attention_mask, query.shape[2], key.shape[2], query.device)
    seen = torch.ones((*local.shape[:-1], mk.shape[2]), dtype=torch.bool, device=query.device)
    mask = torch.cat([seen, local], -1)  # [B|1, 1, T, S_mem + S_local]
    return sdpa_attention_forward(module, query, torch.cat([mk, key], 2),
                                  torch.cat([mv, value], 2), mask, dropout=dropout,
                                  scaling=scaling, is_causal=False, **kwargs)


def _local_mask(mask: torch.Tensor | None, q: int, kv: int, device: torch.device) -> torch.Tensor:
    """Boolean ``[B|1, 1, q, kv]`` (True = attend) from transformers' mask, or causal if None."""
    if mask is None:
        i = torch.arange(q, device=device).view(q, 1) + (kv - q)
        return (torch.arange(kv, device=device).view(1, kv) <= i).view(1, 1, q, kv)
    mask = mask[..., -kv:]
    return mask if mask.dtype == torch.bool else mask == 0


def register() -> None:
    """Make ``attn_implementation="msa"`` available (idempotent)."""
    AttentionInterface.register(MSA_ATTENTION, msa_attention_forward)
    AttentionMaskInterface.register(MSA_ATTENTION, sdpa_mask)


def rotate_memory(
    model: torch.nn.Module, keys: Sequence[torch.Tensor], positions: Sequence[torch.Tensor],
    layer: int | None = None,
) -> torch.Tensor:
    """Apply the model's RoPE to pre-RoPE keys ``[S_i, Hkv, D]`` at ``positions`` ``[S_i]``.

    Returns one ``[1, Hkv, sum S_i, D]`` tensor: documents laid side by side, each rotated at
    its own document-local positions (the paper's parallel RoPE). ``layer`` picks the
    layer's own RoPE where a model has several (Gemma3: sliding vs. full attention layers).
    """
    k = torch.cat(list(keys)).transpose(0, 1).unsqueeze(0)  # [1, Hkv, S, D]
    pos = torch.cat(list(positions)).view(1, -1).to(k.device)
    rotary = model.model.rotary_emb
    extra = {}
    if "layer_type" in inspect.signature(rotary.forward).parameters:
        types = getattr(model.config, "layer_types", None) or ["full_attention"]
        extra["layer_type"] = types[layer if layer is not None else -1]
    cos, sin = rotary(k, position_ids=pos, **extra)
    rotated, _ = apply_rotary_pos_emb(k, k, cos, sin)
    return rotated


register()
