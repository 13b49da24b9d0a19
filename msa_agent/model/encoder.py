"""Encode memories and queries: one forward pass, document-local positions, 64-token pooling.

Per memory, in every MSA layer, the encoder keeps (shapes per memory; L = MSA layers):
- ``route_k``  ``[C, L, Hr, D]``: chunk-mean routing keys (router-K projection, or the model's
  own pre-RoPE K when no router is loaded);
- ``pooled_k`` / ``pooled_v`` ``[C, L, Hkv, D]``: chunk means of K (after RoPE at
  document-local positions, as the paper pools the layer's normal keys) and of V;
- ``full_k`` / ``full_v`` ``[T, F, Hkv, D]`` (optional): exact per-token pre-RoPE K and V of
  the ``full_layers`` (F of them; the MSA layers by default, or every layer).
C = ceil(T / P); a last partial chunk averages only its real tokens.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from msa_agent.errors import InvalidInputError
from msa_agent.model.attention import rotate_memory
from msa_agent.model.capture import (
    ResumeUnsupported,
    StopForward,
    decoder_layers,
    layer_input,
    model_lock,
    resume_at,
    stop_after,
    tap_layers,
)
from msa_agent.model.loader import LoadedModel
from msa_agent.model.query_adapter import QueryAdapter, merged_copy
from msa_agent.model.router import Router
from msa_agent.model.shape import ModelShape


@dataclass
class EncodedDoc:
    """Latent state of one document (see module docstring for shapes)."""

    n_tokens: int
    route_k: torch.Tensor
    pooled_k: torch.Tensor
    pooled_v: torch.Tensor
    full_k: torch.Tensor | None = None
    full_v: torch.Tensor | None = None
    summary: torch.Tensor | None = None  # [hidden] unit summary vector (a summary_layer)

    @property
    def n_chunks(self) -> int:
        return self.route_k.shape[0]


def chunk_mean(x: torch.Tensor, n: int, size: int) -> torch.Tensor:
    """Mean-pool the first ``n`` rows of ``x`` ``[T, ...]`` per ``size`` rows -> ``[C, ...]``:
    one document; the encoder pools whole batches with :func:`batch_chunk_mean`, which equals
    it row by row (this is its reference in the tests)."""
    c = -(-n // size)
    padded = x.new_zeros((c * size, *x.shape[1:]))
    padded[:n] = x[:n]
    sums = padded.view(c, size, *x.shape[1:]).sum(1)
    counts = torch.full((c,), float(size), dtype=x.dtype, device=x.device)
    counts[-1] = n - (c - 1) * size
    return sums / counts.view(c, *([1] * (x.dim() - 1)))


def batch_chunk_mean(x: torch.Tensor, lengths: Sequence[int], size: int) -> list[torch.Tensor]:
    """:func:`chunk_mean` of every row of a right-padded batch ``x`` ``[B, T, ...]`` (row ``b``
    holds ``lengths[b]`` real rows) in one pass: ``[C_b, ...]`` per row. Each chunk sums the
    same values in the same order as :func:`chunk_mean` (padding zeroed), so results agree."""
    b, t = len(lengths), x.shape[1]
    c = -(-t // size)
    n = torch.as_tensor(list(lengths), device=x.device)
    valid = torch.arange(t, device=x.device)[None, :] < n[:, None]  # [B, T]
    padded = x.new_zeros((b, c * size, *x.shape[2:]))
    padded[:, :t] = torch.where(valid.view(b, t, *([1] * (x.dim() - 2))), x, 0.0)
    sums = padded.view(b, c, size, *x.shape[2:]).sum(2)  # [B, C, ...]
    starts = torch.arange(c, device=x.device)[None, :] * size
    counts = (n[:, None] - starts).clamp(0, size).to(x.dtype)  # [B, C]
    means = sums / counts.clamp(min=1).view(b, c, *([1] * (x.dim() - 2)))
    return [means[row, : -(-m // size)] for row, m in enumerate(lengths)]


def length_batches(lengths: Sequence[int], budget: int) -> Iterator[list[int]]:
    """Indices grouped so that (batch size x longest) <= budget; sorted by length to cut padding."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) + 1) * lengths[i] > budget:
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def packs(lengths: Sequence[int], budget: int) -> Iterator[list[int]]:
    """Indices grouped into packs of at most ``budget`` tokens in all (a longer text alone):
    what one packed forward (:func:`packed_inputs`) computes, with no padding."""
    pack: list[int] = []
    total = 0
    for i, n in enumerate(lengths):
        if pack and total + n > budget:
            yield pack
            pack, total = [], 0
        pack.append(i)
        total += n
    if pack:
        yield pack


def padded_inputs(texts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``texts`` right-padded: ids and the 0/1 attention mask, both ``[B, longest]``."""
    ids = torch.zeros((len(texts), max(len(t) for t in texts)), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, t in enumerate(texts):
        ids[row, : len(t)] = torch.as_tensor(list(t))
        mask[row, : len(t)] = 1
    return ids, mask


def packed_inputs(texts: Sequence[Sequence[int]], dtype: torch.dtype
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``texts`` end to end in one row: ids ``[1, N]``, an additive block-diagonal causal mask
    ``[1, 1, N, N]`` (each token sees its own text's earlier tokens only) and positions
    ``[1, N]`` restarting at 0 per text, so each text's states are those of its own forward."""
    ids = torch.tensor([[t for text in texts for t in text]], dtype=torch.long)
    lengths = torch.tensor([len(t) for t in texts])
    segment = torch.repeat_interleave(torch.arange(len(texts)), lengths)
    n = len(segment)
    order = torch.arange(n)
    seen = (segment[:, None] == segment[None, :]) & (order[:, None] >= order[None, :])
    mask = torch.zeros(1, 1, n, n, dtype=dtype).masked_fill(~seen, torch.finfo(dtype).min)
    positions = torch.cat([torch.arange(len(t)) for t in texts])[None]
    return ids, mask, positions


# tokens of one packed forward: its mask is [N, N], 1 MiB of float32 at 512
PACK_TOKENS = 512


class Encoder:
    """Runs the backbone once per batch of documents and pools what MSA keeps."""

    def __init__(
        self,
        lm: LoadedModel,
        layers: list[int],
        *,
        chunk_size: int = 64,
        router: Router | None = None,
        keep_full_kv: bool = False,
        full_layers: list[int] | None = None,
        batch_tokens: int = 8192,
        kv_frame: Sequence[int] = (),
        query_dtype: torch.dtype | None = None,
    ) -> None:
        """``kv_frame``: token ids the full K/V are encoded after (a chat frame; empty = the
        document alone). Routing keys and pooled K/V always come from the document alone.
        ``query_dtype``: with a router, routing queries come from a copy of the backbone in
        that dtype with its query adapter merged in (:func:`merged_copy`, made at the first
        query and again for another router); None (or no router, the model's own Q/K): from
        the backbone, the adapter hooked on."""
        self.lm, self.layers, self.chunk_size = lm, layers, chunk_size
        self.shape = ModelShape.of(lm.model)
        self.router, self.keep_full_kv, self.batch_tokens = router, keep_full_kv, batch_tokens
        # layers whose per-token K/V are kept (keep_full_kv): the MSA layers unless given
        self.full_layers = list(full_layers) if full_layers is not None else list(layers)
        self.kv_frame = list(kv_frame)
        self.query_dtype = query_dtype
        self._query_copy: tuple[Router | None, torch.nn.Module] | None = None
        self._copy_lock = threading.Lock()
        if router is not None and sorted(router.layer_ids) != sorted(layers):
            raise InvalidInputError(f"router covers layers {router.layer_ids}, space uses {layers}")

    @torch.inference_mode()
    def encode(self, docs: Sequence[Sequence[int]]) -> list[EncodedDoc]:
        """Token-id lists -> one :class:`EncodedDoc` each, in input order."""
        if any(len(d) == 0 for d in docs):
            raise InvalidInputError("cannot encode an empty document")
        out: list[EncodedDoc | None] = [None] * len(docs)
        framed = self.keep_full_kv and bool(self.kv_frame)
        for batch in length_batches([len(d) for d in docs], self.batch_tokens):
            taps = self._taps([docs[i] for i in batch], self.layers if framed else None)
            full = self._framed_full([docs[i] for i in batch]) if framed else None
            for i, doc in zip(batch, self._pool(taps, [len(docs[i]) for i in batch], full)):
                out[i] = doc
        return out  # type: ignore[return-value]

    def _taps(self, docs: Sequence[Sequence[int]], tap: Sequence[int] | None) -> dict:
        """Hidden states and K/V of the base forward; with a router's document adapter, the
        hidden states the routing keys read come from a second forward with it. That forward
        resumes at the adapter's first layer from the base forward's stream (the layers below
        are the same in both), so it costs only the layers from there up."""
        adapter = self.router.doc_adapter if self.router is not None else None
        if adapter is None:
            return self._forward(docs, ("hidden", "k", "v"), tap)
        first = min(adapter.layer_ids)
        model = self.lm.model
        with model_lock(model), layer_input(model, first) as entering:
            taps = self._forward(docs, ("hidden", "k", "v"), tap)
        above = [i for i in self.layers if i > first]  # taps at or below `first` are unchanged
        if above:
            h = self.hidden_above(docs, adapter, first, entering["hidden"])
            taps["hidden"].update({i: h[:, :, j] for j, i in enumerate(above)})
        return taps

    def _framed_full(self, docs: Sequence[Sequence[int]]) -> dict:
        """Taps of the full layers' K/V over ``kv_frame + doc``, shifted so that row ``r``
        position ``t`` is document token ``t`` (its K/V seen after the frame)."""
        p = len(self.kv_frame)
        taps = self._forward([[*self.kv_frame, *d] for d in docs], ("k", "v"), self.full_layers)
        return {x: {i: t[:, p:] for i, t in taps[x].items()} for x in ("k", "v")}

    @torch.inference_mode()
    def frame_kv(self, layers: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-RoPE K and V ``[P, len(layers), Hkv, D]`` of ``kv_frame`` itself (what a
        framed read puts before the memories), on the model's device."""
        taps = self._forward([self.kv_frame], ("k", "v"), layers)
        return tuple(torch.stack([taps[x][i][0] for i in layers], 1) for x in ("k", "v"))

    @torch.inference_mode()
    def query_vectors(self, ids: Sequence[int]) -> torch.Tensor:
        """Routing queries ``[T, L, Hq, D]``: router-Q, or the model's own pre-RoPE Q."""
        return self.query_vectors_many([ids])[0]  # a batch of one: a lone forward

    @torch.inference_mode()
    def query_vectors_many(self, queries: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """:meth:`query_vectors` of several queries, batched by length (right-padded
        forwards of at most ``batch_tokens`` padded tokens): one ``[T_i, L, Hq, D]`` each, in
        order. A padded batch may round the last bits differently from a lone forward."""
        if any(not ids for ids in queries):
            raise InvalidInputError("cannot encode an empty query")
        out: list[torch.Tensor | None] = [None] * len(queries)
        name = "hidden" if self.router else "q"
        model, adapter = self._query_model()
        for batch in length_batches([len(q) for q in queries], self.batch_tokens):
            taps = self._forward([queries[i] for i in batch], (name,), adapter=adapter,
                                 model=model)
            for row, i in enumerate(batch):
                out[i] = self._query_row(taps, row, slice(0, len(queries[i])))
        return out  # type: ignore[return-value]

    def _query_row(self, taps: dict, row: int, span: slice) -> torch.Tensor:
        """Routing queries ``[T, L, Hq, D]`` of the tokens ``span`` of batch ``row`` of a
        forward's taps: router-Q of the ``hidden`` taps, or the model's own ``q`` taps."""
        if self.router is None:
            return torch.stack([taps["q"][layer][row, span] for layer in self.layers],
                               1).float()
        return torch.stack([self.router[layer].q(taps["hidden"][layer][row, span])
                            for layer in self.layers], 1)

    @torch.inference_mode()
    def queries_and_summaries(self, queries: Sequence[Sequence[int]],
                              summaries: Sequence[Sequence[int]], layer: int
                              ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """:meth:`query_vectors_many` of ``queries`` and :meth:`last_states` of ``summaries``
        at ``layer``, from shared forwards: the texts of both kinds packed end to end (no
        padding), the query adapter on the query tokens only. A short forward costs far less
        for two texts end to end than two forwards do (1.38-1.59x against 1.97x a recall
        without the summary channel on a 2-core CPU: docs/routing.md, "One forward for the
        question's two readings"). Where queries run on a merged copy (``query_dtype``) the weights
        differ, and the two run apart."""
        model, adapter = self._query_model()
        if model is not self.lm.model or not queries or not summaries:
            return (self.query_vectors_many(queries) if queries else [],
                    self.last_states(summaries, layer) if summaries
                    else torch.empty(0, self.shape.hidden))
        if any(len(t) == 0 for t in [*queries, *summaries]):
            raise InvalidInputError("cannot encode an empty query")
        texts, n_q = [*queries, *summaries], len(queries)
        names = ("hidden",) if self.router is not None else ("q", "hidden")
        tap = sorted({*self.layers, layer})
        found: list[torch.Tensor | None] = [None] * n_q
        states = torch.empty(len(summaries), self.shape.hidden)
        for pack in packs([len(t) for t in texts], PACK_TOKENS):
            adapted = torch.tensor([[float(i < n_q) for i in pack for _ in texts[i]]],
                                   device=self.lm.device)
            # a text alone (one past PACK_TOKENS) needs no mask of its own: [N, N] would be
            # 64 MiB at 4k tokens
            taps = self._forward([texts[i] for i in pack], names, tap, adapter, rows=adapted,
                                 packed=len(pack) > 1)
            start = 0
            for i in pack:
                span = slice(start, start + len(texts[i]))
                if i < n_q:
                    found[i] = self._query_row(taps, 0, span)
                else:
                    states[i - n_q] = taps["hidden"][layer][0, span.stop - 1].float().cpu()
                start = span.stop
        return found, torch.nn.functional.normalize(states, dim=-1)  # type: ignore[return-value]

    @torch.inference_mode()
    def last_states(self, texts: Sequence[Sequence[int]], layer: int) -> torch.Tensor:
        """Unit attention inputs ``[N, hidden]`` fp32 (on the CPU) of ``layer`` at each
        text's last token: its summary vector when the text is wrapped in the summary
        template (``text.summary_ids``). Base weights, no adapter; each forward stops after
        ``layer``; batched by length as :meth:`encode`."""
        if any(len(t) == 0 for t in texts):
            raise InvalidInputError("cannot encode an empty text")
        out = torch.empty(len(texts), self.shape.hidden)
        for batch in length_batches([len(t) for t in texts], self.batch_tokens):
            taps = self._forward([texts[i] for i in batch], ("hidden",), [layer])
            h = taps["hidden"][layer]  # [B, Tmax, hidden]
            last = torch.tensor([len(texts[i]) - 1 for i in batch], device=h.device)
            out[batch] = h[torch.arange(len(batch), device=h.device), last].float().cpu()
        return torch.nn.functional.normalize(out, dim=-1)

    def _query_model(self) -> tuple[torch.nn.Module, QueryAdapter | None]:
        """The module routing queries are encoded with and the adapter to hook on it: the
        backbone and the router's query adapter, or (``query_dtype``) the merged copy."""
        adapter = self.router.adapter if self.router is not None else None
        if self.query_dtype is None or self.router is None:  # measured with a router only
            return self.lm.model, adapter
        # one copy for concurrent recalls; made under the model's lock, so that no other
        # forward's hooks (taps, stop, adapter) are on the module while it is copied: a
        # deepcopy would copy them too, and the copy's forwards would fill that one's taps
        with self._copy_lock:
            if self._query_copy is None or self._query_copy[0] is not self.router:
                self._query_copy = None  # the old copy's memory first
                with model_lock(self.lm.model):
                    made = merged_copy(self.lm.model, adapter, self.query_dtype)
                self._query_copy = (self.router, made)
            return self._query_copy[1], None

    @torch.inference_mode()
    def hidden_states(self, docs: Sequence[Sequence[int]], pooled: bool) -> list[torch.Tensor]:
        """Attention-input hidden states of the MSA layers, per text (for router training).

        ``pooled=False``: ``[T, L, hidden]`` per token (queries). ``pooled=True``: chunk means
        ``[C, L, hidden]`` (documents); since ``router_k_proj`` is linear and bias-free, the
        projection of a chunk mean equals the chunk mean of the projections the encoder stores.
        """
        out: list[torch.Tensor | None] = [None] * len(docs)
        for batch in length_batches([len(d) for d in docs], self.batch_tokens):
            lengths = [len(docs[i]) for i in batch]
            h = self.hidden_batch([docs[i] for i in batch])
            rows = (batch_chunk_mean(h, lengths, self.chunk_size) if pooled
                    else [h[row, :n] for row, n in enumerate(lengths)])  # [T|C, L, hidden] each
            for i, x in zip(batch, rows):
                out[i] = x.cpu()
        return out  # type: ignore[return-value]

    def hidden_batch(self, docs: Sequence[Sequence[int]], adapter: QueryAdapter | None = None
                     ) -> torch.Tensor:
        """Attention inputs of the MSA layers, ``[B, Tmax, L, hidden]`` fp32 (right-padded),
        with ``adapter`` applied if given. Not in inference mode: gradients reach ``adapter``
        when the caller's mode allows (router training)."""
        taps = self._forward(docs, ("hidden",), adapter=adapter)
        return torch.stack([taps["hidden"][layer] for layer in self.layers], 2).float()

    @torch.no_grad()
    def stream_entering(self, docs: Sequence[Sequence[int]], layer: int
                        ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """The residual stream ``[B, Tmax, hidden]`` entering decoder ``layer`` (right-padded
        batch) and the attention inputs ``[B, Tmax, hidden]`` of the MSA layers at or below
        it, of the base forward (no adapter), which stops there."""
        low = [i for i in self.layers if i <= layer]
        model = self.lm.model
        with model_lock(model), layer_input(model, layer) as entering:
            taps = self._forward(docs, ("hidden",), sorted({*low, layer}))
        return entering["hidden"], {i: taps["hidden"][i] for i in low}

    def hidden_above(self, docs: Sequence[Sequence[int]], adapter: QueryAdapter, layer: int,
                     stream: torch.Tensor) -> torch.Tensor:
        """Attention inputs ``[B, Tmax, L_above, hidden]`` fp32 of the MSA layers above
        ``layer`` with ``adapter`` applied, resumed at ``layer`` from ``stream`` (what
        :meth:`stream_entering` gave for these documents); a whole forward where this model
        cannot resume. Not in inference mode: gradients reach ``adapter``."""
        above = [i for i in self.layers if i > layer]
        try:
            taps = self._forward(docs, ("hidden",), above, adapter, resume=(layer, stream))
        except ResumeUnsupported:
            taps = self._forward(docs, ("hidden",), above, adapter)
        return torch.stack([taps["hidden"][i] for i in above], 2).float()

    def _forward(self, docs: Sequence[Sequence[int]], names: tuple[str, ...],
                 tap: Sequence[int] | None = None, adapter: QueryAdapter | None = None,
                 resume: tuple[int, torch.Tensor] | None = None,
                 model: torch.nn.Module | None = None, rows: torch.Tensor | None = None,
                 packed: bool = False) -> dict:
        """Right-padded batch (or one packed row); positions 0..len-1 per document
        (document-local, as the paper).
        ``tap``: the layers to tap (default: the MSA layers, and the full layers for K/V).
        ``adapter``: LoRA added for this forward only (routing queries, or a router's
        document adapter for documents' routing keys). ``resume``: (layer, the stream entering
        it from an earlier forward of these documents): compute only that layer and up.

        Holds :func:`model_lock` while its hooks are on the (shared) model: another thread's
        forward would otherwise fill these taps or stop on this stop hook. ``model``: another
        module of the backbone's architecture to run instead (the queries' merged copy).
        ``rows``: the 0/1 mask of the rows ``[B]`` (or tokens ``[B, T]``) the adapter applies
        to (None: all). ``packed``: the documents end to end in one row
        (:func:`packed_inputs`), their taps ``[1, sum of lengths, ...]``."""
        model = self.lm.model if model is None else model
        extra: dict[str, torch.Tensor] = {}
        if packed:
            dtype = next(model.parameters()).dtype
            ids, mask, extra["position_ids"] = packed_inputs(docs, dtype)
        else:
            ids, mask = padded_inputs(docs)
        device = self.lm.device
        inner = model.get_decoder() if hasattr(model, "get_decoder") else model.model
        tapped = sorted(tap) if tap is not None else sorted(
            set(self.layers) | (set(self.full_layers) if "k" in names else set()))
        with (model_lock(model), tap_layers(model, tapped, names) as taps,
              stop_after(model, max(tapped), inputs_only=names == ("hidden",)),
              adapter.applied(model, rows) if adapter is not None else nullcontext(),
              resume_at(model, *resume) if resume is not None else nullcontext()):
            try:
                inner(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False,
                      **{k: v.to(device) for k, v in extra.items()})
            except StopForward:
                pass
        assert len(decoder_layers(model)) > max(tapped)
        return taps

    def _pool(self, taps: dict, lengths: Sequence[int], framed: dict | None = None
              ) -> list[EncodedDoc]:
        """The documents of one forward (row ``b`` holds ``lengths[b]`` tokens), pooled for the
        whole batch at once: a loop over documents and layers with a host copy each cost most
        of an encode on a GPU (docs/scale.md, GPU ingest)."""
        t = max(lengths)
        k = torch.stack([taps["k"][i][:, :t] for i in self.layers], 2)  # [B, T, L, Hkv, D]
        v = torch.stack([taps["v"][i][:, :t] for i in self.layers], 2)
        p = self.chunk_size
        pooled = [batch_chunk_mean(x, lengths, p)
                  for x in (self._route_src(taps, k, t), self._rotated(k), v.float())]
        if self.router is not None and self.router.keys_from_pooled:
            pooled[0] = [self._keys_of_means(h) for h in pooled[0]]
        host = [[y.cpu() for y in ys] for ys in pooled]  # one copy per array and document
        return [EncodedDoc(n_tokens=n, route_k=host[0][row], pooled_k=host[1][row],
                           pooled_v=host[2][row], full_k=full[0], full_v=full[1])
                for row, (n, full) in enumerate(zip(lengths, self._full(taps, lengths, framed)))]

    def _route_src(self, taps: dict, k: torch.Tensor, t: int) -> torch.Tensor:
        """What is chunk-pooled into routing keys, ``[B, T, L, ...]`` fp32: the model's own K
        (no router), the router's per-token keys (linear), or the hidden states themselves
        (a router with a key MLP keys the chunk means; :meth:`_keys_of_means`)."""
        if self.router is None:
            return k.float()
        h = [taps["hidden"][i][:, :t] for i in self.layers]
        if self.router.keys_from_pooled:
            return torch.stack(h, 2).float()
        return torch.stack([self.router[i].k(x) for i, x in zip(self.layers, h)], 2).float()

    def _keys_of_means(self, means: torch.Tensor) -> torch.Tensor:
        """Routing keys ``[C, L, Hkv, D]`` of chunk-mean hidden states ``[C, L, hidden]``."""
        assert self.router is not None
        return torch.stack([self.router[i].k(means[:, j]) for j, i in enumerate(self.layers)],
                           1).float()

    def _full(self, taps: dict, lengths: Sequence[int], framed: dict | None
              ) -> list[tuple[torch.Tensor | None, torch.Tensor | None]]:
        """Per-token K/V of the full layers, per document (``keep_full_kv``), else None."""
        if not self.keep_full_kv:
            return [(None, None)] * len(lengths)
        src = framed if framed is not None else taps
        return [tuple(torch.stack([src[x][i][row, :n] for i in self.full_layers], 1).float()
                      .cpu() for x in ("k", "v"))  # type: ignore[misc]
                for row, n in enumerate(lengths)]

    def _rotated(self, k: torch.Tensor) -> torch.Tensor:
        """``k`` ``[B, T, L, Hkv, D]`` rotated at positions 0..T-1 of every row (RoPE is per
        position, so each document's tokens get their document-local rotation)."""
        b, t = k.shape[:2]
        pos = [torch.arange(t, device=k.device).repeat(b)]
        model = self.lm.model
        rotated = [rotate_memory(model, [k[:, :, j].reshape(b * t, *k.shape[3:]).float()], pos,
                                 layer)[0].transpose(0, 1).reshape(b, t, *k.shape[3:])
                   for j, layer in enumerate(self.layers)]  # L x [B, T, Hkv, D]
        return torch.stack(rotated, 2)
