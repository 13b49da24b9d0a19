"""Attention geometry of a decoder, and which layers run MSA."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedModel


def text_config(model: PreTrainedModel) -> Any:
    """The decoder config (Gemma3 nests it under ``text_config``)."""
    cfg = model.config
    return getattr(cfg, "text_config", None) or cfg


@dataclass(frozen=True)
class ModelShape:
    """Sizes the encoder, router and store need; nothing else of the model."""

    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int

    @property
    def group(self) -> int:
        """Query heads per KV head (GQA)."""
        return self.n_heads // self.n_kv_heads

    @classmethod
    def of(cls, model: PreTrainedModel) -> ModelShape:
        cfg = text_config(model)
        n_heads = cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
        return cls(
            n_layers=cfg.num_hidden_layers,
            hidden=cfg.hidden_size,
            n_heads=n_heads,
            n_kv_heads=getattr(cfg, "num_key_value_heads", None) or n_heads,
            head_dim=head_dim,
        )


def resolve_msa_layers(shape: ModelShape, layers: list[int] | None) -> list[int]:
    """The MSA layers: as given (validated) or the latter half, as in the paper (18..35 of 36)."""
    if layers is None:
        return list(range(shape.n_layers // 2, shape.n_layers))
    bad = [i for i in layers if not 0 <= i < shape.n_layers]
    if bad:
        raise ValueError(f"msa_layers {bad} out of range for a {shape.n_layers}-layer model")
    return sorted(layers)
