"""The MSA router: learned ``router_q_proj`` / ``router_k_proj`` per MSA layer (paper form).

Both are bias-free linear maps on the attention module's input hidden states, with no RoPE and
no q/k-norm: ``router_q_proj``: hidden -> n_heads * head_dim, ``router_k_proj``: hidden ->
n_kv_heads * head_dim. They learn only from the routing (InfoNCE) loss.

A deeper router (issue 13) puts a residual MLP in front of either projection
(:class:`ResidualMLP`). Such a router is not linear, so a document's routing key is the
projection of its chunk's mean hidden state (:attr:`Router.keys_from_pooled`), not the
mean of its tokens' projections (which is the same thing for a linear router).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from msa_agent.errors import RouterMismatchError
from msa_agent.model.query_adapter import QueryAdapter
from msa_agent.model.shape import ModelShape


def residual_mlp(x: torch.Tensor, down: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``x + rms(x) * up(gelu(down(x / rms(x))))`` over the last dim.

    One layer: ``x`` ``[..., hidden]``, ``down`` ``[width, hidden]``, ``up`` ``[hidden, width]``.
    Stacked layers (training): ``x`` ``[..., L, hidden]``, ``down`` ``[L, width, hidden]``,
    ``up`` ``[L, hidden, width]``. The MLP sees the state at unit RMS and its output is scaled
    back, so one MLP serves states of any magnitude; with ``up`` zero it is the identity (a
    deeper router starts as the linear one it extends).
    """
    rms = x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    xn = x / rms
    if down.dim() == 2:
        out = torch.nn.functional.gelu(xn @ down.T) @ up.T
    else:
        flat = xn.reshape(-1, *xn.shape[-2:])  # [N, L, hidden]
        mid = torch.nn.functional.gelu(torch.einsum("nlh,lmh->nlm", flat, down))
        out = torch.einsum("nlm,lhm->nlh", mid, up).reshape(x.shape)
    return x + rms * out


class ResidualMLP(nn.Module):
    """The router's residual MLP on one layer's hidden states (:func:`residual_mlp`)."""

    def __init__(self, hidden: int, width: int) -> None:
        super().__init__()
        self.down = nn.Parameter(torch.zeros(width, hidden))
        self.up = nn.Parameter(torch.zeros(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return residual_mlp(x.float(), self.down.float(), self.up.float())


class RouterLayer(nn.Module):
    """Router projections of one layer, each optionally behind a :class:`ResidualMLP`."""

    def __init__(self, shape: ModelShape, mlp: dict[str, int] | None = None) -> None:
        super().__init__()
        self.head_dim = shape.head_dim
        self.router_q_proj = nn.Linear(shape.hidden, shape.n_heads * shape.head_dim, bias=False)
        self.router_k_proj = nn.Linear(shape.hidden, shape.n_kv_heads * shape.head_dim, bias=False)
        widths = mlp or {}
        self.q_mlp = ResidualMLP(shape.hidden, widths["q"]) if widths.get("q") else None
        self.k_mlp = ResidualMLP(shape.hidden, widths["k"]) if widths.get("k") else None

    def q(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., hidden]`` -> ``[..., n_heads, head_dim]``."""
        return self._project(hidden, self.q_mlp, self.router_q_proj)

    def k(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., hidden]`` -> ``[..., n_kv_heads, head_dim]``."""
        return self._project(hidden, self.k_mlp, self.router_k_proj)

    def _project(self, hidden: torch.Tensor, mlp: ResidualMLP | None, proj: nn.Linear
                 ) -> torch.Tensor:
        x = hidden if mlp is None else mlp(hidden)
        return proj(x.to(proj.weight.dtype)).unflatten(-1, (-1, self.head_dim))


class Router(nn.Module):
    """Router projections for a set of MSA layers, bound to one model fingerprint."""

    def __init__(self, shape: ModelShape, layers: list[int], meta: dict[str, Any] | None = None,
                 adapter: QueryAdapter | None = None, doc_adapter: QueryAdapter | None = None,
                 mlp: dict[str, int] | None = None, layer_weight: torch.Tensor | None = None):
        super().__init__()
        self.shape = shape
        self.layer_ids = list(layers)
        # residual MLP widths in front of the projections ({"q": 128, "k": 128}; 0: none)
        self.mlp = {k: int(v) for k, v in (mlp or {}).items() if v}
        self.layers = nn.ModuleDict({str(i): RouterLayer(shape, self.mlp) for i in layers})
        self.meta: dict[str, Any] = dict(meta or {})
        # LoRA on the backbone for the query side of routing only (query_adapter.py)
        self.adapter = adapter
        # the same for the documents' routing keys only (their stored K/V never see it):
        # ingest then runs a second forward through it (docs/routing.md, "The document side")
        self.doc_adapter = doc_adapter
        # learned weight ``[L]`` (mean 1) of each layer in the rule's mean over layers, or
        # None for the equal mean (kernels/route_topk/naive.py, fold_layers_as_heads)
        self.layer_weight: torch.Tensor | None
        if layer_weight is not None and layer_weight.shape != (len(self.layer_ids),):
            raise RouterMismatchError(f"layer_weight has shape {tuple(layer_weight.shape)}, "
                                      f"expected ({len(self.layer_ids)},)")
        self.register_buffer("layer_weight", layer_weight)

    def __getitem__(self, layer: int) -> RouterLayer:
        return self.layers[str(layer)]

    def layer_weight_for(self, layers: list[int]) -> torch.Tensor | None:
        """The learned layer weights in the order of ``layers`` (a space's MSA layers, each
        one of this router's), or None when the router weighs its layers equally."""
        if self.layer_weight is None:
            return None
        return self.layer_weight[[self.layer_ids.index(i) for i in layers]]

    @property
    def keys_from_pooled(self) -> bool:
        """Whether routing keys are the key map of chunk-mean hidden states (a key MLP makes
        the map non-linear), rather than chunk means of per-token keys."""
        return bool(self.mlp.get("k"))

    @property
    def router_id(self) -> str:
        """Content hash of the weights; routing keys made by another router are stale."""
        h = hashlib.sha256()
        for name, t in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def save(self, path: str | Path, model_fingerprint: dict[str, Any]) -> Path:
        """Write safetensors with the model fingerprint, shape and layers in its metadata."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {
            "format": "msa-agent-router/1",
            "fingerprint": json.dumps(_identity(model_fingerprint), sort_keys=True),
            "shape": json.dumps(self.shape.__dict__),
            "layers": json.dumps(self.layer_ids),
            "meta": json.dumps(self.meta, default=str),
        }
        for name, adapter in (("adapter", self.adapter), ("doc_adapter", self.doc_adapter)):
            if adapter is not None:
                header[name] = json.dumps(adapter.config())
        if self.mlp:
            header["mlp"] = json.dumps(self.mlp)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(tensors, str(path), metadata=header)
        return path

    @classmethod
    def load(cls, path: str | Path, model_fingerprint: dict[str, Any] | None = None) -> Router:
        """Load a router; refuse one trained for another model (config or weights differ)."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        if header.get("format") != "msa-agent-router/1":
            raise RouterMismatchError(f"{path} is not an msa-agent router file")
        saved = json.loads(header["fingerprint"])
        if model_fingerprint is not None and not same_model(saved, model_fingerprint):
            given = _identity(model_fingerprint)
            diff = sorted(k for k in saved if saved.get(k) != given.get(k))
            raise RouterMismatchError(
                f"router {path} was trained for another model ({diff} differ)"
            )
        adapters = [QueryAdapter.from_config(json.loads(header[name])) if name in header
                    else None for name in ("adapter", "doc_adapter")]
        tensors = _merge_low_rank(load_file(str(path)))
        weight = tensors.get("layer_weight")
        router = cls(ModelShape(**json.loads(header["shape"])), json.loads(header["layers"]),
                     json.loads(header.get("meta", "{}")), *adapters,
                     mlp=json.loads(header.get("mlp", "{}")),
                     layer_weight=None if weight is None else weight.float())
        router.load_state_dict({k: v.float() for k, v in tensors.items()})
        return router.eval().requires_grad_(False)


def _merge_low_rank(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Low-rank files store ``W = lr_b @ lr_a`` per projection; expand to Linear weights."""
    out = {k: v for k, v in tensors.items() if not k.endswith((".lr_a", ".lr_b"))}
    for k, a in tensors.items():
        if k.endswith(".lr_a"):
            base = k.removesuffix(".lr_a")
            out[f"{base}.weight"] = tensors[f"{base}.lr_b"].float() @ a.float()
    return out


SAMPLE_RTOL = 2.0**-7  # two 16-bit roundings (bf16: 2^-8 each) of one float32 weight
SAMPLE_ATOL = 1e-6  # float16 subnormals


def _identity(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The parts of a model fingerprint a router depends on (not its dtype or display name)."""
    keys = ("architecture", "config_hash", "weights_hash", "weights_sample")
    return {k: fingerprint[k] for k in keys if k in fingerprint}


def same_model(saved: dict[str, Any], given: dict[str, Any]) -> bool:
    """Whether a router saved for ``saved`` serves the model ``given``, whatever either's
    compute dtype: same architecture and config, and the same weights by ``weights_sample``
    (each sampled weight within a 16-bit rounding) where both have one, else by the
    dtype-exact ``weights_hash`` (routers saved before the sample existed)."""
    if any(saved.get(k) != given.get(k) for k in ("architecture", "config_hash")):
        return False
    a, b = saved.get("weights_sample"), given.get("weights_sample")
    if not a or not b:
        return saved.get("weights_hash") == given.get("weights_hash")
    return len(a) == len(b) and all(
        abs(x - y) <= SAMPLE_RTOL * max(abs(x), abs(y)) + SAMPLE_ATOL for x, y in zip(a, b))


SHIPPED_DIR = Path(__file__).resolve().parent.parent / "routers"


def shipped_router(model_fingerprint: dict[str, Any], layers: list[int],
                   chunk_size: int = 64) -> Path | None:
    """A router shipped inside the package for this exact model and layer set, if any;
    among those, the one trained at the space's ``chunk_size`` (a file whose meta names no
    chunk size was trained at 64), else any of them."""
    from safetensors import SafetensorError, safe_open

    found: dict[int, Path] = {}
    for path in sorted(SHIPPED_DIR.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
        except (OSError, SafetensorError):  # not a router file: never picked
            continue
        try:
            ours = same_model(json.loads(header["fingerprint"]), model_fingerprint)
            same_layers = json.loads(header["layers"]) == list(layers)
            trained_at = int(json.loads(header.get("meta", "{}")).get("chunk_size", 64))
        except (KeyError, ValueError, TypeError):
            continue
        if ours and same_layers:
            found.setdefault(trained_at, path)
    if not found:
        return None
    return found.get(chunk_size) or found.get(64) or next(iter(found.values()))
