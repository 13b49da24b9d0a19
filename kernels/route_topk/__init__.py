"""route_topk: fused MSA routing score, document max-reduction, mask and top-k.

The rule is defined once, in ``naive.py`` (README.md, "Where the rule lives"); this is its
fused Triton form, dispatched by device (torch reference otherwise).
"""

from __future__ import annotations

import torch

from .._dispatch import use_triton
from .naive import route_topk_ref


def route_topk(
    q: torch.Tensor,
    keys: torch.Tensor,
    chunk_doc: torch.Tensor,
    num_docs: int,
    k: int = 16,
    *,
    doc_mask: torch.Tensor | None = None,
    key_scale: torch.Tensor | None = None,
    keys_normalized: bool = False,
    fp8_dot: bool = False,
    return_chunk_scores: bool = False,
    persistent: bool = True,
    top_tokens: int = 1,
    q_len: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """Top-k documents by MSA chunk score, one pass over the routing keys.

    S[n] = max_t mean_h cos(q[t, h], keys[n, h // G]); doc score = max over its chunks.

    Args:
        q: `[T, HQ, D]` router queries of one request, or `[B, T, HQ, D]` for B requests
            sharing one pass over the keys. HQ = G * HKV.
        keys: `[N, HKV, D]` pooled routing keys (bf16, fp16, fp32 or float8_e4m3fn).
        chunk_doc: `[N]` int, the document (0..num_docs-1) of each chunk.
        num_docs: M, the number of documents.
        k: how many documents to return.
        doc_mask: `[M]` bool, False = never return this document (applied before top-k).
        key_scale: `[N]` float32 per-chunk dequant scale for fp8 keys (k = k8 * scale). A
            positive scale cancels in the cosine, so it is only read with keys_normalized.
        keys_normalized: keys (times key_scale) already have unit norm per (chunk, kv head):
            skip the norms; the score becomes a pure GEMM.
        fp8_dot: with fp8 keys, also quantise the folded query to e4m3 (one scale per query
            token, shared by the kv heads) and use the fp8 tensor-core dot; faster (0.56 vs
            0.67 ms/layer on H100), less exact (top-16 overlap 0.93 with the exact path).
        return_chunk_scores: also return the per-chunk scores.
        persistent: Triton only: a fixed grid of programs (2 per SM) striding over the keys
            in one flat loop (default; docs/performance.md); False launches one program per
            block of chunks. Same result either way.
        top_tokens: the chunk score is the mean of the ``top_tokens`` best query tokens'
            scores instead of their max (1, the paper's rule); naive.reduce_tokens.
        q_len: `[B]` int, the number of real tokens of each query of a padded batch: tokens
            at t >= q_len[b] are padding and never count (not in the max, nor in the mean of
            the ``top_tokens`` best, whose divisor is min(q_len[b], top_tokens)); a query of
            no real token scores -inf. None: all T tokens are real. Batched queries only.

    Returns:
        ids `[k]` int64 (or `[B, k]`), scores `[k]` float32 (or `[B, k]`), descending.
        Slots past the number of valid (unmasked, non-empty) documents hold id -1 and
        score -inf. With return_chunk_scores, a third tensor `[N]` (or `[B, N]`) float32.
    """
    batched = q.dim() == 4
    qb = q if batched else q[None]
    if q_len is not None and (not batched or q_len.shape != (qb.shape[0],)):
        raise ValueError(f"q_len must be [B] for queries [B, T, HQ, D], got {tuple(q_len.shape)}"
                         f" for {tuple(q.shape)}")
    if use_triton(keys):
        from .parallel import route_topk_triton

        ids, val, cs = route_topk_triton(
            qb, keys, chunk_doc, num_docs, k, doc_mask, key_scale, keys_normalized, fp8_dot,
            return_chunk_scores, persistent, top_tokens, q_len,
        )  # fmt: skip
    else:
        ids, val, cs = route_topk_ref(
            qb, keys, chunk_doc, num_docs, k, doc_mask, key_scale, keys_normalized, top_tokens,
            q_len,
        )  # fmt: skip
    out = (ids, val, cs) if return_chunk_scores else (ids, val)
    return out if batched else tuple(t[0] for t in out)


__all__ = ["route_topk"]
