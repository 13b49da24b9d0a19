"""Write a trained router as safetensors bound to the model fingerprint, compactly.

The file has ``Router.save``'s header (format, fingerprint, shape, layers, meta). Full-rank
routers store ``...router_q_proj.weight`` / ``...router_k_proj.weight``; low-rank ones store
the factors ``.lr_a`` ``[r, hidden]`` and ``.lr_b`` ``[out, r]`` instead, which
``Router.load`` multiplies back. ``dtype`` float16 halves the file again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from msa_agent.model.loader import DTYPES
from msa_agent.train.score import TrainableRouter


def save_router(tr: TrainableRouter, path: str | Path, model_fingerprint: dict[str, Any], *,
                dtype: str = "float16", meta: dict[str, Any] | None = None) -> Path:
    """Save ``tr`` for the model with this fingerprint; returns the path."""
    path = Path(path)
    tr = tr.cpu()
    tr.to_router(meta).save(path, model_fingerprint)  # writes the header (and full weights)
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    tensors = _tensors(tr, DTYPES[dtype])
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=header)
    tmp.replace(path)
    return path


def _tensors(tr: TrainableRouter, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    out = {}
    with torch.no_grad():
        for kind in ("q", "k"):
            for j, layer in enumerate(tr.layer_ids):
                base = f"layers.{layer}.router_{kind}_proj"
                if tr.rank is None:
                    out[f"{base}.weight"] = tr.factors[f"{kind}_w"][j]
                else:
                    out[f"{base}.lr_a"] = tr.factors[f"{kind}_a"][j]
                    out[f"{base}.lr_b"] = tr.factors[f"{kind}_b"][j]
        for kind in tr.mlp_widths:
            for j, layer in enumerate(tr.layer_ids):
                for part in ("down", "up"):
                    out[f"layers.{layer}.{kind}_mlp.{part}"] = tr.mlp[f"{kind}_{part}"][j]
        for name in ("adapter", "doc_adapter"):
            if (adapter := getattr(tr, name)) is not None:
                out.update({f"{name}.{k}": v for k, v in adapter.state_dict().items()})
        if (weight := tr.layer_weight()) is not None:
            out["layer_weight"] = weight
    return {k: v.detach().to(torch.float32 if k == "layer_weight" else dtype).contiguous()
            for k, v in out.items()}
