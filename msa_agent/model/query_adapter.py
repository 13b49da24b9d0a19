"""LoRA on the backbone's linear projections, applied only while routing queries are encoded.

The router reads the attention inputs of the MSA layers (``msa_agent.model.router``). A frozen
backbone was never asked to make those states match: this adapter adds ``scale * B @ A`` to the
output of each adapted ``nn.Linear`` (``q/k/v/o_proj``, ``gate/up/down_proj``) of some decoder
layers, on the query side only. Documents, stored K/V and generation keep the base weights, so
ingest is unchanged and a space's stored routing keys stay valid; one recall still costs one
(short) forward. The deltas are added by forward hooks installed for one forward at a time
(:meth:`QueryAdapter.applied`) under the caller's model lock, never left on the shared model.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from msa_agent.model.capture import decoder_layers

PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


class LoRA(nn.Module):
    """``x -> scale * (x @ A.T) @ B.T`` with ``A`` ``[r, in]`` and ``B`` ``[out, r]`` (B starts
    at zero, so a fresh adapter changes nothing)."""

    def __init__(self, d_in: int, d_out: int, rank: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.a = nn.Parameter(torch.randn(rank, d_in) / d_in**0.5)
        self.b = nn.Parameter(torch.zeros(d_out, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * ((x.to(self.a.dtype) @ self.a.T) @ self.b.T)

    def add_to(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``out + self(x)`` in two matmuls (``addmm``): a recall runs 147 of these, so the
        per-op overhead is most of their cost on a CPU."""
        x2 = x.reshape(-1, x.shape[-1])
        if x2.dtype != self.a.dtype:
            return out + self(x).to(out.dtype)
        flat = torch.addmm(out.reshape(-1, out.shape[-1]), x2 @ self.a.T, self.b.T,
                           alpha=self.scale)
        return flat.view(out.shape)


class QueryAdapter(nn.Module):
    """LoRA deltas for ``layers``; ``dims`` maps each projection to its (in, out) features.
    ``config()`` is all :meth:`from_config` needs to rebuild it (a router file's header)."""

    def __init__(self, dims: dict[str, tuple[int, int]], layers: Sequence[int],
                 rank: int = 8, alpha: float = 16.0) -> None:
        super().__init__()
        if rank < 1 or not layers or not dims:
            raise ValueError("a query adapter needs rank >= 1, layers and projections")
        self.layer_ids, self.rank, self.alpha = list(layers), rank, alpha
        self.dims = {p: (int(d[0]), int(d[1])) for p, d in dims.items()}
        self.lora = nn.ModuleDict({
            _key(i, p): LoRA(*d, rank, alpha / rank)
            for i in self.layer_ids for p, d in self.dims.items()})

    @classmethod
    def for_model(cls, model: nn.Module, layers: Sequence[int], rank: int = 8,
                  alpha: float = 16.0, projections: Sequence[str] = PROJECTIONS
                  ) -> QueryAdapter:
        """An adapter (a no-op until trained) for ``layers`` of ``model``."""
        layers = list(layers)
        if not layers:
            raise ValueError("a query adapter needs at least one layer")
        first = decoder_layers(model)[layers[0]]
        dims = {p: (first.get_submodule(p).in_features, first.get_submodule(p).out_features)
                for p in projections}
        return cls(dims, layers, rank, alpha)

    def config(self) -> dict[str, Any]:
        return {"layers": self.layer_ids, "rank": self.rank, "alpha": self.alpha,
                "dims": self.dims}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> QueryAdapter:
        return cls(cfg["dims"], cfg["layers"], int(cfg["rank"]), float(cfg["alpha"]))

    @contextmanager
    def applied(self, model: nn.Module, rows: torch.Tensor | None = None) -> Iterator[None]:
        """Add the deltas to ``model``'s projections for the duration of the block. The
        caller holds the model's lock (``capture.model_lock``) across the block. ``rows``:
        a 0/1 mask of the batch rows ``[B]`` or tokens ``[B, T]`` that get them (routing
        queries in one forward with base-weight texts, such as summary prompts); None =
        every token."""
        layers = decoder_layers(model)
        handles = [layers[i].get_submodule(p).register_forward_hook(_delta_hook(self.lora[
            _key(i, p)], rows)) for i in self.layer_ids for p in self.dims]
        try:
            yield
        finally:
            for h in handles:
                h.remove()


def merged_copy(model: nn.Module, adapter: QueryAdapter | None, dtype: torch.dtype
                ) -> nn.Module:
    """A copy of ``model`` in ``dtype`` with ``adapter``'s deltas merged into its weights
    (``W + scale * B @ A``, summed in float32, then cast): one forward through it gives the
    routing queries that the hooked base model gives, with no hooks (147 of them cost ~10 ms
    of a 2-core CPU recall) and, in bfloat16, half the weight reads. The base is untouched.
    Each tensor is cast as it is copied (no whole float32 copy in between; tied weights stay
    tied), as ``model.to(dtype)`` casts: floating parameters and buffers."""
    lora_of: dict[int, LoRA] = {}  # adapted weights (by tensor id) -> their delta's factors
    if adapter is not None:
        layers = decoder_layers(model)
        lora_of = {id(layers[i].get_submodule(p).weight): adapter.lora[_key(i, p)]
                   for i in adapter.layer_ids for p in adapter.dims}
    memo: dict[int, object] = {}
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if id(t) not in memo:
                x, lora = t.detach(), lora_of.get(id(t))
                if lora is not None:  # one weight at a time in float32
                    x = x.float() + lora.scale * (lora.b.float() @ lora.a.float()).to(x.device)
                x = x.to(dtype) if x.is_floating_point() else x.clone()
                memo[id(t)] = nn.Parameter(x, requires_grad=False) \
                    if isinstance(t, nn.Parameter) else x
        out = copy.deepcopy(model, memo)
    return out.eval().requires_grad_(False)


def _key(layer: int, projection: str) -> str:
    return f"{layer}_{projection.replace('.', '_')}"


def _delta_hook(lora: LoRA, rows: torch.Tensor | None):  # noqa: ANN202 - torch hook
    def hook(_mod: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        x = args[0]
        if rows is not None:  # the delta is linear in x: zero rows of x add nothing
            x = x * rows.to(x.dtype).view(*rows.shape, *[1] * (x.dim() - rows.dim()))
        return lora.add_to(out, x)

    return hook
