"""Pure-PyTorch reference for routing: the contract the Triton kernel must match."""

from __future__ import annotations

import torch

EPS = 1e-6


def chunk_scores_ref(
    q: torch.Tensor,
    keys: torch.Tensor,
    key_scale: torch.Tensor | None = None,
    keys_normalized: bool = False,
) -> torch.Tensor:
    """S[b, n] = max_t mean_h cos(q[b, t, h], k[n, h // G]).

    q: `[B, T, HQ, D]`, keys: `[N, HKV, D]`, key_scale: `[N]` or None -> `[B, N]` float32.
    With keys_normalized, keys * key_scale are taken as unit vectors (not renormalised).
    """
    HQ, HKV = q.shape[2], keys.shape[1]
    k = keys.float()
    if key_scale is not None:
        k = k * key_scale.float()[:, None, None]
    q_hat = q.float() / q.float().norm(dim=-1, keepdim=True).clamp_min(EPS)
    k_hat = k if keys_normalized else k / k.norm(dim=-1, keepdim=True).clamp_min(EPS)
    k_hat = k_hat.repeat_interleave(HQ // HKV, dim=1)  # (N, HQ, D)
    cos = torch.einsum("bthd,nhd->bnth", q_hat, k_hat)  # (B, N, T, HQ)
    return cos.mean(-1).amax(-1)


def doc_scores_ref(
    s: torch.Tensor, chunk_doc: torch.Tensor, num_docs: int, doc_mask: torch.Tensor | None
) -> torch.Tensor:
    """Max over each document's chunks; masked or empty docs get -inf. s: `[B, N]` -> `[B, M]`."""
    out = torch.full((s.shape[0], num_docs), float("-inf"), dtype=torch.float32, device=s.device)
    idx = chunk_doc.long()[None].expand_as(s)
    out = out.scatter_reduce(1, idx, s.float(), reduce="amax", include_self=True)
    if doc_mask is not None:
        out = out.masked_fill(~doc_mask.bool()[None], float("-inf"))
    return out


def topk_docs(doc_score: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k over `[B, M]`, descending; slots past the valid docs get id -1 and score -inf."""
    kk = min(k, doc_score.shape[1])
    val, idx = doc_score.topk(kk, dim=1)
    idx = idx.masked_fill(val == float("-inf"), -1)
    if kk < k:
        pad = k - kk
        val = torch.cat([val, val.new_full((val.shape[0], pad), float("-inf"))], 1)
        idx = torch.cat([idx, idx.new_full((idx.shape[0], pad), -1)], 1)
    return idx, val


def route_topk_ref(
    q: torch.Tensor,
    keys: torch.Tensor,
    chunk_doc: torch.Tensor,
    num_docs: int,
    k: int,
    doc_mask: torch.Tensor | None = None,
    key_scale: torch.Tensor | None = None,
    keys_normalized: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference route_topk on `[B, T, HQ, D]` queries: (doc ids `[B, k]`, scores `[B, k]`,
    chunk scores `[B, N]`)."""
    s = chunk_scores_ref(q, keys, key_scale, keys_normalized)
    ids, val = topk_docs(doc_scores_ref(s, chunk_doc, num_docs, doc_mask), k)
    return ids, val, s
