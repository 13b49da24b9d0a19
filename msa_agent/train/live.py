"""Routing queries (and documents) encoded live, through an adapter, for training it.

A router with a :class:`~msa_agent.model.query_adapter.QueryAdapter` cannot read its queries
from the frozen-backbone cache (:mod:`msa_agent.train.cache`): the adapter changes the
backbone's states on the query side. Documents never pass through the query adapter, so their
cached chunk means stay exact. Each step forwards only the batch's queries (short texts) with
gradients reaching the adapter.

:class:`LiveDocs` is the same for documents through a router's *document* adapter (LoRA on
the documents' forward for their routing keys, ``Router.doc_adapter``): each step forwards the
batch's candidate documents through the layers from the adapter's first up (their base
forward below it is kept from the first time they are seen), chunk-mean pooled as the cache
pools them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from msa_agent.model.encoder import Encoder, batch_chunk_mean, length_batches
from msa_agent.model.query_adapter import QueryAdapter
from msa_agent.train.cache import Packed


class LiveQueries:
    """Query token ids plus the encoder and adapter to turn them into MSA-layer states."""

    def __init__(self, encoder: Encoder, ids: Sequence[Sequence[int]],
                 adapter: QueryAdapter) -> None:
        if any(not q for q in ids):
            raise ValueError("cannot encode an empty query")
        self.encoder, self.ids, self.adapter = encoder, [list(q) for q in ids], adapter
        encoder.lm.model.requires_grad_(False)  # only the adapter (and router) learn

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, Tmax, L, hidden]`` states of queries ``rows`` and their ``[B, Tmax]`` mask,
        differentiable with respect to the adapter."""
        states = self.states(rows)
        x = pad_sequence(states, batch_first=True)
        n = torch.tensor([s.shape[0] for s in states], device=x.device)
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < n[:, None]
        return x, mask

    @torch.no_grad()
    def packed(self, rows: Sequence[int] | None = None) -> Packed:
        """States of queries ``rows`` (default all) as a fp16 :class:`Packed` on the model's
        device, for mining and scoring with ``score_matrix``."""
        rows = range(len(self)) if rows is None else rows
        return Packed.of([s.half() for s in self.states(rows)])

    def states(self, rows: Sequence[int]) -> list[torch.Tensor]:
        """``[T_i, L, hidden]`` per query of ``rows``, in order. Forwards are grouped by
        length: one long query must not pad the whole batch (the activations kept for
        backward grow with the padded tokens)."""
        ids = [self.ids[i] for i in rows]
        lengths = [len(q) for q in ids]
        states: list[torch.Tensor | None] = [None] * len(ids)
        for part in length_batches(lengths, self.encoder.batch_tokens):
            h = self.encoder.hidden_batch([ids[j] for j in part], self.adapter)
            for b, j in enumerate(part):
                states[j] = h[b, : lengths[j]]
        return states  # type: ignore[return-value]


class LiveDocs(LiveQueries):
    """Documents' pieces (token ids, as the cache splits them) through a document adapter:
    :meth:`states` gives each document's chunk means ``[C_i, L, hidden]`` (its pieces'
    chunks in order), as :class:`~msa_agent.train.cache.HiddenCache` stores them.

    The adapter changes nothing below its first layer, so the first time a piece is seen its
    base forward up to that layer is kept (the residual stream entering it, and the chunk
    means of the MSA layers at or below it); every step then runs only the layers above,
    resumed from that stream, as ingest does (``Encoder.hidden_above``)."""

    def __init__(self, encoder: Encoder, pieces: Sequence[Sequence[Sequence[int]]],
                 adapter: QueryAdapter) -> None:
        flat = [list(p) for ps in pieces for p in ps]
        super().__init__(encoder, flat, adapter)
        counts = torch.tensor([len(ps) for ps in pieces])
        self.first = [0, *counts.cumsum(0).tolist()]  # doc d owns pieces first[d]:first[d+1]
        self.resume = min(adapter.layer_ids)
        # piece -> (stream [T, hidden] entering `resume`, chunk means [C, L_low, hidden])
        self._base: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.first) - 1

    def states(self, rows: Sequence[int]) -> list[torch.Tensor]:
        """Chunk means ``[C_i, L, hidden]`` per document of ``rows`` (differentiable)."""
        owned = [list(range(self.first[d], self.first[d + 1])) for d in rows]
        flat = [p for ps in owned for p in ps]
        pooled = self._pooled(flat)
        out, at = [], 0
        for ps in owned:
            out.append(torch.cat([pooled[at + k] for k in range(len(ps))]))
            at += len(ps)
        return out

    def _pooled(self, flat: Sequence[int]) -> list[torch.Tensor]:
        """Chunk means ``[C, L, hidden]`` of pieces ``flat``: the kept base layers, then the
        adapted layers above ``resume``, batched by length."""
        self._keep_base(flat)
        lengths = [len(self.ids[p]) for p in flat]
        enc, out = self.encoder, [None] * len(flat)
        for part in length_batches(lengths, enc.batch_tokens):
            ids = [self.ids[flat[j]] for j in part]
            stream = pad_sequence([self._base[flat[j]][0] for j in part], batch_first=True)
            h = enc.hidden_above(ids, self.adapter, self.resume, stream)
            for j, x in zip(part, batch_chunk_mean(h, [lengths[j] for j in part],
                                                   enc.chunk_size)):
                out[j] = torch.cat([self._base[flat[j]][1], x], 1)
        return out  # type: ignore[return-value]

    def _keep_base(self, flat: Sequence[int]) -> None:
        """The base forward up to ``resume`` of the pieces of ``flat`` not seen before."""
        new = sorted({p for p in flat if p not in self._base})
        lengths = [len(self.ids[p]) for p in new]
        p = self.encoder.chunk_size
        for part in length_batches(lengths, self.encoder.batch_tokens):
            n = [lengths[j] for j in part]
            stream, low = self.encoder.stream_entering([self.ids[new[j]] for j in part],
                                                       self.resume)
            # [B, T, L_low, hidden] in MSA layer order; L_low = 0 when the adapter starts
            # below every MSA layer
            h = (torch.stack(list(low.values()), 2).float() if low
                 else stream.new_zeros((*stream.shape[:2], 0, stream.shape[-1]),
                                       dtype=torch.float32))
            for b, (j, means) in enumerate(zip(part, batch_chunk_mean(h, n, p))):
                # clone: a view would keep the whole padded batch alive
                self._base[new[j]] = (stream[b, : n[b]].clone(), means)
