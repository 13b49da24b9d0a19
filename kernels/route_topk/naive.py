"""The MSA routing rule in PyTorch: the one definition of it in this project.

Chunk score ``S[n] = max_t mean_h cos(q[t, h], k[n, h // G])`` (G = HQ / HKV, GQA); document
score = max over its chunks; top-k documents after an optional mask. ``top_tokens`` = m > 1
replaces the max over query tokens by the mean of the m best tokens' scores for the chunk
(the mean over all T tokens when T < m): one token no longer has to carry the whole query.
Written in the folded form (README.md, "Derivation"): unit queries summed per kv group and
divided by HQ, so a chunk's score is one dot product per query token and a block of chunks one
GEMM. Nothing of size ``[N, T, HQ]`` is built; the literal ``max_t mean_h cos`` is the tests'
oracle.

Callers: the Triton kernel (``parallel.py``) must match :func:`route_topk_ref`; the CPU
path of ``msa_agent.runtime.routing.RoutingIndex`` and the router-training loss
(``msa_agent.train.score``) call :func:`unit`, :func:`fold_queries` /
:func:`fold_layers_as_heads`, :func:`chunk_scores` and :func:`doc_scores_ref` directly.
"Layers as heads" is the rule on queries ``[T, L*HQ, D]`` and keys ``[N, L*HKV, D]``;
per-layer scores are the rule applied to each layer (the lanes of :func:`chunk_scores`).
"""

from __future__ import annotations

import torch

EPS = 1e-6
BLOCK = 16384  # chunks per GEMM: bounds the [B, L, block, T] temporary


def unit(x: torch.Tensor) -> torch.Tensor:
    """``x / ‖x‖`` in float32 over the last axis (norms clamped at EPS, as the kernel does)."""
    x = x.float()
    return x / x.norm(dim=-1, keepdim=True).clamp_min(EPS)


def fold_queries(q: torch.Tensor, n_kv: int) -> torch.Tensor:
    """``[..., HQ, D]`` -> ``[..., HKV, D]``: unit queries summed per GQA group, divided by HQ.

    Then ``Σ_j <fold(q)[j], k̂[j]>`` is the mean over the HQ query heads of the cosine.
    """
    *lead, hq, d = q.shape
    return unit(q).view(*lead, n_kv, hq // n_kv, d).sum(-2) / hq


def fold_layers_as_heads(q: torch.Tensor, n_kv: int,
                         layer_weight: torch.Tensor | None = None) -> torch.Tensor:
    """``[..., L, HQ, D]`` -> ``[..., 1, 1, L*HKV*D]``: the L layers' heads as one set of heads.

    The fold of all L*HQ heads is the mean over layers of each layer's fold; flattened, it is
    one lane of one feature row, to be scored against keys ``k̂.flatten(1)[:, None, None]``.
    ``layer_weight`` ``[L]`` (mean 1; a learned router's, issue 13) turns the mean over
    layers into a weighted mean: layer ``l``'s cosines count ``layer_weight[l]`` times.
    """
    folded = fold_queries(q, n_kv) / q.shape[-3]  # [..., L, HKV, D]
    if layer_weight is not None:
        folded = folded * layer_weight.to(folded)[:, None, None]
    return folded.flatten(-3)[..., None, None, :]


def reduce_tokens(s: torch.Tensor, top_tokens: int = 1) -> torch.Tensor:
    """``[..., T]`` per-token scores (-inf = padding) -> ``[...]``: their max (``top_tokens``
    1), else the mean of the ``top_tokens`` best finite ones (-inf if none is finite)."""
    if top_tokens == 1:
        return s.amax(-1)
    best = s.topk(min(top_tokens, s.shape[-1]), -1).values
    real = torch.isfinite(best)
    mean = best.masked_fill(~real, 0.0).sum(-1) / real.sum(-1).clamp_min(1)
    return mean.masked_fill(~real.any(-1), float("-inf"))


def chunk_scores(
    qf: torch.Tensor, k_hat: torch.Tensor, q_mask: torch.Tensor | None = None, block: int = BLOCK,
    top_tokens: int = 1, key_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """``S[b, l, n] = max_t Σ_{h,d} qf[b, t, l, h, d] · k_hat[n, l, h, d]``, in blocks of chunks
    (the mean of the ``top_tokens`` best tokens instead of the max, see :func:`reduce_tokens`).

    The rule's core: with folded queries and unit keys it is ``max_t mean_h cos``, one GEMM
    per lane and block of ``block`` chunks, never an ``[N, T, HQ]`` tensor. Lanes ``L`` are
    the layers scored apart (per-layer rule) or 1 (one set of heads).

    qf: `[B, T, L, HKV, D]` (from :func:`fold_queries` / :func:`fold_layers_as_heads`),
    k_hat: `[N, L, HKV, D]` unit keys, q_mask: `[B, T]` bool, False = padding token (left out
    of the max) -> `[B, L, N]` float32. Differentiable (training calls it).
    k_hat may be stored narrower (bf16, fp16, fp8 e4m3 times ``key_scale`` `[N]`): each block
    is widened to float32 before its GEMM, so no full-size float32 copy is made.
    """
    out = []
    for s in range(0, k_hat.shape[0], block):
        keys = k_hat[s : s + block].float()  # float32 keys: the same tensor, no copy
        if key_scale is not None:
            keys = keys * key_scale[s : s + block].float().reshape(-1, *[1] * (keys.dim() - 1))
        blk = torch.einsum("nlhd,btlhd->blnt", keys, qf)  # [B, L, n, T]
        if q_mask is not None:
            blk = blk.masked_fill(~q_mask[:, None, None], float("-inf"))
        out.append(reduce_tokens(blk, top_tokens))
    if not out:
        return qf.new_zeros((qf.shape[0], k_hat.shape[1], 0))
    return torch.cat(out, -1)


def token_mask(q_len: torch.Tensor | None, T: int) -> torch.Tensor | None:
    """``[B]`` real tokens of each query -> the ``[B, T]`` bool mask of :func:`chunk_scores`
    (False = padding, ``t >= q_len[b]``); None stays None (all ``T`` real)."""
    if q_len is None:
        return None
    return torch.arange(T, device=q_len.device)[None] < q_len[:, None]


def chunk_scores_ref(
    q: torch.Tensor,
    keys: torch.Tensor,
    key_scale: torch.Tensor | None = None,
    keys_normalized: bool = False,
    top_tokens: int = 1,
    q_len: torch.Tensor | None = None,
) -> torch.Tensor:
    """S[b, n] = max_t mean_h cos(q[b, t, h], k[n, h // G]) (``top_tokens``: see
    :func:`reduce_tokens`).

    q: `[B, T, HQ, D]`, keys: `[N, HKV, D]`, key_scale: `[N]` or None, q_len: `[B]` int real
    tokens of each query (tokens at t >= q_len[b] are padding, left out) or None (all T)
    -> `[B, N]` float32. With keys_normalized, keys * key_scale are taken as unit vectors
    (not renormalised).
    """
    k = keys.float()
    if key_scale is not None:
        k = k * key_scale.float()[:, None, None]
    k_hat = k if keys_normalized else unit(k)
    qf = fold_queries(q, keys.shape[1]).flatten(-2)[:, :, None, None]  # [B, T, 1, 1, HKV*D]
    mask = token_mask(None if q_len is None else q_len.to(q.device), q.shape[1])
    return chunk_scores(qf, k_hat.flatten(1)[:, None, None], mask, top_tokens=top_tokens)[:, 0]


def doc_scores_ref(
    s: torch.Tensor, chunk_doc: torch.Tensor, num_docs: int, doc_mask: torch.Tensor | None
) -> torch.Tensor:
    """Max over each document's chunks; masked or empty docs get -inf. s: `[..., N]` ->
    `[..., M]`, chunk_doc: `[N]`, doc_mask: `[M]` bool or None. Differentiable (amax)."""
    out = s.new_full((*s.shape[:-1], num_docs), float("-inf"), dtype=torch.float32)
    idx = chunk_doc.long().expand_as(s)
    out = out.scatter_reduce(-1, idx, s.float(), reduce="amax", include_self=True)
    if doc_mask is not None:
        out = out.masked_fill(~doc_mask.bool(), float("-inf"))
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
    top_tokens: int = 1,
    q_len: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference route_topk on `[B, T, HQ, D]` queries (``q_len`` `[B]`: real tokens of each,
    None = all T): (doc ids `[B, k]`, scores `[B, k]`, chunk scores `[B, N]`)."""
    s = chunk_scores_ref(q, keys, key_scale, keys_normalized, top_tokens, q_len)
    ids, val = topk_docs(doc_scores_ref(s, chunk_doc, num_docs, doc_mask), k)
    return ids, val, s
