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

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from msa_agent.errors import InvalidInputError
from msa_agent.model.attention import rotate_memory
from msa_agent.model.capture import (
    StopForward,
    decoder_layers,
    model_lock,
    stop_after,
    tap_layers,
)
from msa_agent.model.loader import LoadedModel
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

    @property
    def n_chunks(self) -> int:
        return self.route_k.shape[0]


def chunk_mean(x: torch.Tensor, n: int, size: int) -> torch.Tensor:
    """Mean-pool the first ``n`` rows of ``x`` ``[T, ...]`` per ``size`` rows -> ``[C, ...]``."""
    c = -(-n // size)
    padded = x.new_zeros((c * size, *x.shape[1:]))
    padded[:n] = x[:n]
    sums = padded.view(c, size, *x.shape[1:]).sum(1)
    counts = torch.full((c,), float(size), dtype=x.dtype, device=x.device)
    counts[-1] = n - (c - 1) * size
    return sums / counts.view(c, *([1] * (x.dim() - 1)))


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
    ) -> None:
        """``kv_frame``: token ids the full K/V are encoded after (a chat frame; empty = the
        document alone). Routing keys and pooled K/V always come from the document alone."""
        self.lm, self.layers, self.chunk_size = lm, layers, chunk_size
        self.shape = ModelShape.of(lm.model)
        self.router, self.keep_full_kv, self.batch_tokens = router, keep_full_kv, batch_tokens
        # layers whose per-token K/V are kept (keep_full_kv): the MSA layers unless given
        self.full_layers = list(full_layers) if full_layers is not None else list(layers)
        self.kv_frame = list(kv_frame)
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
            taps = self._forward([docs[i] for i in batch], ("hidden", "k", "v"),
                                 self.layers if framed else None)
            full = self._framed_full([docs[i] for i in batch]) if framed else None
            for row, i in enumerate(batch):
                out[i] = self._pool(taps, row, len(docs[i]), full)
        return out  # type: ignore[return-value]

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
        if not ids:
            raise InvalidInputError("cannot encode an empty query")
        taps = self._forward([ids], ("hidden",) if self.router else ("q",))
        if self.router is None:
            return torch.stack([taps["q"][i][0] for i in self.layers], 1).float()
        return torch.stack([self.router[i].q(taps["hidden"][i][0]) for i in self.layers], 1)

    @torch.inference_mode()
    def hidden_states(self, docs: Sequence[Sequence[int]], pooled: bool) -> list[torch.Tensor]:
        """Attention-input hidden states of the MSA layers, per text (for router training).

        ``pooled=False``: ``[T, L, hidden]`` per token (queries). ``pooled=True``: chunk means
        ``[C, L, hidden]`` (documents); since ``router_k_proj`` is linear and bias-free, the
        projection of a chunk mean equals the chunk mean of the projections the encoder stores.
        """
        out: list[torch.Tensor | None] = [None] * len(docs)
        for batch in length_batches([len(d) for d in docs], self.batch_tokens):
            taps = self._forward([docs[i] for i in batch], ("hidden",))
            for row, i in enumerate(batch):
                n = len(docs[i])
                h = torch.stack([taps["hidden"][layer][row, :n] for layer in self.layers], 1)
                out[i] = (chunk_mean(h.float(), n, self.chunk_size) if pooled else h.float()).cpu()
        return out  # type: ignore[return-value]

    def _forward(self, docs: Sequence[Sequence[int]], names: tuple[str, ...],
                 tap: Sequence[int] | None = None) -> dict:
        """Right-padded batch; positions 0..len-1 per document (document-local, as the paper).
        ``tap``: the layers to tap (default: the MSA layers, and the full layers for K/V).

        Holds :func:`model_lock` while its hooks are on the (shared) model: another thread's
        forward would otherwise fill these taps or stop on this stop hook."""
        model = self.lm.model
        longest = max(len(d) for d in docs)
        ids = torch.zeros((len(docs), longest), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, d in enumerate(docs):
            ids[row, : len(d)] = torch.as_tensor(list(d))
            mask[row, : len(d)] = 1
        device = self.lm.device
        inner = model.get_decoder() if hasattr(model, "get_decoder") else model.model
        tapped = sorted(tap) if tap is not None else sorted(
            set(self.layers) | (set(self.full_layers) if "k" in names else set()))
        with (model_lock(model), tap_layers(model, tapped, names) as taps,
              stop_after(model, max(tapped))):
            try:
                inner(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
            except StopForward:
                pass
        assert len(decoder_layers(model)) > max(tapped)
        return taps

    def _pool(self, taps: dict, row: int, n: int, framed: dict | None = None) -> EncodedDoc:
        k = torch.stack([taps["k"][i][row, :n] for i in self.layers], 1)  # [T, L, Hkv, D]
        v = torch.stack([taps["v"][i][row, :n] for i in self.layers], 1)
        if self.router is None:
            rk = k
        else:
            rk = torch.stack([self.router[i].k(taps["hidden"][i][row, :n]) for i in self.layers], 1)
        p = self.chunk_size
        full = (None, None)
        if self.keep_full_kv:
            src = framed if framed is not None else taps
            full = tuple(torch.stack([src[x][i][row, :n] for i in self.full_layers], 1).float()
                         .cpu() for x in ("k", "v"))
        return EncodedDoc(
            n_tokens=n,
            route_k=chunk_mean(rk.float(), n, p).cpu(),
            pooled_k=self._rope_pool(k, n).cpu(),
            pooled_v=chunk_mean(v.float(), n, p).cpu(),
            full_k=full[0],
            full_v=full[1],
        )

    def _rope_pool(self, k: torch.Tensor, n: int) -> torch.Tensor:
        """Chunk means of ``k`` ``[T, L, Hkv, D]`` rotated at 0..n-1: ``[C, L, Hkv, D]``."""
        pos = [torch.arange(n, device=k.device)]
        model = self.lm.model
        rotated = [rotate_memory(model, [k[:n, j].float()], pos, layer)[0].transpose(0, 1)
                   for j, layer in enumerate(self.layers)]  # L x [n, Hkv, D]
        return chunk_mean(torch.stack(rotated, 1), n, self.chunk_size)
