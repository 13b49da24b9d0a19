"""Resident routing index: the paper's rule over every live chunk, with filters before top-k.

The rule itself (chunk score = max over query tokens of the mean over query heads of the
cosine, GQA-grouped; document score = max over its chunks) is defined once, in
``msa_agent.kernels.route_topk.naive``; this module only lays the index out for it. Queries
are ``[T, L, Hq, D]``, keys ``[N, L, Hkv, D]``. Layers combine into one ranking by
``combine``:
- ``heads``: layers act as extra heads of the same rule, i.e. queries ``[T, L*Hq, D]``
  against keys ``[N, L*Hkv, D]`` (one GEMM; the fused Triton ``route_topk`` on CUDA);
- ``mean`` / ``max``: the rule per layer, then the mean or max of the document scores.

``top_tokens`` (the index's, set from the space's ``route_top_tokens``) is the query side of
the rule: a chunk scores the max over query tokens (1, the paper's) or the mean of its
``top_tokens`` best tokens (``naive.reduce_tokens``).

Several queries (``rank_many``) share one pass over the keys: padded to ``[B, Tmax, L, Hq,
D]`` with their lengths (the kernel's ``q_len``, the torch rule's query-token mask), so each
is ranked as alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from msa_agent.kernels.route_topk.naive import (
    chunk_scores,
    doc_scores_ref,
    fold_layers_as_heads,
    fold_queries,
    token_mask,
    unit,
)
from msa_agent.runtime.rows import GrowableRows


def head_chunk_scores(keys: torch.Tensor, q: torch.Tensor, top_tokens: int = 1,
                      key_scale: torch.Tensor | None = None,
                      q_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Layers-as-heads chunk scores ``[N]``: unit keys ``[N, L, H, D]`` (times ``key_scale``
    ``[N]`` for fp8), queries ``[T, L, Hq, D]`` (the rule on ``[T, L*Hq, D]`` against
    ``[N, L*H, D]``); or ``[B, N]`` for a padded batch ``[B, T, L, Hq, D]`` whose real tokens
    are ``q_mask`` ``[B, T]`` (None: all)."""
    batched = q.dim() == 5
    qf = fold_layers_as_heads(q if batched else q[None], keys.shape[2])  # [B, T, 1, 1, L*H*D]
    s = chunk_scores(qf, keys.flatten(1)[:, None, None], q_mask, top_tokens=top_tokens,
                     key_scale=key_scale)[:, 0]  # [B, N]
    return s if batched else s[0]


def layer_chunk_scores(keys: torch.Tensor, q: torch.Tensor, top_tokens: int = 1,
                       key_scale: torch.Tensor | None = None,
                       q_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-layer chunk scores ``[L, N]``: the rule in each layer (unit keys ``[N, L, H, D]``,
    times ``key_scale`` for fp8; queries ``[T, L, Hq, D]``); or ``[B, L, N]`` for a padded
    batch ``[B, T, L, Hq, D]`` (``q_mask`` as :func:`head_chunk_scores`)."""
    batched = q.dim() == 5
    qf = fold_queries(q if batched else q[None], keys.shape[2])  # [B, T, L, H, D]
    s = chunk_scores(qf, keys, q_mask, top_tokens=top_tokens, key_scale=key_scale)
    return s if batched else s[0]


def padded(qs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Queries ``[T_i, L, Hq, D]`` -> one ``[B, Tmax, L, Hq, D]`` (zeros past ``T_i``) and the
    lengths ``[B]``; None when every length is equal (nothing padded; one query: no copy)."""
    lens = [q.shape[0] for q in qs]
    if len(set(lens)) == 1:
        return (qs[0][None] if len(qs) == 1 else torch.stack(list(qs))), None
    q_len = torch.tensor(lens, dtype=torch.long, device=qs[0].device)
    return torch.nn.utils.rnn.pad_sequence(list(qs), batch_first=True), q_len


KEY_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16,
              "float16": torch.float16, "float8": torch.float8_e4m3fn}
FP8_MAX = 448.0  # largest finite float8_e4m3fn


LOAD_ROWS = 1 << 16  # chunk rows normalised per step when keys are added in bulk


def narrow_keys(unit_keys: torch.Tensor, key_dtype: str
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Unit keys ``[N, L, H, D]`` in the resident dtype, plus the per-row dequant scale
    ``[N]`` for fp8 (each row's largest magnitude maps to 448, so ``k ≈ k8 * scale``)."""
    if key_dtype != "float8":
        return unit_keys.to(KEY_DTYPES[key_dtype]), None
    scale = unit_keys.flatten(1).abs().amax(1).clamp_min(1e-12) / FP8_MAX  # [N]
    k8 = (unit_keys / scale.reshape(-1, 1, 1, 1)).to(torch.float8_e4m3fn)
    return k8, scale.float()


def top_docs(doc: torch.Tensor, k: int) -> list[int]:
    """Positions of the ``k`` best of ``doc`` ``[M]``, best first; equal scores in ascending
    position (``torch.topk`` leaves their order unspecified), so that a merge of shards'
    top-k (``msa_agent.runtime.parallel``) gives the same list. ``k`` >= 1."""
    kth = torch.topk(doc, k).values[-1]
    tied_or_better = torch.nonzero(doc >= kth).flatten()  # [C >= k], ascending positions
    order = torch.sort(doc[tied_or_better], descending=True, stable=True).indices[:k]
    return tied_or_better[order].tolist()


@dataclass
class Ranked:
    """Top documents of one query: positions in the index, combined and per-layer scores."""

    docs: list[int]
    scores: list[float]
    layer_scores: list[list[float]]
    best_chunk: list[int]  # chunk offset within its document that scored highest


class RoutingIndex:
    """Unit routing keys of every live chunk (times their layer's learned weight, if the
    router has one), resident on one device, plus chunk->doc map.

    ``use_kernel``: rank ``combine="heads"`` with the fused Triton ``route_topk`` (True), with
    the torch rule of ``naive.py`` (False), or auto (None: the kernel when keys are on CUDA).
    On CPU tensors the kernel runs only under ``TRITON_INTERPRET=1`` (tests); otherwise
    ``route_topk`` itself falls back to the naive reference.

    ``key_dtype``: the resident keys' dtype (``KEY_DTYPES``): float32 (exact), or bfloat16 /
    float16 / float8 (e4m3 with a per-row scale) for 1/2 or 1/4 of the memory. Scores are
    always computed in float32 from the widened keys, by the kernel or by the torch rule.
    """

    def __init__(self, device: torch.device | str = "cpu", use_kernel: bool | None = None,
                 top_tokens: int = 1, key_dtype: str = "float32",
                 layer_weight: torch.Tensor | None = None) -> None:
        if key_dtype not in KEY_DTYPES:
            raise ValueError(f"key_dtype must be one of {sorted(KEY_DTYPES)}, got {key_dtype!r}")
        self.device = torch.device(device)
        self.top_tokens = top_tokens
        self.key_dtype = key_dtype
        # a router's learned weight of each layer ([L], mean 1; None: equal). Resident rows
        # are the unit keys times their layer's weight: <q̂, w_l k̂> sums to the weighted
        # mean of the rule (naive.fold_layers_as_heads) in the fused kernel and the torch
        # rule alike, with no change to either; per-layer scores are weighted cosines
        self.layer_weight = None if layer_weight is None else layer_weight.float().to(
            self.device)
        self.use_kernel = self.device.type == "cuda" if use_kernel is None else use_kernel
        # resident rows, appended in place (rows.py): [N, L, H, D] unit keys (fp8: divided
        # by key_scale), [N] fp8 scales, [N] the document of each chunk row
        self._keys = GrowableRows(torch.empty(0, dtype=KEY_DTYPES[key_dtype],
                                              device=self.device))
        self._scale = (GrowableRows(torch.empty(0, device=self.device))
                       if key_dtype == "float8" else None)
        self._chunk_doc = GrowableRows(torch.empty(0, dtype=torch.long, device=self.device))
        # [M, hidden] unit summary vector of each document (a space with a summary_layer)
        self._summary: GrowableRows | None = None
        self.doc_ids: list[str] = []
        self.doc_ns = torch.empty(0, dtype=torch.long)  # namespace code per doc
        self.alive = torch.empty(0, dtype=torch.bool)
        self._pos: dict[str, int] = {}
        self._ns_code: dict[str, int] = {}

    def __len__(self) -> int:
        return int(self.alive.sum())

    @property
    def keys(self) -> torch.Tensor:
        """``[N, L, H, D]`` resident rows: unit keys times the layer weights if any (fp8:
        divided by :attr:`key_scale`)."""
        return self._keys.view()

    @property
    def key_scale(self) -> torch.Tensor | None:
        """``[N]`` per-row scales of fp8 keys; None for other dtypes."""
        return None if self._scale is None else self._scale.view()

    @property
    def chunk_doc(self) -> torch.Tensor:
        """``[N]`` the document position of each chunk row."""
        return self._chunk_doc.view()

    def add(
        self, ids: Sequence[str], namespaces: Sequence[str], route_k: Sequence[torch.Tensor],
        summary: torch.Tensor | None = None,
    ) -> None:
        """Append documents; ``route_k[i]`` is ``[C_i, L, H, D]`` (unnormalised); ``summary``
        ``[len(ids), hidden]`` their summary vectors, in an index that keeps them."""
        if not ids:
            return
        self.add_rows(ids, namespaces, torch.cat(list(route_k)), [r.shape[0] for r in route_k],
                      summary=summary)

    def add_rows(self, ids: Sequence[str], namespaces: Sequence[str], keys: torch.Tensor,
                 counts: Sequence[int], block_rows: int = LOAD_ROWS,
                 summary: torch.Tensor | None = None) -> None:
        """Append documents whose unnormalised rows come as one tensor ``[sum(counts), L, H,
        D]`` (any float dtype, any device; e.g. a whole space read from the store). Whole
        documents of about ``block_rows`` rows at a time are moved to the index's device,
        normalised there and narrowed, into buffers reserved once: opening a large space
        makes no float32 copy of every key on the host and no growth copy. ``summary``:
        as :meth:`add`."""
        if not ids:
            return
        self._reserve(int(keys.shape[0]), tuple(keys.shape[1:]))
        doc, row = 0, 0
        while doc < len(ids):
            end, rows = doc, 0
            while end < len(ids) and (end == doc or rows + counts[end] <= block_rows):
                rows += counts[end]
                end += 1
            self.add_unit(ids[doc:end], namespaces[doc:end],
                          self._resident(keys[row:row + rows]), counts[doc:end],
                          None if summary is None else summary[doc:end])
            doc, row = end, row + rows

    def _resident(self, keys: torch.Tensor) -> torch.Tensor:
        """Unnormalised keys ``[N, L, H, D]`` -> resident rows: unit, times their layer's
        learned weight when the router has one."""
        rows = unit(keys.to(self.device))
        if self.layer_weight is not None:
            rows = rows * self.layer_weight[None, :, None, None]
        return rows

    def _reserve(self, more: int, row_shape: tuple[int, ...]) -> None:
        """Room for ``more`` chunk rows in every resident buffer."""
        self._keys.reserve(len(self._keys) + more, row_shape)
        self._chunk_doc.reserve(len(self._chunk_doc) + more, ())
        if self._scale is not None:
            self._scale.reserve(len(self._scale) + more, ())

    def add_unit(self, ids: Sequence[str], namespaces: Sequence[str], keys: torch.Tensor,
                 counts: Sequence[int], summary: torch.Tensor | None = None) -> None:
        """Append documents whose rows are resident rows already: ``keys`` ``[sum(counts), L,
        H, D]`` (unit, times the layer weights if any), ``counts[i]`` rows for ``ids[i]``
        (rows taken from another index: not normalised or weighted again, so their scores
        stay bit-identical). ``summary``: as :meth:`add`."""
        if not ids:
            return
        self._add_summary(len(ids), summary)
        codes = [self._ns_code.setdefault(n, len(self._ns_code)) for n in namespaces]
        self.doc_ns = torch.cat([self.doc_ns, torch.tensor(codes, dtype=torch.long)])
        new, scale = narrow_keys(keys.to(self.device), self.key_dtype)
        counts = torch.tensor(list(counts), dtype=torch.long)
        first = len(self.doc_ids)
        owner = torch.repeat_interleave(torch.arange(first, first + len(ids)), counts)
        self._keys.append(new)
        if scale is not None and self._scale is not None:
            self._scale.append(scale)
        self._chunk_doc.append(owner.to(self.device))
        self.alive = torch.cat([self.alive, torch.ones(len(ids), dtype=torch.bool)])
        for i in ids:
            self._pos[i] = len(self.doc_ids)
            self.doc_ids.append(i)

    def remove(self, ids: Sequence[str]) -> None:
        """Drop documents and their chunk rows now (erasure: no key of a forgotten memory
        stays resident); the positions of the documents after them shift down. Copies the
        kept rows once."""
        drop = [self._pos[i] for i in dict.fromkeys(ids) if i in self._pos]
        if not drop:
            return
        keep = torch.ones(len(self.doc_ids), dtype=torch.bool)
        keep[drop] = False
        new_pos = (torch.cumsum(keep.long(), 0) - 1).to(self.device)  # old doc -> new doc
        rows = keep.to(self.device)[self.chunk_doc]  # [N] chunk rows kept
        self._keys.replace(self.keys[rows])
        self._chunk_doc.replace(new_pos[self.chunk_doc[rows]])
        if self._scale is not None:
            self._scale.replace(self._scale.view()[rows])
        if self._summary is not None:
            self._summary.replace(self._summary.view()[keep.to(self.device)])
        self.doc_ids = [d for d, k in zip(self.doc_ids, keep.tolist()) if k]
        self.doc_ns, self.alive = self.doc_ns[keep], self.alive[keep]
        self._pos = {d: j for j, d in enumerate(self.doc_ids)}

    def unit_rows(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Float32 resident rows of chunk ``rows`` (a bool or index tensor; None = all):
        unit keys times the layer weights if any, widened from the resident dtype; what
        another index or rank takes (``add_unit``)."""
        keys = self.keys if rows is None else self.keys[rows]
        out = keys.float()
        if self.key_scale is not None:
            scale = self.key_scale if rows is None else self.key_scale[rows]
            out = out * scale.reshape(-1, 1, 1, 1)
        return out

    def _add_summary(self, n: int, summary: torch.Tensor | None) -> None:
        """Append ``n`` documents' summary vectors ``[n, hidden]`` (unit again here): every
        document of an index has one, or none has."""
        if (summary is None) != (self._summary is None) and self.doc_ids:
            raise ValueError("every document of an index has a summary vector, or none has")
        if summary is None:
            self._summary = None
            return
        if summary.shape[0] != n:
            raise ValueError(f"{n} documents, {summary.shape[0]} summary vectors")
        if self._summary is None:
            self._summary = GrowableRows(torch.empty(0, device=self.device))
        self._summary.append(unit(summary.to(self.device, torch.float32)))

    @property
    def has_summary(self) -> bool:
        return self._summary is not None

    def summary_scores(self, vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Cosine ``[B, M]`` of each query summary vector ``[B, hidden]`` (unit) with every
        document's; -inf outside ``mask`` ``[M]``."""
        if self._summary is None:
            raise ValueError("this index keeps no summary vectors")
        s = vectors.to(self.device, torch.float32) @ self._summary.view().T
        return s.masked_fill(~mask.to(self.device)[None], float("-inf"))

    @property
    def rows(self) -> int:
        """Chunk rows resident (every one belongs to a live document)."""
        return int(self.chunk_doc.numel())

    def positions(self, ids: Sequence[str]) -> list[int]:
        """The index positions of those of ``ids`` it holds, in order."""
        return [self._pos[i] for i in ids if i in self._pos]

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

    def rank(self, q: torch.Tensor, k: int, mask: torch.Tensor, combine: str = "heads",
             explain: bool = True) -> Ranked:
        """Top-``k`` documents for queries ``[T, L, Hq, D]`` among ``mask``; without
        ``explain``, ``layer_scores`` and ``best_chunk`` are left empty (a candidate pool)."""
        return self.rank_many([q], k, mask, combine, explain)[0]

    def rank_many(self, qs: Sequence[torch.Tensor], k: int, mask: torch.Tensor,
                  combine: str = "heads", explain: bool = True) -> list[Ranked]:
        """:meth:`rank` of each query of ``qs`` (each ``[T_i, L, Hq, D]``), among one ``mask``,
        in one pass over the keys: the queries are padded to ``[B, Tmax, L, Hq, D]`` and
        scored together (the fused kernel's ``q_len``, or the torch rule's query-token mask),
        each one's padding left out, so each row is its query ranked alone: the same
        documents in the same order (equal scores by ascending position, as ``top_docs``),
        scores equal up to the batched GEMM's float rounding (~1e-7). Evidence (``explain``)
        is each query's own, from its unpadded tokens."""
        if not qs:
            return []
        if not self.doc_ids or k <= 0 or not bool(mask.any()):
            return [Ranked([], [], [], []) for _ in qs]
        qs = [q.to(self.device) for q in qs]
        k, mask = min(k, int(mask.sum())), mask.to(self.device)
        if combine == "heads" and self.use_kernel:
            return self._rank_fused(qs, k, mask, explain)
        doc = self._doc_scores(qs, mask, combine)  # [B, M]
        return [self._ranked(top_docs(row, k), row, q, combine, explain)
                for row, q in zip(doc, qs)]

    def _doc_scores(self, qs: Sequence[torch.Tensor], mask: torch.Tensor, combine: str
                    ) -> torch.Tensor:
        """The torch rule's combined document scores ``[B, M]`` of queries ``qs`` (masked
        documents -inf): one GEMM per block of keys for the whole padded batch."""
        q, q_len = padded(qs)  # [B, Tmax, L, Hq, D], [B] or None
        q_mask = token_mask(q_len, q.shape[1])  # [B, Tmax] or None
        if combine == "heads":
            chunk = head_chunk_scores(self.keys, q, self.top_tokens, self.key_scale, q_mask)
        else:
            chunk = layer_chunk_scores(self.keys, q, self.top_tokens, self.key_scale, q_mask)
        doc = doc_scores_ref(chunk, self.chunk_doc, len(self.doc_ids), mask)  # [B(, L), M]
        if combine != "heads":
            doc = doc.mean(1) if combine == "mean" else doc.amax(1)
        return doc

    def _ranked(self, top: list[int], doc: torch.Tensor, q: torch.Tensor, combine: str,
                explain: bool) -> Ranked:
        """The :class:`Ranked` of positions ``top`` (``doc``: combined scores ``[M]``), with
        their evidence for query ``q`` when ``explain``."""
        if not explain:  # one transfer, not one per document
            return Ranked(top, doc[top].tolist() if top else [], [], [])
        return self._explain(top, doc, q, combine)

    def rank_per_layer(self, q: torch.Tensor, k: int, mask: torch.Tensor) -> list[list[int]]:
        """Each layer's own top-``k`` documents (the paper selects per layer)."""
        if not self.doc_ids or not bool(mask.any()):
            return [[] for _ in range(q.shape[1])]
        chunk = layer_chunk_scores(self.keys, q.to(self.device), self.top_tokens, self.key_scale)
        per_layer = doc_scores_ref(chunk, self.chunk_doc, len(self.doc_ids), mask.to(self.device))
        return torch.topk(per_layer, min(k, int(mask.sum())), dim=-1).indices.tolist()

    def _rank_fused(self, qs: Sequence[torch.Tensor], k: int, mask: torch.Tensor,
                    explain: bool = True) -> list[Ranked]:
        """The fused Triton ``route_topk`` over layers-as-heads: one call, one pass over the
        keys for every query (``q_len`` when their lengths differ). Each row's picks are put
        in ``top_docs``'s order (equal scores by ascending position: the Triton top-k already
        breaks ties so, its torch.topk fallback does not)."""
        from msa_agent.kernels import route_topk

        n, layers, h, d = self.keys.shape
        q, q_len = padded(qs)  # [B, Tmax, L, Hq, D], [B] or None
        ids, scores = route_topk(
            q.reshape(*q.shape[:2], -1, d), self.keys.view(n, layers * h, d),
            self.chunk_doc, len(self.doc_ids), k, doc_mask=mask, keys_normalized=True,
            top_tokens=self.top_tokens, key_scale=self.key_scale, q_len=q_len,
        )  # [B, k] each
        out = []
        for row_ids, row_scores, q1 in zip(ids.tolist(), scores.float().cpu().tolist(), qs):
            picked = sorted(((p, v) for p, v in zip(row_ids, row_scores) if p >= 0),
                            key=lambda pv: (-pv[1], pv[0]))  # score desc., then position
            top = [p for p, _ in picked]
            doc = torch.full((len(self.doc_ids),), float("-inf"))
            doc[top] = torch.tensor([v for _, v in picked], dtype=torch.float32)
            out.append(self._ranked(top, doc, q1, "heads", explain))
        return out

    def evidence(self, docs: list[int], scores: list[float], q: torch.Tensor,
                 combine: str = "heads") -> Ranked:
        """``rank``'s explanation of positions ``docs`` whose ``scores`` were computed
        elsewhere (a sharded rank's merge): per-layer scores and best chunk, in that order."""
        doc = torch.full((len(self.doc_ids),), float("-inf"))
        doc[docs] = torch.tensor(scores, dtype=torch.float32)
        return self._explain(docs, doc, q.to(self.device), combine)

    def _explain(self, top: list[int], doc: torch.Tensor, q: torch.Tensor, combine: str) -> Ranked:
        """Per-layer scores and best chunk of the selected documents (``doc``: their combined
        scores, by position)."""
        layer, _, best = self._evidence(top, q, combine)
        return Ranked(top, doc[top].tolist() if top else [], layer, best)

    def _evidence(self, docs: list[int], q: torch.Tensor, combine: str
                  ) -> tuple[list[list[float]], torch.Tensor, list[int]]:
        """For positions ``docs`` (distinct): each one's per-layer best chunk score ``[L]``,
        its best combined chunk score, and that chunk's offset in the document. Their chunks
        are scored together, once, and reduced per document with scatters: no loop over
        documents, one host transfer per output."""
        if not docs:
            return [], torch.empty(0), []
        rows, slot = self._rows_of(docs)
        per = layer_chunk_scores(rows, q, self.top_tokens)  # [L, C]
        pick = head_chunk_scores(rows, q, self.top_tokens) if combine == "heads" else per.mean(0)
        n, c = len(docs), slot.numel()
        layer = _per_doc_max(per, slot, n)  # [L, n]
        best_val = _per_doc_max(pick[None], slot, n)[0]  # [n]
        at = torch.arange(c, device=slot.device)
        first = torch.full((n,), c, device=slot.device).scatter_reduce(0, slot, at, "amin")
        at_best = torch.where(pick == best_val[slot], at, c)  # the first best row, as argmax
        best = torch.full((n,), c, device=slot.device).scatter_reduce(0, slot, at_best, "amin")
        return layer.T.tolist(), best_val, (best - first).tolist()

    def _rows_of(self, docs: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The resident rows ``[C, L, H, D]`` of positions ``docs`` (distinct) and the slot in
        ``docs`` of each row's document ``[C]``."""
        slot_of = torch.full((len(self.doc_ids),), -1, dtype=torch.long, device=self.device)
        slot_of[torch.tensor(docs, device=self.device)] = torch.arange(len(docs),
                                                                       device=self.device)
        hit = slot_of[self.chunk_doc] >= 0  # [N] rows of the selected documents
        return self.unit_rows(hit), slot_of[self.chunk_doc[hit]]

    def _combined(self, docs: list[int], q: torch.Tensor, combine: str) -> list[float]:
        """:meth:`_evidence`'s combined score of each of ``docs`` alone: under "heads" one
        scoring of their chunks and one scatter (no per-layer scores, no best chunk, one host
        transfer); the per-layer rules need the per-layer scores anyway."""
        if combine != "heads":
            return _combine_layers(self._evidence(docs, q, combine)[0], combine)
        rows, slot = self._rows_of(docs)
        pick = head_chunk_scores(rows, q, self.top_tokens)  # [C]
        return _per_doc_max(pick[None], slot, len(docs))[0].tolist()

    def explain(self, ids: Sequence[str], q: torch.Tensor, combine: str = "heads",
                evidence: bool = True) -> Ranked:
        """The routing evidence of given documents (by id, unknown ones skipped): their
        combined score under ``combine``, per-layer scores and best chunk, in the given order.
        Used for memories another channel found (hybrid recall). ``evidence=False``: the
        combined scores alone (``layer_scores`` and ``best_chunk`` empty), as the completed
        fusion scores need them: the same scores for less work."""
        q = q.to(self.device)
        docs = [self._pos[i] for i in ids if i in self._pos]
        uniq = list(dict.fromkeys(docs))
        at = {d: i for i, d in enumerate(uniq)}
        if not evidence:
            score = self._combined(uniq, q, combine) if uniq else []
            return Ranked(docs, [score[at[d]] for d in docs], [], [])
        layer, best_val, best = self._evidence(uniq, q, combine)
        score = best_val.tolist() if combine == "heads" else _combine_layers(layer, combine)
        return Ranked(docs, [score[at[d]] for d in docs], [layer[at[d]] for d in docs],
                      [best[at[d]] for d in docs])


def _per_doc_max(scores: torch.Tensor, slot: torch.Tensor, n: int) -> torch.Tensor:
    """``[R, C]`` chunk scores -> ``[R, n]``: each document's best, by its chunks' ``slot``."""
    ninf = torch.full((scores.shape[0], n), float("-inf"), device=scores.device)
    return ninf.scatter_reduce(1, slot.expand_as(scores), scores, "amax")


def _combine_layers(layer: list[list[float]], combine: str) -> list[float]:
    """Each document's per-layer best scores ``[n][L]`` combined by the per-layer rule
    ("mean" or "max" over layers)."""
    if not layer:  # no documents (an amax over an empty tensor raises)
        return []
    per = torch.tensor(layer)
    return (per.mean(1) if combine == "mean" else per.amax(1)).tolist()
