"""Trainable router projections, scored by the runtime's "heads" rule for the InfoNCE loss.

The rule is the one of ``msa_agent.kernels.route_topk.naive`` (also what
``RoutingIndex.rank(combine="heads")`` calls): a chunk's score is the max over query tokens of
the mean over (layer, query head) of the cosine, GQA-grouped; a document's score is the max
over its chunks. Here the same functions run on a batch of padded queries (padding tokens
masked out of the max) and back-propagate, through the arg-maxes as a max does.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from msa_agent.kernels.route_topk.naive import (
    chunk_scores,
    doc_scores_ref,
    fold_layers_as_heads,
    unit,
)
from msa_agent.model.query_adapter import QueryAdapter
from msa_agent.model.router import Router, residual_mlp
from msa_agent.model.shape import ModelShape
from msa_agent.train.cache import Packed


class TrainableRouter(nn.Module):
    """Router projections of all MSA layers as stacked tensors, full-rank or low-rank.

    Full rank: ``W`` ``[L, out, hidden]``. Rank ``r``: ``W = B @ A`` with ``A`` ``[L, r,
    hidden]`` and ``B`` ``[L, out, r]`` (smaller to ship, fewer parameters to fit).
    ``mlp`` ({"q": width, "k": width}): a residual MLP in front of that side's projection
    (``residual_mlp``; ``down`` ``[L, width, hidden]``, ``up`` ``[L, hidden, width]``, zero,
    so training starts from the linear router). ``layer_weights``: a learned weight per
    layer in the rule's mean over layers, ``L * softmax(layer_logit)`` (mean 1; zero logits,
    so training starts from the equal weights).
    """

    def __init__(self, shape: ModelShape, layers: Sequence[int], rank: int | None = None,
                 seed: int = 0, top_tokens: int = 1, adapter: QueryAdapter | None = None,
                 doc_adapter: QueryAdapter | None = None,
                 mlp: dict[str, int] | None = None, layer_weights: bool = False) -> None:
        super().__init__()
        self.shape, self.layer_ids, self.rank = shape, list(layers), rank
        self.top_tokens = top_tokens  # the rule it is trained for (route_top_tokens)
        # query-side LoRA on the backbone, trained with the projections (query_adapter.py);
        # its queries must then come from a live forward (msa_agent.train.live)
        self.adapter = adapter
        # document-side LoRA (routing keys only); its documents must then come from a live
        # forward too (msa_agent.train.live.LiveDocs)
        self.doc_adapter = doc_adapter
        gen = torch.Generator().manual_seed(seed)
        n = len(self.layer_ids)
        outs = {"q": shape.n_heads * shape.head_dim, "k": shape.n_kv_heads * shape.head_dim}
        self.factors = nn.ParameterDict()
        for kind, out in outs.items():
            if rank is None:
                self.factors[f"{kind}_w"] = _uniform((n, out, shape.hidden), shape.hidden, gen)
            else:
                self.factors[f"{kind}_a"] = _uniform((n, rank, shape.hidden), shape.hidden, gen)
                self.factors[f"{kind}_b"] = _uniform((n, out, rank), rank, gen)
        self.mlp_widths = {k: int(w) for k, w in (mlp or {}).items() if w}
        self.mlp = nn.ParameterDict()
        for kind, width in self.mlp_widths.items():
            self.mlp[f"{kind}_down"] = _uniform((n, width, shape.hidden), shape.hidden, gen)
            self.mlp[f"{kind}_up"] = nn.Parameter(torch.zeros(n, shape.hidden, width))
        self.layer_logit = nn.Parameter(torch.zeros(n)) if layer_weights else None

    def layer_weight(self) -> torch.Tensor | None:
        """Per-layer weights ``[L]`` of the rule (mean 1), or None for the equal mean."""
        if self.layer_logit is None:
            return None
        return self.layer_logit.softmax(0) * self.layer_logit.shape[0]

    def weight(self, kind: str) -> torch.Tensor:
        """Full weights ``[L, out, hidden]`` of ``kind`` ("q" or "k")."""
        if self.rank is None:
            return self.factors[f"{kind}_w"]
        return self.factors[f"{kind}_b"] @ self.factors[f"{kind}_a"]

    def project(self, hidden: torch.Tensor, kind: str) -> torch.Tensor:
        """``[N, L, hidden]`` -> ``[N, L, heads, head_dim]``."""
        h = hidden.float()
        if kind in self.mlp_widths:
            h = residual_mlp(h, self.mlp[f"{kind}_down"], self.mlp[f"{kind}_up"])
        h = h.transpose(0, 1)  # [L, N, hidden]
        if self.rank is None:
            out = h @ self.factors[f"{kind}_w"].transpose(1, 2)
        else:
            out = (h @ self.factors[f"{kind}_a"].transpose(1, 2)) @ self.factors[
                f"{kind}_b"].transpose(1, 2)
        return out.transpose(0, 1).unflatten(-1, (-1, self.shape.head_dim))

    @torch.no_grad()
    def to_router(self, meta: dict | None = None) -> Router:
        """The runtime :class:`Router` with these weights (full matrices)."""
        adapter, doc = (None if a is None else copy.deepcopy(a)
                        for a in (self.adapter, self.doc_adapter))
        weight = self.layer_weight()
        router = Router(self.shape, self.layer_ids, meta, adapter, doc, self.mlp_widths,
                        None if weight is None else weight.detach().float().cpu())
        wq, wk = self.weight("q"), self.weight("k")
        for j, layer in enumerate(self.layer_ids):
            router[layer].router_q_proj.weight.copy_(wq[j])
            router[layer].router_k_proj.weight.copy_(wk[j])
            for kind in self.mlp_widths:
                mlp = getattr(router[layer], f"{kind}_mlp")
                mlp.down.copy_(self.mlp[f"{kind}_down"][j])
                mlp.up.copy_(self.mlp[f"{kind}_up"][j])
        return router.eval().requires_grad_(False)

    @classmethod
    def from_router(cls, router: Router, rank: int | None = None, top_tokens: int = 1,
                    mlp: dict[str, int] | None = None, layer_weights: bool = False
                    ) -> TrainableRouter:
        """Trainable copy of an existing router (to continue training it).

        With ``rank``, each weight is cut to its best rank-``rank`` approximation (truncated
        SVD): exact when the router was itself trained at that rank. ``mlp``: widths of
        residual MLPs to add where the router has none (identity at first);
        ``layer_weights``: learn per-layer weights (from the router's own, else equal).
        """
        adapter, doc = (None if a is None else copy.deepcopy(a).requires_grad_(True)
                        for a in (router.adapter, router.doc_adapter))
        widths = {**(mlp or {}), **router.mlp}
        has = router.layer_weight is not None
        tr = cls(router.shape, router.layer_ids, rank, top_tokens=top_tokens, adapter=adapter,
                 doc_adapter=doc, mlp=widths, layer_weights=layer_weights or has)
        with torch.no_grad():
            if has:  # logits whose L * softmax is the router's weights
                tr.layer_logit.copy_(router.layer_weight.float().clamp_min(1e-8).log())
            for j, layer in enumerate(router.layer_ids):
                for kind, lin in (("q", router[layer].router_q_proj),
                                  ("k", router[layer].router_k_proj)):
                    tr._set(kind, j, lin.weight.float())
                for kind in router.mlp:
                    have = getattr(router[layer], f"{kind}_mlp")
                    tr.mlp[f"{kind}_down"][j].copy_(have.down.float())
                    tr.mlp[f"{kind}_up"][j].copy_(have.up.float())
        return tr

    def _set(self, kind: str, j: int, w: torch.Tensor) -> None:
        """Layer ``j`` of ``kind`` := ``w`` ``[out, hidden]`` (low rank: truncated SVD)."""
        if self.rank is None:
            self.factors[f"{kind}_w"][j].copy_(w)
            return
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        r = min(self.rank, s.shape[0])
        root = s[:r].sqrt()
        self.factors[f"{kind}_b"][j].zero_()
        self.factors[f"{kind}_a"][j].zero_()
        self.factors[f"{kind}_b"][j][:, :r].copy_(u[:, :r] * root)
        self.factors[f"{kind}_a"][j][:r].copy_(root[:, None] * vh[:r])


def _uniform(shape: tuple[int, ...], fan_in: int, gen: torch.Generator) -> nn.Parameter:
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter((torch.rand(shape, generator=gen) * 2 - 1) * bound)


def pad_rows(packed: Packed, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``idx`` of a packed tensor as ``[B, Tmax, L, hidden]`` plus a ``[B, Tmax]`` mask."""
    rows = [packed.row(i) for i in idx]
    longest = max(r.shape[0] for r in rows)
    x = rows[0].new_zeros((len(rows), longest, *rows[0].shape[1:]))
    mask = torch.zeros((len(rows), longest), dtype=torch.bool, device=x.device)
    for b, r in enumerate(rows):
        x[b, : r.shape[0]] = r
        mask[b, : r.shape[0]] = True
    return x, mask


def query_features(tr: TrainableRouter, x: torch.Tensor) -> torch.Tensor:
    """Folded unit queries ``[B, T, 1, 1, L*Hkv*D]`` (layers as heads) of ``[B, T, L, hidden]``."""
    q = tr.project(x.flatten(0, 1), "q")  # [B*T, L, Hq, D]
    qf = fold_layers_as_heads(q, tr.shape.n_kv_heads, tr.layer_weight())
    return qf.unflatten(0, x.shape[:2])


def key_features(tr: TrainableRouter, chunks: torch.Tensor) -> torch.Tensor:
    """Unit routing keys ``[N, 1, 1, L*Hkv*D]`` of chunk-mean hidden states ``[N, L, hidden]``."""
    return unit(tr.project(chunks, "k")).flatten(1)[:, None, None]


def doc_keys(tr: TrainableRouter, docs: Packed, idx: Sequence[int]
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys of the chunks of documents ``idx`` and each chunk's document ``[N]`` (0..len-1)."""
    rows = [docs.row(i) for i in idx]
    keys = key_features(tr, torch.cat(rows))
    counts = torch.tensor([r.shape[0] for r in rows], device=keys.device)
    return keys, torch.repeat_interleave(torch.arange(len(rows), device=keys.device), counts)


def heads_scores(qf: torch.Tensor, qmask: torch.Tensor, keys: torch.Tensor,
                 chunk_doc: torch.Tensor, top_tokens: int = 1) -> torch.Tensor:
    """Document scores ``[B, D]``: the naive rule's chunk scores (padding tokens masked out;
    ``top_tokens`` as ``route_top_tokens``), then the max over each document's chunks (every
    document has at least one chunk)."""
    s = chunk_scores(qf, keys, qmask, top_tokens=top_tokens)[:, 0]  # [B, N]
    return doc_scores_ref(s, chunk_doc, int(chunk_doc.max()) + 1, None)


@torch.no_grad()
def score_matrix(tr: TrainableRouter, queries: Packed, q_idx: Sequence[int], docs: Packed,
                 d_idx: Sequence[int], block: int = 64) -> torch.Tensor:
    """Scores ``[len(q_idx), len(d_idx)]`` under the runtime rule, in query blocks."""
    keys, chunk_doc = doc_keys(tr, docs, d_idx)
    out = []
    for s in range(0, len(q_idx), block):
        x, mask = pad_rows(queries, q_idx[s : s + block])
        out.append(heads_scores(query_features(tr, x), mask, keys, chunk_doc, tr.top_tokens))
    return torch.cat(out)
