"""Resident routing index and the paper's scoring rule, in torch.

Chunk score (per layer): max over query tokens of the mean over query heads of
cos(router-q, pooled router-k), GQA-grouped. Document score: max over its chunks.
Layers combine into one ranking by ``combine``:
- ``heads``: layers act as extra heads in the same rule (max_t mean_{l,h} cos), one GEMM;
- ``mean`` / ``max``: per-layer document scores, then mean or max over layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_BLOCK = 16384  # chunks scored per GEMM block: bounds the [L, block, T] temporaries


def fold_queries(q: torch.Tensor, n_kv: int) -> torch.Tensor:
    """``[T, L, Hq, D]`` -> ``[T, L, Hkv, D]``: unit queries summed per GQA group, / Hq.

    Then ``<fold(q)[t, l, j], k_hat[n, l, j]>`` summed over j is the mean over query heads of
    the cosine, so a layer's chunk scores are one matrix product.
    """
    t, layers, hq, d = q.shape
    qn = F.normalize(q.float(), dim=-1).view(t, layers, n_kv, hq // n_kv, d)
    return qn.sum(3) / hq


def unit_keys(k: torch.Tensor) -> torch.Tensor:
    """Normalise routing keys ``[N, L, H, D]`` per (chunk, layer, head)."""
    return F.normalize(k.float(), dim=-1)


def chunk_layer_scores(keys: torch.Tensor, qf: torch.Tensor) -> torch.Tensor:
    """Per-layer chunk scores ``[L, N]`` from unit keys ``[N, L, H, D]`` and folded q."""
    out = []
    for s in range(0, keys.shape[0], _BLOCK):
        blk = keys[s : s + _BLOCK]
        out.append(torch.einsum("nlhd,tlhd->lnt", blk, qf).amax(-1))
    return torch.cat(out, 1) if out else keys.new_zeros((qf.shape[1], 0))


def chunk_head_scores(keys: torch.Tensor, qf: torch.Tensor) -> torch.Tensor:
    """Layers-as-heads chunk scores ``[N]``: max_t mean over (layer, head) of the cosine."""
    flat_q = qf.flatten(1) / qf.shape[1]  # [T, L*H*D]
    out = [blk.flatten(1) @ flat_q.T for blk in keys.split(_BLOCK)]  # [n, T] per block
    return torch.cat(out).amax(-1) if out else keys.new_zeros(0)


def doc_max(chunk_scores: torch.Tensor, chunk_doc: torch.Tensor, n_docs: int) -> torch.Tensor:
    """Max over each document's chunks: ``[..., N]`` -> ``[..., M]`` (-inf for no chunk)."""
    shape = (*chunk_scores.shape[:-1], n_docs)
    out = chunk_scores.new_full(shape, float("-inf"))
    idx = chunk_doc.expand_as(chunk_scores)
    return out.scatter_reduce(-1, idx, chunk_scores, reduce="amax", include_self=True)


@dataclass
class Ranked:
    """Top documents of one query: positions in the index, combined and per-layer scores."""

    docs: list[int]
    scores: list[float]
    layer_scores: list[list[float]]
    best_chunk: list[int]  # chunk offset within its document that scored highest


class RoutingIndex:
    """Unit routing keys of every live chunk, resident on one device, plus chunk->doc map."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.keys = torch.empty(0, device=self.device)  # [N, L, H, D] unit keys
        self.chunk_doc = torch.empty(0, dtype=torch.long, device=self.device)  # [N]
        self.doc_ids: list[str] = []
        self.doc_ns = torch.empty(0, dtype=torch.long)  # namespace code per doc
        self.alive = torch.empty(0, dtype=torch.bool)
        self._pos: dict[str, int] = {}
        self._ns_code: dict[str, int] = {}

    def __len__(self) -> int:
        return int(self.alive.sum())

    def add(
        self, ids: Sequence[str], namespaces: Sequence[str], route_k: Sequence[torch.Tensor]
    ) -> None:
        """Append documents; ``route_k[i]`` is ``[C_i, L, H, D]`` (unnormalised)."""
        if not ids:
            return
        codes = [self._ns_code.setdefault(n, len(self._ns_code)) for n in namespaces]
        self.doc_ns = torch.cat([self.doc_ns, torch.tensor(codes, dtype=torch.long)])
        new = unit_keys(torch.cat(list(route_k))).to(self.device)
        counts = torch.tensor([r.shape[0] for r in route_k])
        first = len(self.doc_ids)
        owner = torch.repeat_interleave(torch.arange(first, first + len(ids)), counts)
        self.keys = new if self.keys.numel() == 0 else torch.cat([self.keys, new])
        self.chunk_doc = torch.cat([self.chunk_doc, owner.to(self.device)])
        self.alive = torch.cat([self.alive, torch.ones(len(ids), dtype=torch.bool)])
        for i in ids:
            self._pos[i] = len(self.doc_ids)
            self.doc_ids.append(i)

    def remove(self, ids: Sequence[str]) -> None:
        for i in ids:
            pos = self._pos.pop(i, None)
            if pos is not None:
                self.alive[pos] = False

    def mask_for(self, namespace: str | None, ids: Sequence[str] | None = None) -> torch.Tensor:
        """Boolean ``[M]``: live docs in ``namespace`` (None = all), among ``ids`` if given."""
        mask = self.alive.clone()
        if namespace is not None:
            mask &= self.doc_ns == self._ns_code.get(namespace, -1)
        if ids is not None:
            chosen = torch.zeros_like(mask)
            chosen[[self._pos[i] for i in ids if i in self._pos]] = True
            mask &= chosen
        return mask

    def rank(self, q: torch.Tensor, k: int, mask: torch.Tensor, combine: str = "heads") -> Ranked:
        """Top-``k`` documents for queries ``[T, L, Hq, D]`` among ``mask``."""
        m = len(self.doc_ids)
        if m == 0 or k <= 0 or not bool(mask.any()):
            return Ranked([], [], [], [])
        qf = fold_queries(q.to(self.device), self.keys.shape[2])
        if combine == "heads" and self.keys.is_cuda:
            return self._rank_fused(q, k, mask, qf)
        if combine == "heads":
            chunk = chunk_head_scores(self.keys, qf)
            doc = doc_max(chunk, self.chunk_doc, m)
        else:
            per_layer = doc_max(chunk_layer_scores(self.keys, qf), self.chunk_doc, m)
            doc = per_layer.mean(0) if combine == "mean" else per_layer.amax(0)
        doc = doc.masked_fill(~mask.to(doc.device), float("-inf"))
        top = torch.topk(doc, min(k, int(mask.sum()))).indices.tolist()
        return self._explain(top, doc, qf, combine)

    def rank_per_layer(self, q: torch.Tensor, k: int, mask: torch.Tensor) -> list[list[int]]:
        """Each layer's own top-``k`` documents (the paper selects per layer)."""
        if not self.doc_ids or not bool(mask.any()):
            return [[] for _ in range(q.shape[1])]
        qf = fold_queries(q.to(self.device), self.keys.shape[2])
        per_layer = doc_max(chunk_layer_scores(self.keys, qf), self.chunk_doc, len(self.doc_ids))
        per_layer = per_layer.masked_fill(~mask.to(per_layer.device), float("-inf"))
        top = torch.topk(per_layer, min(k, int(mask.sum())), dim=-1).indices
        return top.tolist()

    def _rank_fused(self, q: torch.Tensor, k: int, mask: torch.Tensor, qf: torch.Tensor) -> Ranked:
        """CUDA: the fused Triton ``route_topk`` over layers-as-heads, one pass over the keys."""
        from msa_agent.kernels import route_topk

        n, layers, h, d = self.keys.shape
        ids, scores = route_topk(
            q.to(self.device).reshape(q.shape[0], -1, d), self.keys.view(n, layers * h, d),
            self.chunk_doc, len(self.doc_ids), min(k, int(mask.sum())),
            doc_mask=mask.to(self.device), keys_normalized=True,
        )
        top = [int(i) for i in ids.tolist() if i >= 0]
        doc = torch.full((len(self.doc_ids),), float("-inf"))
        doc[top] = scores[: len(top)].float().cpu()
        return self._explain(top, doc, qf, "heads")

    def _explain(self, top: list[int], doc: torch.Tensor, qf: torch.Tensor, combine: str) -> Ranked:
        """Per-layer scores and best chunk of the selected documents (cheap: few chunks)."""
        layer_scores, best = [], []
        for d in top:
            rows = self.keys[self.chunk_doc == d]
            per = chunk_layer_scores(rows, qf)  # [L, C]
            pick = chunk_head_scores(rows, qf) if combine == "heads" else per.mean(0)
            layer_scores.append(per.amax(1).tolist())
            best.append(int(pick.argmax()))
        return Ranked(top, [float(doc[d]) for d in top], layer_scores, best)
