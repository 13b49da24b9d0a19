"""Load checkpoints in the public MSA format.

The format is a Qwen3 config with ``model_type: "msa"`` and an ``msa_config`` dict
(``pooling_kernel_size``, ``top_k_docs``, ``router_layer_idx``, ``head_reduce_method``,
``query_reduce_method``, ``chunk_reduce_method``, ...). Router weights sit in the attention
modules of router layers as ``router_q_proj`` / ``router_k_proj``, each an ``nn.Sequential``
wrapping a bias-free Linear (``...self_attn.router_q_proj.0.weight``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, Qwen3Config

from msa_agent.errors import ModelLoadError
from msa_agent.model.router import Router
from msa_agent.model.shape import ModelShape

SUPPORTED_REDUCE = {"head_reduce_method": "mean", "query_reduce_method": "max",
                    "chunk_reduce_method": "max"}
_ROUTER_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.self_attn\.(router_[qk]_proj)(?:\.0)?\.weight$")


@dataclass(frozen=True)
class MsaSettings:
    """The parts of ``msa_config`` the runtime uses."""

    chunk_size: int
    top_k: int
    layers: list[int]
    raw: dict[str, Any]


def is_msa_checkpoint(path: str | Path) -> bool:
    cfg = Path(path) / "config.json"
    return cfg.is_file() and json.loads(cfg.read_text()).get("model_type") == "msa"


def parse_settings(msa: dict[str, Any], n_layers: int) -> MsaSettings:
    """Validate ``msa_config``; refuse reduce rules this runtime does not implement."""
    for key, want in SUPPORTED_REDUCE.items():
        if msa.get(key, want) != want:
            raise ModelLoadError(f"msa_config {key}={msa[key]!r} is not supported (only {want!r})")
    layers = msa.get("router_layer_idx", list(range(n_layers // 2, n_layers)))
    if isinstance(layers, str):  # "18..35" or "18-35"
        lo, hi = (int(x) for x in re.split(r"\.\.|-", layers))
        layers = list(range(lo, hi + 1))
    return MsaSettings(int(msa.get("pooling_kernel_size", 64)), int(msa.get("top_k_docs", 16)),
                       sorted(int(i) for i in layers), dict(msa))


def load_msa_checkpoint(
    path: str | Path, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, Any, Router, MsaSettings]:
    """Backbone (as Qwen3), tokenizer, the checkpoint's learned router, and its settings."""
    path = Path(path)
    raw = json.loads((path / "config.json").read_text())
    msa = raw.pop("msa_config", {}) or {}
    raw["model_type"] = "qwen3"
    config = Qwen3Config(**{k: v for k, v in raw.items() if k != "architectures"})
    settings = parse_settings(msa, config.num_hidden_layers)
    state = _load_state(path)
    routers = {k: state.pop(k) for k in [k for k in state if _ROUTER_KEY.search(k)]}
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    missing = [m for m in missing if not (tied and m.startswith("lm_head."))]  # tied: embeddings
    if unexpected or missing:
        raise ModelLoadError(f"MSA checkpoint mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    router = _router_from(routers, ModelShape.of(model), settings.layers)
    return model, AutoTokenizer.from_pretrained(path), router, settings


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"no *.safetensors weights in {path}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def _router_from(weights: dict[str, torch.Tensor], shape: ModelShape, layers: list[int]) -> Router:
    router = Router(shape, layers, meta={"source": "msa-checkpoint"})
    seen = set()
    for key, w in weights.items():
        m = _ROUTER_KEY.search(key)
        layer, name = int(m.group(1)), m.group(2)
        if layer not in layers:
            raise ModelLoadError(f"router weight for layer {layer} outside router_layer_idx")
        getattr(router[layer], name).weight.data.copy_(w.float())
        seen.add((layer, name))
    want = {(i, n) for i in layers for n in ("router_q_proj", "router_k_proj")}
    if seen != want:
        raise ModelLoadError(f"MSA checkpoint lacks router weights {sorted(want - seen)}")
    return router.eval().requires_grad_(False)
